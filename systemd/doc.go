// Package systemd holds no code: this directory carries lifeline's systemd
// units, env templates and Debian packaging (packaging/mkdeb.sh, used by
// `make deb`). Its tests verify the units with systemd-analyze, measure their
// sandbox exposure, and build and inspect a package with dpkg-deb.
package systemd
