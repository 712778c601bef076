#!/usr/bin/env bash
# Installs everything the zone attestor needs on a fresh Debian 12 machine and
# builds it: Debian packages, the static Rust binaries, the zone kernel
# (cached by config hash), the zone images, the test host and its payload.
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

packages=(
  build-essential pkg-config file cpio xz-utils util-linux python3 shellcheck
  flex bison bc libelf-dev libssl-dev linux-source          # zone kernel
  qemu-system-x86 qemu-utils                                # test host, reference VMM
  swtpm swtpm-tools tpm2-tools libtss2-dev                  # TPM
  busybox-static protobuf-compiler openssl
  cryptsetup-bin umoci squashfs-tools                       # image roots: veritysetup, umoci and unsquashfs as reference peers
  docker-registry skopeo                                    # a loopback registry for the image pull test
  nftables iproute2                                         # the zone network policy (the daemon runs nft); test networks; tc
  containernetworking-plugins                               # CNI mode's plugins (the test host's CNI networks)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  log "setup: installing ${missing[*]}"
  "${sudo[@]}" apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${missing[@]}" >&2
fi
need cargo "rustup (https://rustup.rs): the Rust toolchain"
mkdir -p "$ZONE_CACHE_DIR" 2>/dev/null || die "cannot create $ZONE_CACHE_DIR: run as root or set ZONE_CACHE_DIR to a writable directory"

log "setup: building the static binaries"
"$ZONE_ROOT/scripts/build.sh" >/dev/null
log "setup: zone kernel (cached by config hash; a fresh build takes ~7 minutes on 2 cores)"
"$ZONE_ROOT/scripts/kernel/build.sh" >/dev/null
log "setup: test host (cached)"
"$ZONE_ROOT/scripts/testhost/build.sh" >/dev/null
log "setup: zone images and the test-host payload"
"$ZONE_ROOT/scripts/testhost/payload.sh" >/dev/null
log "setup: done"
