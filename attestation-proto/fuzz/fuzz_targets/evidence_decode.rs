//! Evidence decoding: any bytes either fail with an error or decode to a
//! message whose encoding decodes to the same message (re-encoding is
//! idempotent; the input itself need not be canonical protobuf).
#![no_main]

use attestation_proto::evidence;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(ev) = evidence::decode(data) else { return };
    let bytes = evidence::encode(&ev);
    assert!(bytes.len() <= data.len(), "re-encoding never grows (unknown fields and duplicates are dropped)");
    let again = evidence::decode(&bytes).expect("an encoding decodes");
    assert_eq!(again, ev);
    assert_eq!(evidence::encode(&again), bytes);
});
