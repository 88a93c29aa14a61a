#!/usr/bin/env bash
# Makes sure the programs the tests run are here. As root with apt-get it
# installs what is missing; otherwise it names what is missing and the one
# command that would install it. The unit tests that need a missing program
# skip with a message; the integration suite needs root anyway.
set -u
need=(sshd:openssh-server ssh:openssh-client ssh-keygen:openssh-client autossh:autossh ssh-audit:ssh-audit
      nft:nftables iptables:iptables ip:iproute2 tc:iproute2 conntrack:conntrack tcpdump:tcpdump
      shellcheck:shellcheck aws:awscli python3:python3
      dbclient:dropbear-bin dropbearconvert:dropbear-bin plink:putty-tools puttygen:putty-tools
      qemu-arm-static:qemu-user-static qemu-aarch64-static:qemu-user-static
      debootstrap:debootstrap systemd-nspawn:systemd-container lintian:lintian help2man:help2man
      dnsmasq:dnsmasq-base)
# cloud-init for the offline `cloud-init schema` test: unpacked into a
# folder, never installed (an installed cloud-init would enable its units).
ci_root=/var/tmp/lifeline-cloud-init
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && ! [ -x "$ci_root/usr/bin/cloud-init" ]; then
  "$(dirname "$0")/../terraform/testdata/unpack-cloud-init.sh" "$ci_root" >/dev/null 2>&1 ||
    echo "could not unpack cloud-init into $ci_root: TestCloudInitSchema will skip"
fi
missing=()
for pair in "${need[@]}"; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ]; then
    missing+=("$pkg")
  fi
done
# Python modules of the client interop suite and the e-mail channel test
# (aiosmtpd: a real SMTP server), from Debian's packages (the
# suite runs /usr/bin/python3, which sees them).
for mod in paramiko asyncssh aiosmtpd; do
  if ! /usr/bin/python3 -c "import $mod" >/dev/null 2>&1; then
    missing+=("python3-$mod")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing test dependencies: $pkgs"
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086 # $pkgs is a list of package names
  if ! { apt-get update -qq && apt-get install -y -qq $pkgs >/dev/null; }; then
    echo "apt-get install $pkgs failed"; exit 1
  fi
  exit 0
fi
echo "missing programs for the tests (tests that need them will skip): $pkgs"
echo "install them with: sudo apt-get install -y $pkgs"
exit 0
