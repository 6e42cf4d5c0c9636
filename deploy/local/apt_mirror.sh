#!/usr/bin/env bash
# Prints the Debian mirror the host's apt uses for bookworm, from one-line sources
# (`sources.list`, `sources.list.d/*.list`) or deb822 stanzas (`sources.list.d/*.sources`).
# usage: apt_mirror.sh [APT_ETC_DIR]   (default /etc/apt; tests point it at a fixture)
set -euo pipefail
etc="${1:-/etc/apt}"
suite="${AF_DEBIAN_SUITE:-bookworm}"

one_line() {
  local files=()
  [ -f "$etc/sources.list" ] && files+=("$etc/sources.list")
  for f in "$etc"/sources.list.d/*.list; do [ -f "$f" ] && files+=("$f"); done
  [ ${#files[@]} -gt 0 ] || return 0
  awk -v suite="$suite" '$1=="deb" { i=2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                          if ($(i+1)==suite) { print $i; exit } }' "${files[@]}"
}

deb822() {
  local files=()
  for f in "$etc"/sources.list.d/*.sources; do [ -f "$f" ] && files+=("$f"); done
  [ ${#files[@]} -gt 0 ] || return 0
  # stanzas are separated by blank lines; print the first URI of a deb stanza listing the suite
  awk -v suite="$suite" '
    function flush() { if (types ~ /(^| )deb( |$)/ && has && uri != "") { print uri; found=1; exit } types=""; uri=""; has=0 }
    /^[ \t]*$/ { flush(); next }
    /^[ \t]*#/ { next }
    tolower($1)=="types:" { types=""; for (i=2;i<=NF;i++) types=types" "$i; types=types" " }
    tolower($1)=="uris:" { uri=$2 }
    tolower($1)=="suites:" { for (i=2;i<=NF;i++) if ($i==suite) has=1 }
    END { if (!found) flush() }' "${files[@]}"
}

mirror="$(one_line)"
[ -n "$mirror" ] || mirror="$(deb822)"
[ -n "$mirror" ] || { echo "no deb source for $suite in $etc (sources.list, *.list or *.sources)" >&2; exit 1; }
echo "$mirror"
