//! Event-log parsing: `parse` and the torn-tail `scan` agree, the events
//! re-encode to exactly the bytes they were read from (the event codec is
//! canonical; the Spec ID header is not, so it is checked on its own), and
//! every zone event's payload goes through the launch/stop record decoders,
//! which accept only their canonical encoding.
#![no_main]

use attestation_proto::eventlog::{self, Event, Limits, TAG_ZONE_LAUNCH, TAG_ZONE_STOP, ZoneEvent};
use attestation_proto::launch::{CheckpointRecord, LaunchRecord, StopRecord};
use libfuzzer_sys::fuzz_target;

fn records(e: &Event) {
    // Records are canonical: whatever decodes re-encodes to the same bytes.
    match e.zone_event() {
        Some(z @ (ZoneEvent::Launch { launch_tag, record } | ZoneEvent::Stop { launch_tag, record })) => {
            let (tag, ok) = match z {
                ZoneEvent::Launch { .. } => (TAG_ZONE_LAUNCH, LaunchRecord::decode(record).map(|r| (r.encode(), r.launch_id)).ok()),
                _ => (TAG_ZONE_STOP, StopRecord::decode(record).map(|r| (r.encode(), r.launch_id)).ok()),
            };
            if let Some((bytes, launch_id)) = ok {
                assert_eq!(bytes, record);
                if eventlog::launch_tag(&launch_id) == launch_tag {
                    assert_eq!(Event::zone(e.pcr, tag, &launch_id, record).data, e.data);
                }
            }
            // Redaction keeps the digest and says whose event it was.
            let r = e.redacted();
            assert_eq!(r.digest, e.digest);
            let Some(ZoneEvent::Redacted { tag: t, launch_tag: lt, .. }) = r.zone_event() else { panic!("a redacted event reads back") };
            assert_eq!((t, lt), (tag, launch_tag));
            assert_eq!(r.digest_matches_data(), e.digest_matches_data());
        }
        Some(ZoneEvent::Checkpoint { record }) => {
            if let Ok(r) = CheckpointRecord::decode(record) {
                assert_eq!(r.encode(), record);
                assert_eq!(Event::checkpoint(e.pcr, record).data, e.data);
            }
            assert_eq!(e.redacted(), *e, "checkpoints are never redacted");
        }
        Some(ZoneEvent::Redacted { .. }) => assert_eq!(e.redacted().data, e.data),
        None => {}
    }
    // The decoders on the raw data as well (not a record, but must not panic).
    let _ = LaunchRecord::decode(&e.data);
    let _ = StopRecord::decode(&e.data);
    let _ = CheckpointRecord::decode(&e.data);
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let parsed = eventlog::parse(data, &limits);
    let Ok(scan) = eventlog::scan(data, &limits) else {
        assert!(parsed.is_err(), "a bad header fails both");
        return;
    };
    assert!(scan.complete_len <= data.len());
    assert_eq!(scan.tail_error.is_none(), scan.complete_len == data.len());
    match &parsed {
        Ok(events) => assert_eq!(events, &scan.events),
        Err(e) => assert_eq!(Some(e), scan.tail_error.as_ref()),
    }
    // The well-formed prefix parses on its own to the same events.
    assert_eq!(eventlog::parse(&data[..scan.complete_len], &limits).as_ref(), Ok(&scan.events));

    // Events are canonical: they re-encode to the bytes they came from.
    let body: Vec<u8> = scan.events.iter().flat_map(Event::encode).collect();
    let header_len = scan.complete_len.checked_sub(body.len()).expect("events fit in the prefix");
    assert_eq!(&data[header_len..scan.complete_len], &body[..]);
    assert_eq!(eventlog::parse(&data[..header_len], &limits), Ok(Vec::new()));
    // Our own encoding of the events is accepted and reads back the same.
    assert_eq!(eventlog::parse(&eventlog::encode(&scan.events), &limits).as_ref(), Ok(&scan.events));

    // Tighter limits only ever cut the log shorter.
    let tight = Limits { max_events: 3, max_event_data: 64 };
    if let Ok(small) = eventlog::scan(data, &tight) {
        assert!(small.events.len() <= scan.events.len());
        assert_eq!(small.events[..], scan.events[..small.events.len()]);
    }

    for e in &scan.events {
        records(e);
        let _ = e.digest_matches_data();
    }
    for pcr in 0..24 {
        let _ = eventlog::replay(&scan.events, pcr);
    }
});
