#!/usr/bin/env bash
# Builds every zone image (images/*.toml) into $ZONE_CACHE_DIR/images/ with the
# static zone-guest from scripts/build.sh, and prints "<name> <path> sha256:<hex>".
# The spire-agent image also takes spire-agent from scripts/spire/install.sh
# (cached) and the static zone-attestor-agent and svid-tls.
# Images are cheap to build (well under a second) and byte-for-byte
# reproducible, so they are always rebuilt from the current inputs.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
[ -x /bin/busybox ] || die "/bin/busybox is missing: apt-get install busybox-static"
for b in zone-guest vsock-probe zone-attestor-agent svid-tls; do
  [ -x "$ZONE_BIN_DIR/$b" ] || die "no static $b: run scripts/build.sh first"
done
[ -x "$ZONE_BIN_DIR/zonectl" ] || die "no zonectl: run scripts/build.sh first"

spire="$("$ZONE_ROOT/scripts/spire/install.sh")"
spire_ca="$("$ZONE_ROOT/scripts/spire/ca.sh")"
out="$ZONE_CACHE_DIR/images"
mkdir -p "$out"
for recipe in "$ZONE_ROOT"/images/*.toml; do
  name="$(basename "$recipe" .toml)"
  "$ZONE_BIN_DIR/zonectl" image build "$recipe" -O "$out/$name.cpio" \
    --input "zone-guest=$ZONE_BIN_DIR/zone-guest" --input busybox=/bin/busybox \
    --input "vsock-probe=$ZONE_BIN_DIR/vsock-probe" \
    --input "spire-agent=$spire/spire-agent" --input "zone-attestor-agent=$ZONE_BIN_DIR/zone-attestor-agent" \
    --input "svid-tls=$ZONE_BIN_DIR/svid-tls" --input "spire-bundle=$spire_ca/ca.pem" -o json \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["name"], d["path"], "sha256:"+d["sha256"])'
done
