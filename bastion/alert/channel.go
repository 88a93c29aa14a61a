package alert

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// channel is one Channel at work: its outbox (its own spool folder,
// pending list and overflow counts) and its send loop's state. Nothing a
// channel holds is shared with another channel.
type channel struct {
	a         *Alerter
	name      string
	sender    Sender
	perMinute int
	box       outbox   // alerts kept until this channel delivered them (outbox.go)
	out       delivery // the send loop's own state (deliver.go)
}

var channelName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// checkChannels reports every problem of chans: a missing Sender, a bad or
// repeated name.
func checkChannels(chans []Channel) []error {
	var errs []error
	seen := map[string]bool{}
	for i, ch := range chans {
		if ch.Sender == nil {
			errs = append(errs, fmt.Errorf("alert channel %d: no sender", i+1))
			continue
		}
		name := ch.Name
		if name == "" {
			name = ch.Sender.Name()
		}
		switch {
		case !channelName.MatchString(name) || name == failedSubdir:
			errs = append(errs, fmt.Errorf("alert channel %q: a name is 1 to 32 lowercase letters, digits and '-', and not %q", name, failedSubdir))
		case seen[name]:
			errs = append(errs, fmt.Errorf("alert channel %q: configured twice", name))
		}
		seen[name] = true
		if ch.PerMinute < 0 {
			errs = append(errs, fmt.Errorf("alert channel %q: per minute %d is negative", name, ch.PerMinute))
		}
	}
	return errs
}

// openChannels creates Dir/alerts and every channel's folder in it, moves
// what a release before channels left in Dir/alerts into the channels
// (migrateLegacy), and loads each channel's outbox. A folder of a channel
// that is no longer configured is left as it is, with a warning.
func (a *Alerter) openChannels() error {
	root := filepath.Join(a.cfg.Dir, "alerts")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("create alert spool %s: %w", root, err)
	}
	if err := os.Chmod(root, 0o700); err != nil {
		return fmt.Errorf("alert spool %s: %w", root, err)
	}
	spools := make([]*spool, len(a.cfg.Channels))
	for i, ch := range a.cfg.Channels {
		sp, err := makeSpool(filepath.Join(root, ch.Name))
		if err != nil {
			return err
		}
		spools[i] = sp
	}
	moved, bad := migrateLegacy(root, spools)
	for _, err := range bad {
		a.cfg.Log.Error("alert spool: moving the alerts of the previous release into the channels", "err", err)
	}
	if moved > 0 {
		a.cfg.Log.Info("alert spool: alerts of the previous release moved into every channel", "count", moved, "channels", len(spools))
	}
	for i, ch := range a.cfg.Channels {
		c := &channel{a: a, name: ch.Name, sender: ch.Sender, perMinute: ch.PerMinute}
		if err := c.box.open(spools[i], a.cfg, ch.Name); err != nil {
			return err
		}
		a.chans = append(a.chans, c)
	}
	a.warnOrphans(root)
	return nil
}

// warnOrphans logs the folders of channels no longer configured that still
// hold alerts: nobody delivers those.
func (a *Alerter) warnOrphans(root string) {
	des, err := os.ReadDir(root)
	if err != nil {
		return
	}
	configured := map[string]bool{failedSubdir: true}
	for _, ch := range a.cfg.Channels {
		configured[ch.Name] = true
	}
	for _, de := range des {
		if !de.IsDir() || configured[de.Name()] {
			continue
		}
		dir := filepath.Join(root, de.Name())
		files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
		if len(files) > 0 {
			a.cfg.Log.Warn("alert spool: a channel that is no longer configured left undelivered alerts; configure it again to deliver them, or delete the folder",
				"channel", de.Name(), "count", len(files), "dir", dir)
		}
	}
}

// status is the channel's part of Status.
func (c *channel) status() ChannelStatus {
	st := c.box.status()
	st.Name, st.PerMinute = c.name, c.perMinute
	return st
}

// channelNames names chans for an audit event.
func channelNames(chans []*channel) string {
	names := make([]string, len(chans))
	for i, c := range chans {
		names[i] = c.name
	}
	return strings.Join(names, ", ")
}
