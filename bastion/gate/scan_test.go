package gate

import (
	"bytes"
	"errors"
	"testing"
)

// TestHelloScan follows hellos through the byte counter in every chunking
// x/crypto may read them in (one byte at a time for the version, bufio
// chunks after it): done exactly when the first packet's last byte is in.
func TestHelloScan(t *testing.T) {
	t.Parallel()
	packet := []byte{0, 0, 0, 6, 4, 20, 1, 2, 3, 4} // length 6: padding length, payload, padding
	for _, tc := range []struct {
		name    string
		hello   []byte // complete exactly at its last byte, unless wantErr
		wantErr error
	}{
		{"crlf version", cat("SSH-2.0-OpenSSH_9.9\r\n", packet), nil},
		{"lf version", cat("SSH-2.0-x\n", packet), nil},
		{"lines before", cat("hello\r\nSSH is great\r\nSSH\r\n\r\n-SSH-2.0\r\nSSH-2.0-x\r\n", packet), nil},
		{"exactly the preamble cap", cat(string(junkExactly(MaxPreamble))+"SSH-2.0-x\r\n", packet), nil},
		{"one byte over the cap", cat(string(junkExactly(MaxPreamble+1)) + "SSH-2.0-x\r\n"), ErrPreamble},
		{"an endless line", bytes.Repeat([]byte("a"), MaxPreamble+maxVersionLine+1), ErrPreamble},
		{"zero-length packet", cat("SSH-2.0-x\r\n", []byte{0, 0, 0, 0}), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, chunk := range []int{1, 2, 3, 7, 4096} {
				c := newHelloConn(nil, t0, 1, 2)
				var err error
				for i := 0; i < len(tc.hello) && err == nil; i += chunk {
					if c.done {
						t.Fatalf("chunk %d: done after %d of %d bytes", chunk, i, len(tc.hello))
					}
					err = c.scan(tc.hello[i:min(i+chunk, len(tc.hello))])
				}
				switch {
				case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
					t.Fatalf("chunk %d: err = %v, want %v", chunk, err, tc.wantErr)
				case tc.wantErr == nil && err != nil:
					t.Fatalf("chunk %d: %v", chunk, err)
				case tc.wantErr == nil && !c.done:
					t.Fatalf("chunk %d: not done after the whole hello", chunk)
				}
			}
		})
	}
}

func cat(s string, b ...[]byte) []byte {
	out := []byte(s)
	for _, x := range b {
		out = append(out, x...)
	}
	return out
}

// junkExactly returns n bytes of lines, the last ending in '\n'.
func junkExactly(n int) []byte {
	b := bytes.Repeat([]byte("x"), n)
	for i := 63; i < n; i += 64 {
		b[i] = '\n'
	}
	b[n-1] = '\n'
	return b
}
