package main

import "net"

// hostPort combines the bastion's public name with the port it listens on,
// for the known_hosts line (OpenSSH writes [host]:port for ports other than 22).
func hostPort(name, listen string) string {
	_, port, err := net.SplitHostPort(listen)
	if err != nil || port == "" {
		port = "2222"
	}
	return net.JoinHostPort(name, port)
}
