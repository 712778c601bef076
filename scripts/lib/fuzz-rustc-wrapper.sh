#!/usr/bin/env bash
# RUSTC_WRAPPER for scripts/fuzz.sh: compiles the P-256 and SHA-2 crates
# without libFuzzer's coverage instrumentation (cargo-fuzz puts it in
# RUSTFLAGS for every crate). That code is not under test and is
# constant-time, so its coverage tells the fuzzer nothing; instrumented, it
# takes half the time of each run of the signed target. AddressSanitizer
# stays on everywhere.
# Usage (by cargo): fuzz-rustc-wrapper.sh RUSTC ARGS...
set -euo pipefail

rustc="$1"
shift
crate=""
prev=""
for arg in "$@"; do
  if [ "$prev" = "--crate-name" ]; then crate="$arg"; fi
  prev="$arg"
done
case "$crate" in
  p256 | primeorder | elliptic_curve | crypto_bigint | ecdsa | subtle | sha2 | ff | group) ;;
  *) exec "$rustc" "$@" ;;
esac
args=()
for arg in "$@"; do
  case "$arg" in
    -Cpasses=sancov-module | -Cllvm-args=-sanitizer-coverage-*) ;;
    *) args+=("$arg") ;;
  esac
done
exec "$rustc" "${args[@]}"
