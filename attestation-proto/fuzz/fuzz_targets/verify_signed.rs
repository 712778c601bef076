//! The verifier past its signature check: the fuzz input describes evidence
//! (launch record, other zones' events, PCRs, batch, quote fields, tweaks;
//! see `attestation_proto_fuzz::Scenario`) that a fixed software AK pinned in
//! the trust signs, so every check after `signature` runs on fuzzed data.
//!
//! Oracles besides "never panics": genuine evidence must verify (with the
//! record, PCR, event count and batch size it was built with), evidence
//! known to be forged (a stop of the launch, another nonce, a PCR value or
//! quote field that is not the signed one, an event the verifier cannot
//! read, ...) must be rejected, and anything accepted satisfies
//! `check_verified`.
#![no_main]

use attestation_proto::launch::{LaunchRecord, MAX_RECORD_LEN};
use attestation_proto::verify;
use attestation_proto_fuzz::{Expect, Scenario, check_verified};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: Scenario| {
    // Generated records are canonical: they decode to themselves.
    let record = s.record.record();
    let bytes = record.encode();
    if bytes.len() <= MAX_RECORD_LEN {
        assert_eq!(LaunchRecord::decode(&bytes), Ok(record));
    }

    let b = s.build();
    let result = verify::verify(&b.evidence, &b.nonce, &b.trust, &b.policy);
    match (&b.expect, &result) {
        (Expect::Verify, Err(r)) => panic!("genuine evidence rejected: {r}"),
        (Expect::Verify, Ok(v)) => {
            assert_eq!(v.record, b.record);
            assert_eq!(v.zone_pcr, b.zone_pcr);
            assert_eq!(v.events, b.events);
            assert_eq!(v.batch_size, b.batch_size);
            assert_eq!(v.reset_count, b.reset_count);
        }
        (Expect::Reject(why), Ok(v)) => panic!("forged evidence accepted ({why}): {v:?}"),
        _ => {}
    }
    match &result {
        Ok(v) => check_verified(v, &b.evidence, &b.trust, &b.policy),
        Err(r) => assert!(!r.detail.is_empty(), "a rejection says why"),
    }
});
