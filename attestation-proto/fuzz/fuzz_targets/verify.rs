//! The verifier on raw bytes: the first byte (mod 65) is the nonce's length,
//! the nonce follows, the rest is evidence. It must never panic and must
//! return a named rejection for whatever it does not accept. The trust and
//! the policy are fixed (the seed corpus holds genuine evidence for them, so
//! mutations start from something that passes).
#![no_main]

use std::sync::OnceLock;

use attestation_proto::policy::Policy;
use attestation_proto::verify::{self, Trust};
use attestation_proto_fuzz::{check_verified, fixed_policy, trust};
use libfuzzer_sys::fuzz_target;

fn fixed() -> &'static (Trust, Policy) {
    static FIXED: OnceLock<(Trust, Policy)> = OnceLock::new();
    FIXED.get_or_init(|| (trust(), fixed_policy()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&len, rest)) = data.split_first() else { return };
    let len = usize::from(len % 65).min(rest.len());
    let (nonce, evidence) = rest.split_at(len);
    let (trust, policy) = fixed();
    match verify::verify(evidence, nonce, trust, policy) {
        Ok(v) => check_verified(&v, evidence, trust, policy),
        Err(r) => assert!(!r.detail.is_empty(), "a rejection says why"),
    }
});
