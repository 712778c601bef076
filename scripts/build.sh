#!/usr/bin/env bash
# Builds the product's release binaries:
# - static (glibc static-pie) into target/x86_64-unknown-linux-gnu/release/:
#   zone-guest, the zone-bench probe, the vsock-probe (both ends of the
#   vsock end-to-end test) and the SPIRE plugins (zone-attestor-agent runs
#   inside zones, zone-attestor-server next to spire-server) — zones have no
#   libraries;
# - dynamic into target/release/: hypervisor-agent and zonectl, which link
#   Debian's libtss2 (shipped only as shared libraries).
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
need cargo "rustup (https://rustup.rs)"
need gcc build-essential

cd "$ZONE_ROOT"
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked --target "$ZONE_TARGET" -p zone-guest -p zone-tests -p spire-plugin --no-default-features --bins >&2
for b in zone-guest zone-bench vsock-probe zone-attestor-agent zone-attestor-server; do
  file -L "$ZONE_BIN_DIR/$b" | grep -q 'static' || die "$ZONE_BIN_DIR/$b is not statically linked"
done
cargo build --release --locked -p hypervisor-agent --bins >&2
for b in zonectl hypervisor-agent; do
  [ -x "$ZONE_HOST_BIN_DIR/$b" ] || die "$ZONE_HOST_BIN_DIR/$b was not built"
done
# The stub guest of the VMM tests, for the benchmark (assembled by tests/build.rs).
stub="$(find "$ZONE_ROOT/target/$ZONE_TARGET/release/build" -path '*/zone-tests-*/out/stub.elf' -printf '%T@ %p\n' \
  | sort -rn | head -n 1 | cut -d' ' -f2-)"
[ -f "$stub" ] || die "the stub guest was not assembled (tests/build.rs)"
cp "$stub" "$ZONE_BIN_DIR/stub.elf"
echo "$ZONE_BIN_DIR"
