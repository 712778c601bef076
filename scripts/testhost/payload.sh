#!/usr/bin/env bash
# Assembles the test-host payload: what the tests copy into the test host's
# root. Prints the payload directory.
#
#   opt/zone/bin/{zonectl,hypervisor-agent,zone-guest,zone-bench,vsock-probe}   static binaries
#   opt/zone/kernel/vmlinux                         zone kernel (scripts/kernel/build.sh, cached)
#   opt/zone/images/{base,shell,vsock-test}.cpio    zone images (scripts/images/build.sh)
#
# The payload is rebuilt from those outputs every time (a copy; the expensive
# parts are cached by the scripts that make them).
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

for b in zonectl hypervisor-agent zone-guest zone-bench vsock-probe; do
  [ -x "$ZONE_BIN_DIR/$b" ] || die "no static $b in $ZONE_BIN_DIR: run scripts/build.sh first"
done
kernel="$("$ZONE_ROOT/scripts/kernel/build.sh" | tail -n 1)"
[ -f "$kernel" ] || die "scripts/kernel/build.sh did not produce a vmlinux"
"$ZONE_ROOT/scripts/images/build.sh" >&2

payload="${ZONE_TESTHOST_PAYLOAD:-$ZONE_CACHE_DIR/payload}"
tmp="$payload.new"
rm -rf "$tmp"
mkdir -p "$tmp/opt/zone/bin" "$tmp/opt/zone/kernel" "$tmp/opt/zone/images"
cp "$ZONE_BIN_DIR"/{zonectl,hypervisor-agent,zone-guest,zone-bench,vsock-probe} "$tmp/opt/zone/bin/"
cp "$kernel" "$tmp/opt/zone/kernel/vmlinux"
cp "$ZONE_CACHE_DIR"/images/*.cpio "$tmp/opt/zone/images/"
rm -rf "$payload"
mv "$tmp" "$payload"
echo "$payload"
