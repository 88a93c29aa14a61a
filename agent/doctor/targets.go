package doctor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/lifeline-dev/lifeline/agent/forward"
)

// isLocal reports whether a target is on the Pi itself.
func isLocal(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// localFirst orders the forwards so the Pi's own (its sshd first of all)
// come before the LAN's: when the Pi cannot be reached, nothing else can.
func localFirst(fs []forward.Forward) []forward.Forward {
	out := slices.Clone(fs)
	rank := func(f forward.Forward) int {
		switch {
		case isPiSSH(f):
			return 0
		case isLocal(f.TargetHost):
			return 1
		default:
			return 2
		}
	}
	slices.SortStableFunc(out, func(a, b forward.Forward) int { return rank(a) - rank(b) })
	return out
}

// isPiSSH reports whether f leads to the Pi's own sshd: a local target on
// port 22, or a local target of an SSH name (pi:22).
func isPiSSH(f forward.Forward) bool {
	return isLocal(f.TargetHost) && (f.TargetPort == 22 || f.Port == 22)
}

// sshBannerWait bounds reading an sshd's version line.
const sshBannerWait = 2 * time.Second

// checkTarget dials a forward's target as the agent does for each
// operator connection.
func (d *Doctor) checkTarget(ctx context.Context, f forward.Forward) Result {
	what := fmt.Sprintf("target of %s: %s", f.Listen(), f.Target())
	c, err := d.cfg.TargetDialer.DialContext(ctx, "tcp", f.Target())
	if err == nil {
		defer c.Close()
		if f.TargetPort != 22 && f.Port != 22 {
			return Passed(what + " answers")
		}
		// An sshd says its version first: show it, so a wrong port shows.
		dl := time.Now().Add(sshBannerWait)
		if cd, ok := ctx.Deadline(); ok && cd.Before(dl) {
			dl = cd
		}
		c.SetReadDeadline(dl)
		line, _ := bufio.NewReaderSize(c, 256).ReadString('\n')
		if v := clean(line, 80); strings.HasPrefix(v, "SSH-") {
			return Passed(what + " answers: " + v)
		}
		return Passed(what + " answers (no SSH version line seen: is it an SSH server?)")
	}
	local := isLocal(f.TargetHost)
	var de *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED) && isPiSSH(f):
		return Failed(what, "refused: the Pi's own SSH server is not running, and operators log in to it through the tunnel",
			"sudo systemctl enable --now ssh (with the operators' public keys in ~/.ssh/authorized_keys of the account they log in to)")
	case errors.Is(err, syscall.ECONNREFUSED) && local:
		return Failed(what, fmt.Sprintf("refused: nothing listens on port %d of this Pi", f.TargetPort),
			"start the service that should listen there, or correct LIFELINE_FORWARDS")
	case errors.Is(err, syscall.ECONNREFUSED):
		return Failed(what, fmt.Sprintf("refused: %s answers, but nothing listens on port %d", f.TargetHost, f.TargetPort),
			fmt.Sprintf("start the service on %s, or correct the port in LIFELINE_FORWARDS", f.TargetHost))
	case errors.As(err, &de):
		return Failed(what, fmt.Sprintf("%s does not resolve: %v", f.TargetHost, err),
			"give the device's address in LIFELINE_FORWARDS, or a name this Pi resolves")
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return Failed(what, fmt.Sprintf("no route to %s: %v", f.TargetHost, err),
			"is this Pi on that network (ip addr), and is the address in LIFELINE_FORWARDS right?")
	case ctx.Err() != nil || isTimeout(err):
		return Failed(what, fmt.Sprintf("no answer within %s", d.cfg.StepTimeout),
			fmt.Sprintf("is %s switched on and on this Pi's network (ping %s)? Is the address in LIFELINE_FORWARDS right?", f.TargetHost, f.TargetHost))
	default:
		return Failed(what, err.Error(), "check the target in LIFELINE_FORWARDS")
	}
}
