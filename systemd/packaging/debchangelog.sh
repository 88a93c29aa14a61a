#!/bin/sh
# debchangelog.sh CHANGELOG.md VERSION
#
# Prints the Debian changelog of the lifeline packages (gzipped by `make deb`
# into /usr/share/doc/PKG/changelog.gz: the packages are native, so lintian
# wants that name, not changelog.Debian.gz), made from CHANGELOG.md:
# - VERSION is a released section (`## X.Y.Z - YYYY-MM-DD`): that release and
#   every older one, each dated by its heading;
# - anything else (a development build, 0.0.0+abc1234): one entry for VERSION,
#   dated SOURCE_DATE_EPOCH, with the `## Unreleased` items.
# `### Group` headings become "  * Group:" with the items below as "    - ".
# Output depends only on the arguments, CHANGELOG.md and SOURCE_DATE_EPOCH.
set -eu

[ $# -eq 2 ] || { echo "usage: $0 CHANGELOG.md VERSION" >&2; exit 2; }
changelog=$1 version=$2
[ -f "$changelog" ] || { echo "$0: $changelog not found" >&2; exit 2; }

release=0
if LC_ALL=C awk -v v="$version" '$1 == "##" && $2 == v && $3 == "-" { found = 1 } END { exit !found }' "$changelog"; then
	release=1
fi
LC_ALL=C awk -v version="$version" -v release="$release" -v epoch="${SOURCE_DATE_EPOCH:-0}" '
function rfc2822(d, cmd, out) {
	cmd = "date -u -R -d " d
	cmd | getline out
	close(cmd)
	return out
}
# wrap prints text at most 78 columns wide: first line after lead, the
# rest after indent.
function wrap(text, lead, indent, n, i, words, line) {
	n = split(text, words, " ")
	line = lead
	for (i = 1; i <= n; i++) {
		if (line != lead && line != indent && length(line) + 1 + length(words[i]) > 78) {
			print line
			line = indent
		}
		line = (line == lead || line == indent) ? line words[i] : line " " words[i]
	}
	if (line != lead && line != indent) print line
}
function flush_item() {
	if (item == "") return
	if (group != "") wrap(item, "    - ", "      ")
	else wrap(item, "  * ", "    ")
	item = ""
}
function begin_group(name) {
	flush_item()
	group = name
	if (emitting) { wrap(name ":", "  * ", "    ") ; body = 1 }
}
function end_entry() {
	flush_item()
	if (!open_entry) return
	if (!body) print "  * No changes listed."
	print ""
	print " -- lifeline developers <lifeline-dev@users.noreply.github.com>  " date
	open_entry = 0
}
function start_entry(v, d) {
	end_entry()
	if (entries++) print ""
	print "lifeline (" v ") unstable; urgency=medium"
	print ""
	date = d; open_entry = 1; body = 0; group = ""
}
/^## / {
	flush_item()
	group = ""
	if ($0 ~ /^## [Uu]nreleased[[:space:]]*$/) {
		emitting = 0
		if (!release) {
			emitting = 1
			start_entry(version, rfc2822("@" epoch))
			print "  * Development build, not a release."
			body = 1
		}
		next
	}
	if (match($0, /^## [0-9][^ ]* - [0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]/)) {
		split($0, f, " ")
		if (f[2] == version) release = 1
		emitting = release
		if (emitting) start_entry(f[2], rfc2822(f[4]))
		next
	}
	emitting = 0
	next
}
!emitting { next }
/^### / { sub(/^### +/, ""); begin_group($0); next }
/^- / { flush_item(); sub(/^- +/, ""); item = $0; body = 1; next }
/^[[:space:]]+[^[:space:]]/ { if (item != "") { sub(/^[[:space:]]+/, ""); item = item " " $0 }; next }
/^[[:space:]]*$/ { flush_item(); next }
END {
	end_entry()
	if (!entries) exit 3
}
' "$changelog" || {
	echo "$0: $changelog has neither a section for $version nor an Unreleased one" >&2
	exit 1
}
