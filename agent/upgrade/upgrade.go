// Package upgrade notices that a package upgrade replaced the agent's own
// executable and says when the agent should restart into it: once no
// operator connection has been open through the agent for a quiet period.
// An operator who runs `apt install ./lifeline-agent…deb` over
// `ssh -J bastion pi` is inside one of the agent's channels, so the package
// restarts nothing and leaves the timing to the agent.
//
// dpkg writes the new file beside the old one and renames it over the old
// path, so the path then names another inode. The watcher remembers the
// identity (device, inode, size, modification time) of the file that runs
// and polls the path on an injected clock.
package upgrade

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/lifeline-dev/lifeline/shared/clock"
)

// Config configures New. Zero durations take the defaults noted.
type Config struct {
	// Path is the executable to watch, as resolved when the program
	// started (see Executable). Required.
	Path string
	// Running is the identity of the file the program runs from. nil means
	// Path as it is when New is called.
	Running os.FileInfo
	// Activity reports the operator connections open now and when the
	// latest one closed, on Clock (zero if none has); (*tunnel.Tunnels).
	// Activity implements it. Required: without it nothing could say that
	// no operator would be cut off.
	Activity func() (open int, lastClosed time.Time)
	// Every is how often Path is looked at (30s).
	Every time.Duration
	// Quiet is how long no connection may have been open before a restart
	// is due (1m). It is counted from the latest close and from when the
	// new file was noticed, so the package manager has this long to finish
	// (daemon-reload) even when nobody is connected.
	Quiet time.Duration
	// Clock drives the polling. nil means clock.Real.
	Clock clock.Clock
	// Log receives what the watcher notices. nil discards.
	Log *slog.Logger
}

// Watcher watches one executable. Create it with New and call Wait.
type Watcher struct {
	cfg  Config
	name string
}

// New checks cfg, fills in defaults and returns a Watcher.
func New(cfg Config) (*Watcher, error) {
	var errs []error
	if cfg.Path == "" {
		errs = append(errs, errors.New("no executable path given"))
	}
	if cfg.Activity == nil {
		errs = append(errs, errors.New("no activity source given"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("upgrade watcher config: %w", err)
	}
	if cfg.Running == nil {
		fi, err := os.Stat(cfg.Path)
		if err != nil {
			return nil, fmt.Errorf("upgrade watcher: %w", err)
		}
		cfg.Running = fi
	}
	if cfg.Every <= 0 {
		cfg.Every = 30 * time.Second
	}
	if cfg.Quiet <= 0 {
		cfg.Quiet = time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Watcher{cfg: cfg, name: filepath.Base(cfg.Path)}, nil
}

// Executable returns the path the running program was started from and the
// identity of the file it runs. The identity is read through /proc/self/exe
// where there is one, so a file replaced between exec and this call still
// counts as replaced; elsewhere it is the path's.
func Executable() (string, os.FileInfo, error) {
	path, err := os.Executable()
	if err != nil {
		return "", nil, fmt.Errorf("find the running executable: %w", err)
	}
	fi, err := os.Stat("/proc/self/exe")
	if err != nil {
		if fi, err = os.Stat(path); err != nil {
			return "", nil, fmt.Errorf("stat the running executable: %w", err)
		}
	}
	return path, fi, nil
}

// same reports whether a and b are the same file, unmodified.
func same(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// Wait looks at Path every Every until it holds a file other than the one
// running and no connection has been open for Quiet, then returns nil: the
// caller must then stop the program cleanly so that its supervisor starts
// the new file. It returns ctx.Err() when ctx ends first, at once.
//
// A path that is gone (the package was removed) or cannot be read is
// logged once and never leads to a restart: the program keeps running, and
// Wait keeps looking in case a package is installed there again. The file
// is looked at again right before Wait returns nil, so a new file removed
// meanwhile is no reason to restart either.
func (w *Watcher) Wait(ctx context.Context) error {
	cfg := &w.cfg
	var (
		pending os.FileInfo // the new file, once noticed
		noticed time.Time   // when pending was noticed
		problem string      // the trouble with Path logged last, if any
	)
	for {
		now := cfg.Clock.Now()
		fi, err := os.Stat(cfg.Path)
		if err == nil && !fi.Mode().IsRegular() {
			err = fmt.Errorf("%s is not a regular file (%s)", cfg.Path, fi.Mode().Type())
		}
		switch {
		case err != nil:
			if p := w.describe(err); p != problem {
				problem = p
				cfg.Log.Warn(p, "path", cfg.Path, "err", err)
			}
			pending = nil
		case same(fi, cfg.Running):
			if pending != nil || problem != "" {
				cfg.Log.Info("the running "+w.name+" is back at "+cfg.Path+": no restart", "path", cfg.Path)
			}
			pending, problem = nil, ""
		case pending == nil || !same(fi, pending):
			open, _ := cfg.Activity()
			cfg.Log.Info(fmt.Sprintf("new %s installed at %s: restarting once no operator connection has been open for %s (systemctl restart %s restarts now)",
				w.name, cfg.Path, cfg.Quiet, w.name), "path", cfg.Path, "open_connections", open, "size", fi.Size(), "mtime", fi.ModTime().UTC().Format(time.RFC3339))
			pending, noticed, problem = fi, now, ""
		}
		wait := cfg.Every
		if pending != nil {
			if open, lastClosed := cfg.Activity(); open == 0 {
				from := noticed
				if lastClosed.After(from) {
					from = lastClosed
				}
				left := from.Add(cfg.Quiet).Sub(now)
				if left <= 0 {
					cfg.Log.Info(fmt.Sprintf("no operator connection for %s: stopping so that the new %s starts", cfg.Quiet, w.name), "path", cfg.Path)
					return nil
				}
				wait = min(wait, left)
			}
		}
		tm := cfg.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			tm.Stop()
			return ctx.Err()
		case <-tm.C():
		}
	}
}

// describe is the log message for a path that cannot be used.
func (w *Watcher) describe(err error) string {
	if errors.Is(err, fs.ErrNotExist) {
		return w.cfg.Path + " is gone (package removed?): not restarting; the running " + w.name + " carries on until it is stopped"
	}
	return "cannot look at " + w.cfg.Path + ": not restarting; the running " + w.name + " carries on"
}
