package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"

	"github.com/lifeline-dev/lifeline/bastion/config"
	"github.com/lifeline-dev/lifeline/bastion/doctor"
	"github.com/lifeline-dev/lifeline/shared/keyfile"
)

// hostKey prints the host key (creating it on first use) as known_hosts
// lines, one per --host, then its fingerprint as a comment. Without --host
// the line names LIFELINE_NAME, as before, and stderr says what to give.
func hostKey(cfg config.Config, hosts hostList, stdout, stderr io.Writer) int {
	port := listenPort(cfg.Listen)
	addrs := make([]string, 0, len(hosts))
	for _, h := range hosts {
		a, err := knownHostsAddr(h, port)
		if err != nil {
			fmt.Fprintf(stderr, "lifeline-bastion hostkey: %v\n", err)
			return 2
		}
		addrs = append(addrs, a)
	}
	if msg := becomeServiceUser(cfg.HostKey); msg != "" {
		fmt.Fprintln(stderr, "lifeline-bastion hostkey:", msg)
	}
	signer, created, err := keyfile.LoadOrCreate(cfg.HostKey, "lifeline-bastion")
	if err != nil {
		fmt.Fprintf(stderr, "lifeline-bastion: %v\n", err)
		return 1
	}
	if created {
		fmt.Fprintf(stderr, "created host key %s\n", cfg.HostKey)
	}
	pub := signer.PublicKey()
	if len(addrs) == 0 {
		fmt.Fprintln(stdout, keyfile.KnownHostsLine([]string{hostPort(cfg.Name, cfg.Listen)}, pub))
	}
	for _, a := range addrs {
		fmt.Fprintln(stdout, keyfile.KnownHostsLine([]string{a}, pub))
	}
	fmt.Fprintln(stdout, "# fingerprint", keyfile.Fingerprint(pub))
	if len(addrs) == 0 {
		port := listenPort(cfg.Listen)
		if port == "" {
			port = "none (LIFELINE_LISTEN has no fixed port: write NAME:PORT)"
		}
		fmt.Fprintf(stderr, `lifeline-bastion hostkey: that line is for the name %q (LIFELINE_NAME), which ssh matches only if it
is exactly what operators and agents dial. Give the public name or address they dial instead, e.g.
  lifeline-bastion hostkey --host bastion.example.org,203.0.113.10
(--host repeats; the port is %s, from LIFELINE_LISTEN, unless you write NAME:PORT). On a jump host made by the Terraform module,
--host with its public_ip output prints exactly its known_hosts_line output.
`, cfg.Name, port)
	}
	return 0
}

// becomeServiceUser makes a hostkey run as root read or create the key as
// the service user, so a key it creates is one the service can read: run
// as root between the service's first start and its first key, it would
// otherwise leave a root-owned key the bastion cannot open. The key's
// directory, when missing, is made for that user first (as systemd's
// StateDirectory= would). Without such a user (a bastion not installed
// by the package) or not as root, nothing changes. It returns what to
// tell the admin when the switch failed.
func becomeServiceUser(keyPath string) string {
	if os.Geteuid() != 0 {
		return ""
	}
	u, err := user.Lookup(doctor.ServiceUser)
	if err != nil {
		return ""
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return ""
	}
	dir := filepath.Dir(keyPath)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Sprintf("cannot make %s for the service user %s: %v", dir, doctor.ServiceUser, err)
		}
		if err := os.Chown(dir, uid, gid); err != nil {
			return fmt.Sprintf("cannot give %s to the service user %s: %v", dir, doctor.ServiceUser, err)
		}
	}
	if c, _ := doctor.BecomeUser(doctor.ServiceUser); !c.OK {
		return c.String() + " (a key made now belongs to root: chown " + doctor.ServiceUser + ": " + keyPath + " before starting the bastion)"
	}
	return ""
}
