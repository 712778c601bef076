//! The host channel's frame decoder, at the daemon's end: zone bytes fed in
//! chunks of at most `wanted()` (as the daemon reads them). It never wants
//! more than one frame, and what it returns re-encodes within the limit.
#![no_main]

use attestation_proto::channel::{self, Decoder, MAX_MESSAGE};
use attestation_proto::guest::GuestMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, mut rest)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let mut d = Decoder::new();
    while !rest.is_empty() {
        let wanted = d.wanted();
        assert!((1..=MAX_MESSAGE + 4).contains(&wanted));
        let n = wanted.min(chunk).min(rest.len());
        let (now, later) = rest.split_at(n);
        rest = later;
        match d.push::<GuestMessage>(now) {
            Ok(Some(m)) => {
                let frame = channel::encode(&m).expect("a decoded message fits a frame");
                let mut again = Decoder::new();
                assert_eq!(again.push::<GuestMessage>(&frame), Ok(Some(m)));
            }
            Ok(None) => {}
            Err(_) => return, // the daemon drops the connection
        }
    }
});
