// Package systemd holds no code: this directory carries lifeline's systemd
// units, env templates and Debian packaging (packaging/*.yaml for nfpm, used
// by `make deb` and `make release`). Its tests verify the units with
// systemd-analyze, measure their sandbox exposure, build and inspect the
// packages with dpkg-deb and lintian, and check that releases are
// reproducible and verifiable.
package systemd
