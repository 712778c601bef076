#!/usr/bin/env bash
# Prints the path of a real System.map of the test host's kernel, fetching it
# once: Debian's linux-image package ships a one-line placeholder, the real
# map is in the matching `linux-image-<release>-dbg` package (~280 MB), of
# which only System.map is kept (in the test host cache, next to the kernel).
# Used by run.sh to name a hung vCPU's RIP (the test host boots nokaslr).
#
#   system-map.sh        prints the path, or fails (rc 1) saying why
#
# Best effort, bounded: the download is given 120 s.
set -euo pipefail

C=${ZONE_CACHE_DIR:-/var/cache/zone-attestor}/testhost
log() { printf 'testhost: %s\n' "$*" >&2; }

[[ -f $C/resolved ]] || {
	log "no $C/resolved: build the test host first (scripts/testhost/build.sh)"
	exit 1
}
read -r KPKG KVER < <(tail -n 1 "$C/resolved")
map=$C/System.map-${KPKG#linux-image-}-$KVER
if [[ -s $map ]]; then
	echo "$map"
	exit 0
fi
work=$(mktemp -d "$C/.sysmap.XXXXXX")
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && timeout -s KILL 120 apt-get download "$KPKG-dbg=$KVER") >"$work/dl.log" 2>&1; then
	log "cannot download $KPKG-dbg=$KVER (for the test host's System.map): $(tail -n 1 "$work/dl.log")"
	exit 1
fi
debs=("$work"/*.deb)
member=./usr/lib/debug/boot/System.map-${KPKG#linux-image-}
# --occurrence: tar stops at the map, which comes before the 560 MB vmlinux
# (dpkg-deb then dies of SIGPIPE, hence no status check here).
dpkg-deb --fsys-tarfile "${debs[0]}" 2>/dev/null | tar -x -C "$work" --occurrence=1 "$member" 2>/dev/null || true
[[ -s $work/$member ]] || {
	log "$member is not in ${debs[0]##*/}"
	exit 1
}
mv "$work/$member" "$map.tmp.$$"
mv "$map.tmp.$$" "$map"
echo "$map"
