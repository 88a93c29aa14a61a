package smtptest

import (
	"net/smtp"
	"strings"
	"testing"
)

func send(t *testing.T, addr, to string) error {
	t.Helper()
	return smtp.SendMail(addr, nil, "b@example.com", []string{to}, []byte("Subject: hi\r\n\r\nbody\r\n"))
}

// A stopped server started again on its port and folder goes on from what
// it received; refused recipients get 550.
func TestStopAndStartAgain(t *testing.T) {
	s := Start(t, Options{})
	if err := send(t, s.Addr(), "o@example.com"); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	s.Stop() // idempotent
	if err := send(t, s.Addr(), "o@example.com"); err == nil {
		t.Fatal("a stopped server accepted a mail")
	}
	again := Start(t, Options{Port: s.Port(), OutDir: s.OutDir()})
	if again.Addr() != s.Addr() {
		t.Fatalf("started again on %s, want %s", again.Addr(), s.Addr())
	}
	if err := send(t, again.Addr(), "p@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := send(t, again.Addr(), "refused@example.com"); err == nil || !strings.Contains(err.Error(), "550") {
		t.Errorf("refused recipient: %v, want 550", err)
	}
	msgs := again.Messages(t)
	if len(msgs) != 2 || msgs[0].RcptTos[0] != "o@example.com" || msgs[1].RcptTos[0] != "p@example.com" ||
		msgs[1].MailFrom != "b@example.com" || msgs[1].TLS || !strings.Contains(string(msgs[1].Raw), "Subject: hi") {
		t.Errorf("messages %+v", msgs)
	}
	if a := again.AuthAttempts(t); a != nil {
		t.Errorf("auth attempts %v without AUTH", a)
	}
}
