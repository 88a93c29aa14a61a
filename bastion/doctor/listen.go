package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Systemd answers about the service. The zero Doctor uses the machine's.
type Systemd interface {
	// Booted reports whether systemd manages this machine.
	Booted() bool
	// IsActive is what `systemctl is-active UNIT` prints: active,
	// inactive, failed, activating…
	IsActive(ctx context.Context, unit string) (string, error)
}

type machineSystemd struct{}

// Booted is sd_booted(3): /run/systemd/system exists, and systemctl too.
func (machineSystemd) Booted() bool {
	fi, err := os.Stat("/run/systemd/system")
	if err != nil || !fi.IsDir() {
		return false
	}
	_, err = exec.LookPath("systemctl")
	return err == nil
}

func (machineSystemd) IsActive(ctx context.Context, unit string) (string, error) {
	out, err := exec.CommandContext(ctx, "systemctl", "is-active", unit).Output()
	state := strings.TrimSpace(string(out))
	if state == "" {
		if err == nil {
			err = errors.New("no answer")
		}
		return "", fmt.Errorf("systemctl is-active %s: %w", unit, err)
	}
	return state, nil // is-active exits non-zero for every state but active
}

// ListenAddress checks that LIFELINE_LISTEN can be bound, or is held by
// the running service (systemctl is-active, under systemd only).
func (d *Doctor) ListenAddress(ctx context.Context) Check {
	addr := d.Config.Listen
	what := "listen address " + addr
	listen := d.Listen
	if listen == nil {
		listen = net.Listen
	}
	sd := d.Systemd
	if sd == nil {
		sd = machineSystemd{}
	}
	state, stateErr := "", error(nil)
	if sd.Booted() {
		sctx, cancel := context.WithTimeout(ctx, d.timeout())
		state, stateErr = sd.IsActive(sctx, Unit)
		cancel()
	}
	ln, err := listen("tcp", addr)
	// A service systemd just started is "active" a moment before it has
	// bound its address (Type=exec): give it that moment before saying it
	// listens elsewhere.
	for settle := time.Now().Add(3 * time.Second); err == nil && state == "active" && time.Now().Before(settle) && ctx.Err() == nil; {
		ln.Close()
		time.Sleep(100 * time.Millisecond)
		ln, err = listen("tcp", addr)
	}
	if err == nil {
		ln.Close()
		switch {
		case state == "active":
			return fail(what, "is free, yet "+Unit+" is active: the running bastion listens elsewhere (is the file newer than the service?) or keeps restarting",
				"systemctl restart "+Unit+" to apply the configuration; if it does not stay up, journalctl -u "+Unit+" -n 50")
		case state == "failed":
			return fail(what, "is free, and "+Unit+" has failed", "journalctl -u "+Unit+" -n 50 says why; then systemctl restart "+Unit)
		case state != "":
			return pass("listen address %s: free; %s is %s (systemctl enable --now %s starts it)", addr, Unit, state, Unit)
		case stateErr != nil:
			return pass("listen address %s: free (%v)", addr, stateErr)
		}
		return pass("listen address %s: free", addr)
	}
	_, port, _ := net.SplitHostPort(addr)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		switch {
		case state == "active":
			return pass("listen address %s: held by the running %s (systemctl is-active: active)", addr, Unit)
		case state != "":
			return fail(what, fmt.Sprintf("is in use by another program, and %s is %s", Unit, state),
				fmt.Sprintf("find it with ss -ltnp 'sport = :%s' and stop it, or choose another LIFELINE_LISTEN in %s", port, d.where()))
		case stateErr != nil:
			return fail(what, fmt.Sprintf("is in use, and whether by %s is unknown: %v", Unit, stateErr),
				fmt.Sprintf("ss -ltnp 'sport = :%s' shows who holds it", port))
		}
		return pass("listen address %s: in use, not under systemd: whether by a bastion is not checked (ss -ltnp 'sport = :%s' shows who holds it)", addr, port)
	case errors.Is(err, syscall.EACCES):
		return fail(what, fmt.Sprintf("port %s needs privileges the service does not have (it runs without capabilities)", port),
			"choose a port above 1024 for LIFELINE_LISTEN in "+d.where()+" (the default is :2222)")
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fail(what, "is not an address of this machine", "write :"+port+" for every address, or one of this machine's, in "+d.where())
	}
	return fail(what, err.Error(), "correct LIFELINE_LISTEN in "+d.where())
}
