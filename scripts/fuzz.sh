#!/usr/bin/env bash
# Fuzzes with cargo-fuzz (libFuzzer):
# - attestation-proto/fuzz/: the evidence codec, the event-log parser, the TPM
#   structure parsers, the policy file, the host channel's framing and the
#   verifier;
# - hypervisor-agent/zone-vmm/fuzz/: the VMM's guest-facing devices, the
#   virtio-mmio register window, the vsock device's rings, the virtio-blk
#   request queue and the virtio-net queues (net_queues needs root and
#   /dev/net/tun: it moves frames through a real TAP).
# Every target, or the ones named, runs for FUZZ_SECONDS (default 60) under
# AddressSanitizer with a memory bound: -rss_limit_mb=512, and
# -malloc_limit_mb=64, so one allocation over 64 MiB fails the run, as does
# a single input taking over 20 s. Exits non-zero if any target failed; the
# input that did it is in <fuzz dir>/artifacts/<target>/
# (replay: cargo fuzz run <target> <file> in that directory).
#
# Seeds are <fuzz dir>/corpus/<target>/ (tracked; attestation-proto's are
# written by `cargo run --example gen_seeds` in its fuzz directory); what a
# run finds goes to <fuzz dir>/target/fuzz-corpus/<target>/ (ignored), so the
# next run starts from there.
#
# Installs cargo-fuzz from crates.io if it is missing. Builds with the stable
# toolchain and RUSTC_BOOTSTRAP=1 (cargo-fuzz passes the nightly-only
# -Zsanitizer=address); FUZZ_SANITIZER=none builds without ASan (the malloc
# limit then does not apply).
# Usage: scripts/fuzz.sh [TARGET...]
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

CARGO_FUZZ_VERSION="0.13.2"
seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-address}"
fuzz_dirs=("$ZONE_ROOT/attestation-proto/fuzz" "$ZONE_ROOT/hypervisor-agent/zone-vmm/fuzz")
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "FUZZ_SECONDS must be a whole number of seconds, not '$seconds'"

export RUSTUP_TOOLCHAIN="${RUSTUP_TOOLCHAIN:-stable}"
export RUSTC_BOOTSTRAP=1
# The P-256 and SHA-2 crates are built without coverage instrumentation
# (see the wrapper); their own target dir keeps those builds apart.
export RUSTC_WRAPPER="$ZONE_ROOT/scripts/lib/fuzz-rustc-wrapper.sh"

if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  log "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

# Every target, with the directory it lives in.
declare -A dir_of=()
all=()
for d in "${fuzz_dirs[@]}"; do
  while read -r t; do
    [ -n "$t" ] || continue
    dir_of[$t]="$d"
    all+=("$t")
  done < <(cd "$d" && cargo fuzz list)
done
[ "${#all[@]}" -gt 0 ] || die "cargo fuzz list found no targets in ${fuzz_dirs[*]}"
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [ -n "${dir_of[$t]:-}" ] || die "no fuzz target '$t' (targets: ${all[*]})"
done

failed=()
summary=()
for fuzz in "${fuzz_dirs[@]}"; do
  mine=()
  for t in "${targets[@]}"; do
    [ "${dir_of[$t]}" = "$fuzz" ] && mine+=("$t")
  done
  [ "${#mine[@]}" -gt 0 ] || continue
  cd "$fuzz"
  build=(-O --sanitizer "$sanitizer" --target-dir "$fuzz/target/script")
  log "fuzz: building ${#mine[@]} target(s) in ${fuzz#"$ZONE_ROOT"/} (sanitizer: $sanitizer)"
  cargo fuzz build "${build[@]}"
  logs="$fuzz/target/fuzz-logs"
  mkdir -p "$logs"
  for t in "${mine[@]}"; do
    corpus="$fuzz/target/fuzz-corpus/$t"
    mkdir -p "$corpus" "$fuzz/corpus/$t"
    log "fuzz: $t for ${seconds}s"
    status=0
    # The grown corpus comes first: libFuzzer writes new inputs to the first directory.
    cargo fuzz run "${build[@]}" "$t" "$corpus" "$fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=512 -malloc_limit_mb=64 -timeout=20 -print_final_stats=1 \
      >"$logs/$t.log" 2>&1 || status=$?
    done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$logs/$t.log" | tail -n 1 || true)"
    if [ "$status" -ne 0 ]; then
      tail -n 40 "$logs/$t.log" >&2
      failed+=("$t")
      summary+=("$t: FAILED (exit $status; log $logs/$t.log, inputs in $fuzz/artifacts/$t/)")
    else
      summary+=("$t: ${done_line:-done}")
    fi
  done
done

log "fuzz: summary (${seconds}s per target)"
printf '  %s\n' "${summary[@]}" >&2
[ "${#failed[@]}" -eq 0 ] || die "fuzz target(s) failed: ${failed[*]}"
log "fuzz: no crash, panic, leak, oversized allocation or timeout in ${#targets[@]} target(s)"
