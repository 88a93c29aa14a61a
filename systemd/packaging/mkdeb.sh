#!/bin/bash
# mkdeb.sh PACKAGE DEB_ARCH VERSION BINARY OUTDIR
#
# Builds OUTDIR/PACKAGE_VERSION_DEB_ARCH.deb with dpkg-deb (no other tool):
# the static binary, the hardened unit(s), the env template under /etc/lifeline
# as a conffile, a sysusers.d entry for the `lifeline` user and the maintainer
# scripts. PACKAGE is lifeline-bastion or lifeline-agent. Used by `make deb`.
# lifeline-agent also holds the link check program the agent runs for each
# check, lifeline-linkcheck, taken from next to BINARY (as `make dist` and
# `make build` leave it) and installed in /usr/lib/lifeline.
# Nothing is enabled or started by the package: see the postinst scripts.
set -euo pipefail

usage() { echo "usage: $0 lifeline-bastion|lifeline-agent amd64|arm64|armhf VERSION BINARY OUTDIR" >&2; exit 2; }
[ $# -eq 5 ] || usage
pkg=$1 arch=$2 version=$3 binary=$4 outdir=$5
here=$(cd "$(dirname "$0")" && pwd)
units=$(dirname "$here")

case "$pkg" in
lifeline-bastion)
	role=bastion
	unit_files=(lifeline-bastion.service)
	libexec=()
	summary="lifeline jump host: SSH relay to sites behind carrier-grade NAT"
	long=" lifeline-bastion runs on a cloud host with a static address. Site agents
 connect out to it and register names (pi:22); operators reach them with
 stock OpenSSH (ssh -J bastion pi). Every login is texted (Twilio) and
 written to a JSON audit log. The service runs unprivileged in a tight
 systemd sandbox and is not started until /etc/lifeline is configured."
	;;
lifeline-agent)
	role=agent
	unit_files=(lifeline-agent.service lifeline-netsetup.service)
	libexec=(lifeline-linkcheck)
	summary="lifeline site agent: keeps a reverse SSH tunnel to the jump host"
	long=" lifeline-agent runs at a site behind carrier-grade NAT (a Raspberry Pi
 on a cellular or satellite backup link). It keeps an outbound SSH tunnel to
 the lifeline jump host so operators can reach the site, checks the backup
 link (ISP, speed, latency), and with lifeline-netsetup does the Pi's router
 duties (forwarding, NAT, MSS clamping). Nothing is started until
 /etc/lifeline is configured."
	;;
*) usage ;;
esac
case "$arch" in amd64 | arm64 | armhf) ;; *) usage ;; esac
if ! [[ "$version" =~ ^[0-9][A-Za-z0-9.+~]*$ ]]; then
	echo "$0: version '$version' is not a Debian version (digits first; letters, digits, . + ~)" >&2
	exit 2
fi
[ -f "$binary" ] || { echo "$0: binary $binary not found" >&2; exit 2; }
for p in "${libexec[@]}"; do
	[ -f "$(dirname "$binary")/$p" ] || { echo "$0: $pkg needs $p next to $binary: $(dirname "$binary")/$p not found" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"

install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/systemd/system" \
	"$root/usr/lib/sysusers.d" "$root/usr/share/doc/$pkg" "$root/etc/lifeline"
install -m 0755 "$binary" "$root/usr/bin/$pkg"
for p in "${libexec[@]}"; do
	install -d -m 0755 "$root/usr/lib/lifeline"
	install -m 0755 "$(dirname "$binary")/$p" "$root/usr/lib/lifeline/$p"
done
for u in "${unit_files[@]}"; do
	install -m 0644 "$units/$u" "$root/usr/lib/systemd/system/$u"
done
install -m 0644 "$units/lifeline.sysusers" "$root/usr/lib/sysusers.d/$pkg.conf"
# Secrets may go in here (Twilio token): root only. systemd reads it as root.
install -m 0600 "$units/$role.env" "$root/etc/lifeline/$role.env"
install -m 0644 "$units/README.md" "$root/usr/share/doc/$pkg/README.md"
for s in postinst prerm postrm; do
	install -m 0755 "$here/$pkg/$s" "$root/DEBIAN/$s"
done
echo "/etc/lifeline/$role.env" >"$root/DEBIAN/conffiles"

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: $pkg
Version: $version
Architecture: $arch
Maintainer: lifeline developers <lifeline-dev@users.noreply.github.com>
Installed-Size: $size
Depends: systemd
Section: net
Priority: optional
Homepage: https://github.com/lifeline-dev/lifeline
Description: $summary
$long
CONTROL

mkdir -p "$outdir"
out="$outdir/${pkg}_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "$out"
