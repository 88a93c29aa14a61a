package main

import (
	"fmt"
	"io"

	"github.com/lifeline-dev/lifeline/bastion/config"
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
