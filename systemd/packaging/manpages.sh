#!/bin/sh
# manpages.sh BINDIR OUTDIR
#
# Writes OUTDIR/lifeline-agent.1.gz, lifeline-bastion.1.gz,
# lifeline-linkcheck.8.gz and lifeline-jumpstart.8.gz (the agent's helpers
# in /usr/lib/lifeline) with
# Debian's help2man, from the --help and --version of the programs in BINDIR,
# which must run on this machine (`make deb` passes its build for this
# machine; every architecture's package gets the same pages). help2man reads
# "VARIABLE DEFAULT MEANING" tables and "usage:" blocks poorly, so each --help
# is first rewritten into the indented "item  text" lists it turns into
# tagged paragraphs. Reproducible: help2man dates the page by SOURCE_DATE_EPOCH and
# gzip -n stores no name or time.
set -eu

[ $# -eq 2 ] || { echo "usage: $0 BINDIR OUTDIR" >&2; exit 2; }
bindir=$1 outdir=$2
command -v help2man >/dev/null 2>&1 || {
	echo "$0: help2man not found (sudo apt-get install help2man)" >&2
	exit 2
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# helptext PROGRAM: its --help, with the usage block and the environment
# table as help2man lists, and the usage forms (one per line) in
# $work/PROGRAM.synopsis.
helptext() {
	"$bindir/$1" --help | LC_ALL=C.UTF-8 awk -v synopsis="$work/$1.synopsis" '
	function form(s) { sub(/  .*/, "", s); print s > synopsis }
	# "usage: prog a   text" and its 7-space continuation lines.
	/^usage: / {
		print "Usage:"
		sub(/^usage: /, "")
		form($0); print "  " $0
		usage = 1
		next
	}
	usage && /^       / {
		s = substr($0, 8)
		if (s !~ /^ /) form(s)
		print "  " s
		next
	}
	{ usage = 0 }
	# "  prog pair [--line]   text" under "Usage:" (the agent writes its own).
	/^Usage:$/ { inusage = 1; print; next }
	inusage && /^  [^ ]/ { form(substr($0, 3)); print; next }
	inusage && /^ *$/ { inusage = 0 }
	# The VARIABLE DEFAULT MEANING table (Go text/tabwriter columns).
	/^VARIABLE +DEFAULT +MEANING/ {
		d = index($0, "DEFAULT"); m = index($0, "MEANING")
		if (prev != "Environment:") { print ""; print "Environment:" }
		table = 1
		next
	}
	table && /^ *$/ { table = 0 }
	table {
		v = substr($0, 1, d - 1); def = substr($0, d, m - d); text = substr($0, m)
		gsub(/^ +| +$/, "", v); gsub(/^ +| +$/, "", def); gsub(/^ +| +$/, "", text)
		if (def != "") text = text " (default: " def ")"
		print "  " v "  " text
		next
	}
	{ print; prev = $0 }
	'
}

# page PROGRAM SECTION NAME: the gzipped page of PROGRAM in OUTDIR.
page() {
	prog=$1 section=$2 name=$3
	helptext "$prog" >"$work/$prog.help"
	[ -s "$work/$prog.synopsis" ] || { echo "$0: $prog --help has no usage forms" >&2; exit 1; }
	"$bindir/$prog" --version >"$work/$prog.version"
	# help2man runs this stand-in for the program: the rewritten help, the
	# real version line.
	mkdir -p "$work/bin"
	cat >"$work/bin/$prog" <<-STUB
		#!/bin/sh
		case "\$1" in
		--help) cat '$work/$prog.help' ;;
		--version) cat '$work/$prog.version' ;;
		*) exit 2 ;;
		esac
	STUB
	chmod 0755 "$work/bin/$prog"
	{
		echo "[SYNOPSIS]"
		echo ".nf"
		sed -e 's/\\/\\e/g' -e 's/-/\\-/g' -e 's/^/.B /' "$work/$prog.synopsis"
		echo ".fi"
		echo "[SEE ALSO]"
		case "$prog" in
		lifeline-agent) printf '%s\n' '.BR lifeline\-linkcheck (8), lifeline\-jumpstart (8), ssh (1), systemctl (1)' ;;
		lifeline-linkcheck | lifeline-jumpstart) printf '%s\n' '.BR lifeline\-agent (1)' ;;
		lifeline-bastion) printf '%s\n' '.BR ssh (1), ssh\-keygen (1), systemctl (1)' ;;
		esac
		echo ".PP"
		pkg=$prog
		case "$prog" in lifeline-linkcheck | lifeline-jumpstart) pkg=lifeline-agent ;; esac
		echo "/usr/share/doc/$pkg/README.md"
		echo ".br"
		printf '%s\n' '\%https://github.com/lifeline\-dev/lifeline'
	} >"$work/$prog.h2m"
	LC_ALL=C.UTF-8 help2man --locale=C.UTF-8 --no-info --section="$section" --name="$name" \
		--include="$work/$prog.h2m" --output="$work/$prog.$section" "$work/bin/$prog"
	mkdir -p "$outdir"
	gzip -9n <"$work/$prog.$section" >"$outdir/$prog.$section.gz"
}

page lifeline-agent 1 "keep reverse SSH tunnels from a site to its lifeline jump hosts"
page lifeline-bastion 1 "SSH jump host for sites behind carrier-grade NAT"
page lifeline-linkcheck 8 "measure the backup link once, for lifeline-agent"
page lifeline-jumpstart 8 "start the stopped AWS jump host once, for lifeline-agent's outage mode"
