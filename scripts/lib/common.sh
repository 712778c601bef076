# Shared helpers for the scripts in scripts/ (sourced, not run).
# shellcheck shell=bash

# Repository root.
ZONE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Cache for expensive artifacts (kernels, images, the test host), shared by every clone.
ZONE_CACHE_DIR="${ZONE_CACHE_DIR:-/var/cache/zone-attestor}"
# The only Rust target on these machines; static binaries are built for it explicitly
# so that build scripts and proc-macros stay dynamic (crt-static breaks them).
ZONE_TARGET="x86_64-unknown-linux-gnu"
# Where the static release binaries land (zone-vmm, zonectl, zone-guest, the
# SPIRE plugins and the probes that run in zones).
ZONE_BIN_DIR="$ZONE_ROOT/target/$ZONE_TARGET/release"
# Where the daemon lands (hypervisor-agent): dynamically linked, because
# Debian ships libtss2 (the TPM stack) only as shared libraries.
ZONE_HOST_BIN_DIR="$ZONE_ROOT/target/release"
export ZONE_ROOT ZONE_CACHE_DIR ZONE_TARGET ZONE_BIN_DIR ZONE_HOST_BIN_DIR

log() { printf '%s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# need CMD PACKAGE: fail with the apt package to install when CMD is missing.
need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed: run scripts/setup.sh (or apt-get install $2)"
}
