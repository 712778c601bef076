#!/usr/bin/env bash
# Builds the product's release binaries:
# - static (glibc static-pie) into target/x86_64-unknown-linux-gnu/release/:
#   zone-vmm (the jailed per-zone VMM: after pivot_root it can load no
#   library), zonectl, zone-guest, the zone-bench and vsock-probe probes (both
#   ends of the vsock end-to-end test), svid-tls (mutual TLS between SPIRE
#   zones' workloads) and the SPIRE plugins
#   (zone-attestor-agent runs inside zones, zone-attestor-server next to
#   spire-server) — zones have no libraries;
# - dynamic into target/release/: hypervisor-agent, which links Debian's
#   libtss2 (shipped only as shared libraries);
# - the test builds of the daemon and the VMM, with their test hooks (fault
#   injection, pause after measurement, jail probes): zone-vmm-under-test
#   (static) and hypervisor-agent-under-test (dynamic). Release binaries never
#   contain the hooks: each set is its own cargo invocation, so features do
#   not unify across them.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
need cargo "rustup (https://rustup.rs)"
need gcc build-essential

cd "$ZONE_ROOT"
static=(env RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" cargo build --release --locked --target "$ZONE_TARGET")
"${static[@]}" -p zone-vmm -p zonectl -p zone-guest -p zone-tests -p spire-plugin --no-default-features --bins >&2
"${static[@]}" -p zone-tests --no-default-features --features vmm-under-test --bin zone-vmm-under-test >&2
for b in zone-vmm zonectl zone-guest zone-bench vsock-probe svid-tls zone-attestor-agent zone-attestor-server zone-vmm-under-test; do
  file -L "$ZONE_BIN_DIR/$b" | grep -q 'static' || die "$ZONE_BIN_DIR/$b is not statically linked"
done
cargo build --release --locked -p hypervisor-agent --bins >&2
cargo build --release --locked -p zone-tests --bin hypervisor-agent-under-test >&2
for b in hypervisor-agent hypervisor-agent-under-test; do
  [ -x "$ZONE_HOST_BIN_DIR/$b" ] || die "$ZONE_HOST_BIN_DIR/$b was not built"
done
# The stub guest of the VMM tests, for the benchmark (assembled by tests/build.rs).
stub="$(find "$ZONE_ROOT/target/$ZONE_TARGET/release/build" -path '*/zone-tests-*/out/stub.elf' -printf '%T@ %p\n' \
  | sort -rn | head -n 1 | cut -d' ' -f2-)"
[ -f "$stub" ] || die "the stub guest was not assembled (tests/build.rs)"
cp "$stub" "$ZONE_BIN_DIR/stub.elf"
echo "$ZONE_BIN_DIR"
