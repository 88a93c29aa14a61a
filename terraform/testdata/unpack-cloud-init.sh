#!/bin/bash
# unpack-cloud-init.sh DIR: puts Debian's cloud-init into DIR for the offline
# `cloud-init schema` test (TestCloudInitSchema), without installing it: an
# installed cloud-init would enable its units on this machine. Its Python
# dependencies are plain libraries (.ci/run installs them). Then:
#   LIFELINE_CLOUD_INIT_ROOT=DIR go test ./terraform/
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
dir=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download cloud-init >/dev/null)
mkdir -p "$dir"
dpkg-deb -x "$work"/cloud-init_*.deb "$dir"
echo "$dir/usr/bin/cloud-init"
