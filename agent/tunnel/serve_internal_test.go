package tunnel

import (
	"strings"
	"testing"
)

func TestStockServerWarning(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		server, name string
		warn         bool
	}{
		{"SSH-2.0-lifeline", "pi", false},
		{"SSH-2.0-lifeline_1.2", "pi", false},
		{"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3", "pi", true},
		{"SSH-2.0-OpenSSH_9.2p1", "localhost", false},
		{"SSH-2.0-OpenSSH_9.2p1", "127.0.0.1", false},
		{"SSH-2.0-dropbear_2022.83", "nuc", true},
	} {
		w := stockServerWarning(tc.server, tc.name)
		if (w != "") != tc.warn || tc.warn && !strings.Contains(w, "GatewayPorts") {
			t.Errorf("%s, %q: warning %q, want one: %v", tc.server, tc.name, w, tc.warn)
		}
	}
}
