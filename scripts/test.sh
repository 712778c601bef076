#!/usr/bin/env bash
# Runs every test: unit tests, the VMM tests on this machine's /dev/kvm, and
# the end-to-end tests that boot real zones inside the test host. Sets up
# whatever is missing first (scripts/setup.sh). Tests that need KVM, QEMU or
# swtpm fail when those are missing; none is skipped.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

"$ZONE_ROOT/scripts/setup.sh"
cd "$ZONE_ROOT"

log "test: shellcheck"
shellcheck -x scripts/*.sh scripts/bench-boot scripts/bench-runtime scripts/bench-image scripts/bench-image-zone scripts/bench-net scripts/*/*.sh
log "test: cargo test (unit, machine KVM, test host)"
# One test at a time: the test-host tests each run a QEMU TCG VM using both cores.
cargo test --workspace --locked -- --test-threads=1
log "test: the fuzz scenarios' own tests (genuine evidence verifies; each forgery, checkpoint fault and hidden own event is rejected by its check)"
cargo test --manifest-path attestation-proto/fuzz/Cargo.toml --locked --lib
