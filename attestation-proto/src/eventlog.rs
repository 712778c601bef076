//! The host's event log: TCG PC Client crypto-agile format, SHA-256 only.
//!
//! Layout (integers little-endian, unlike TPM marshalling):
//! - the header, a TCG_PCR_EVENT (SHA-1 style) of type `EV_NO_ACTION` whose
//!   data is the `Spec ID Event03` structure naming one algorithm, SHA-256;
//! - then one TCG_PCR_EVENT2 per event: pcrIndex u32, eventType u32, digest
//!   count u32 (1), hashAlg u16 (0x000b), 32 digest bytes, eventSize u32, data.
//!
//! Zone events are `EV_EVENT_TAG` events whose data is a
//! TCG_PCClientTaggedEvent (taggedEventID u32, size u32, payload): the
//! payload is a launch or stop record ([`crate::launch`]) and the digest is
//! SHA-256 of the whole event data. Replaying a log means
//! `PCR = SHA-256(PCR ‖ digest)` from 32 zero bytes for every event that
//! is not `EV_NO_ACTION`; `tpm2_eventlog` and `tpm2_checkquote -e` read
//! the same bytes.
//!
//! The parser treats its input as hostile: it accepts only this layout,
//! bounds the event count and sizes, and never panics.

use sha2::{Digest, Sha256};

/// `EV_NO_ACTION`.
pub const EV_NO_ACTION: u32 = 3;
/// `EV_EVENT_TAG`.
pub const EV_EVENT_TAG: u32 = 6;
/// TPM_ALG_SHA256.
pub const ALG_SHA256: u16 = 0x000b;
/// Tagged-event id of a zone launch (payload: launch record).
pub const TAG_ZONE_LAUNCH: u32 = 0x5a4f_4e01;
/// Tagged-event id of a zone stop (payload: stop record).
pub const TAG_ZONE_STOP: u32 = 0x5a4f_4e02;
/// Tagged-event id of another zone's event whose data was withheld (empty
/// payload; only its digest counts).
pub const TAG_REDACTED: u32 = 0x5a4f_4eff;

const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const HEADER_PREFIX_LEN: usize = 32;

/// Bounds on what a parser accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most events after the header.
    pub max_events: usize,
    /// Largest event data (bytes).
    pub max_event_data: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_events: 100_000, max_event_data: crate::launch::MAX_RECORD_LEN + 8 }
    }
}

impl Limits {
    /// Limits for a host's whole log (what the daemon keeps and `zonectl
    /// eventlog` shows): generous, still bounded.
    pub fn host_log() -> Self {
        Self { max_events: 1_000_000, ..Self::default() }
    }
}

/// A log that cannot be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EventLogError {
    /// The bytes end inside a structure.
    #[error("event log truncated at byte {offset} (inside {what})")]
    Truncated {
        /// Where.
        offset: usize,
        /// Which structure.
        what: &'static str,
    },
    /// The header is not a SHA-256-only Spec ID event.
    #[error("event log header is not a SHA-256-only TCG crypto-agile Spec ID event: {0}")]
    Header(String),
    /// An event uses a layout this parser does not accept.
    #[error("event {index} at byte {offset}: {detail}")]
    Event {
        /// 1-based event number (the header is 0).
        index: usize,
        /// Where it starts.
        offset: usize,
        /// What is wrong.
        detail: String,
    },
    /// Too many events.
    #[error("event log has more than {0} events")]
    TooManyEvents(usize),
}

/// A length as the log's u32 field (our records are at most a few KiB;
/// anything past 4 GiB saturates and the parser would refuse it).
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One event after the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// PCR index.
    pub pcr: u32,
    /// Event type.
    pub event_type: u32,
    /// SHA-256 digest extended into the PCR.
    pub digest: [u8; 32],
    /// Event data.
    pub data: Vec<u8>,
}

/// What a zone event says, from its tagged-event data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneEvent<'a> {
    /// A launch; the payload is a launch record.
    Launch(&'a [u8]),
    /// A stop; the payload is a stop record.
    Stop(&'a [u8]),
    /// Another zone's event, data withheld.
    Redacted,
}

impl Event {
    /// A zone event with tag `tag` and `payload`, its digest computed over the data.
    pub fn tagged(pcr: u32, tag: u32, payload: &[u8]) -> Self {
        let mut data = Vec::with_capacity(8 + payload.len());
        data.extend_from_slice(&tag.to_le_bytes());
        data.extend_from_slice(&len_u32(payload.len()).to_le_bytes());
        data.extend_from_slice(payload);
        Self { pcr, event_type: EV_EVENT_TAG, digest: Sha256::digest(&data).into(), data }
    }

    /// The same event with its data withheld (digest kept).
    pub fn redacted(&self) -> Self {
        let mut data = Vec::with_capacity(8);
        data.extend_from_slice(&TAG_REDACTED.to_le_bytes());
        data.extend_from_slice(&0u32.to_le_bytes());
        Self { pcr: self.pcr, event_type: EV_EVENT_TAG, digest: self.digest, data }
    }

    /// Whether the digest is SHA-256 of the data.
    pub fn digest_matches_data(&self) -> bool {
        <[u8; 32]>::from(Sha256::digest(&self.data)) == self.digest
    }

    /// Reads the tagged-event data of a zone event (`None` for other events).
    pub fn zone_event(&self) -> Option<ZoneEvent<'_>> {
        if self.event_type != EV_EVENT_TAG || self.data.len() < 8 {
            return None;
        }
        let tag = u32::from_le_bytes(self.data[0..4].try_into().ok()?);
        let len = u32::from_le_bytes(self.data[4..8].try_into().ok()?) as usize;
        let payload = &self.data[8..];
        if payload.len() != len {
            return None;
        }
        match tag {
            TAG_ZONE_LAUNCH => Some(ZoneEvent::Launch(payload)),
            TAG_ZONE_STOP => Some(ZoneEvent::Stop(payload)),
            TAG_REDACTED if payload.is_empty() => Some(ZoneEvent::Redacted),
            _ => None,
        }
    }

    /// The TCG_PCR_EVENT2 bytes of this event.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(50 + self.data.len());
        b.extend_from_slice(&self.pcr.to_le_bytes());
        b.extend_from_slice(&self.event_type.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&ALG_SHA256.to_le_bytes());
        b.extend_from_slice(&self.digest);
        b.extend_from_slice(&len_u32(self.data.len()).to_le_bytes());
        b.extend_from_slice(&self.data);
        b
    }
}

/// The header event: a Spec ID event naming SHA-256 only.
pub fn header() -> Vec<u8> {
    let mut spec = Vec::with_capacity(33);
    spec.extend_from_slice(SPEC_ID_SIGNATURE);
    spec.extend_from_slice(&0u32.to_le_bytes()); // platformClass: client
    spec.extend_from_slice(&[0, 2, 0, 2]); // specVersionMinor, Major, errata, uintnSize (64-bit)
    spec.extend_from_slice(&1u32.to_le_bytes()); // numberOfAlgorithms
    spec.extend_from_slice(&ALG_SHA256.to_le_bytes());
    spec.extend_from_slice(&32u16.to_le_bytes());
    spec.push(0); // vendorInfoSize
    let mut b = Vec::with_capacity(HEADER_PREFIX_LEN + spec.len());
    b.extend_from_slice(&0u32.to_le_bytes()); // pcrIndex
    b.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
    b.extend_from_slice(&[0u8; 20]);
    b.extend_from_slice(&len_u32(spec.len()).to_le_bytes());
    b.extend_from_slice(&spec);
    b
}

/// A whole log: the header then `events`.
pub fn encode(events: &[Event]) -> Vec<u8> {
    let mut b = header();
    for e in events {
        b.extend_from_slice(&e.encode());
    }
    b
}

/// Replays the events that extend `pcr`, from 32 zero bytes.
pub fn replay(events: &[Event], pcr: u32) -> [u8; 32] {
    events.iter().filter(|e| e.pcr == pcr && e.event_type != EV_NO_ACTION).fold([0u8; 32], |acc, e| extend(&acc, &e.digest))
}

/// `SHA-256(pcr ‖ digest)`: one PCR extend.
pub fn extend(pcr: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(pcr);
    h.update(digest);
    h.finalize().into()
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], EventLogError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(EventLogError::Truncated { offset: self.pos, what })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, EventLogError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, EventLogError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
}

fn parse_header(c: &mut Cursor<'_>) -> Result<(), EventLogError> {
    let bad = |s: &str| EventLogError::Header(s.to_owned());
    let pcr = c.u32("header")?;
    let ty = c.u32("header")?;
    let digest = c.take(20, "header")?;
    let size = c.u32("header")? as usize;
    if pcr != 0 || ty != EV_NO_ACTION || digest.iter().any(|&b| b != 0) {
        return Err(bad("the first event must be EV_NO_ACTION on PCR 0 with a zero digest"));
    }
    if !(33..=1024).contains(&size) {
        return Err(bad("Spec ID event size out of range"));
    }
    let spec = c.take(size, "Spec ID event")?;
    let mut s = Cursor { bytes: spec, pos: 0 };
    if s.take(16, "Spec ID event")? != SPEC_ID_SIGNATURE {
        return Err(bad("signature is not \"Spec ID Event03\""));
    }
    let _platform_class = s.u32("Spec ID event")?;
    let version = s.take(4, "Spec ID event")?;
    if version[1] != 2 || version[3] != 2 {
        return Err(bad("spec version must be 2.x with uintnSize 2"));
    }
    if s.u32("Spec ID event")? != 1 {
        return Err(bad("exactly one digest algorithm (SHA-256) is supported"));
    }
    if s.u16("Spec ID event")? != ALG_SHA256 || s.u16("Spec ID event")? != 32 {
        return Err(bad("the algorithm must be SHA-256 with 32-byte digests"));
    }
    let vendor = usize::from(s.take(1, "Spec ID event")?[0]);
    s.take(vendor, "Spec ID vendor info")?;
    if s.pos != spec.len() {
        return Err(bad("trailing bytes after the Spec ID event"));
    }
    Ok(())
}

fn parse_event(c: &mut Cursor<'_>, index: usize, limits: &Limits) -> Result<Event, EventLogError> {
    let offset = c.pos;
    let bad = |detail: String| EventLogError::Event { index, offset, detail };
    let pcr = c.u32("event")?;
    let event_type = c.u32("event")?;
    if pcr > 23 {
        return Err(bad(format!("PCR index {pcr} does not exist")));
    }
    if c.u32("event")? != 1 {
        return Err(bad("must carry exactly one digest (SHA-256)".into()));
    }
    if c.u16("event")? != ALG_SHA256 {
        return Err(bad("digest algorithm is not SHA-256".into()));
    }
    let digest: [u8; 32] = c.take(32, "event digest")?.try_into().map_err(|_| bad("digest".into()))?;
    let size = c.u32("event")? as usize;
    if size > limits.max_event_data {
        return Err(bad(format!("event data of {size} bytes exceeds the {}-byte limit", limits.max_event_data)));
    }
    let data = c.take(size, "event data")?.to_vec();
    Ok(Event { pcr, event_type, digest, data })
}

/// Parses a whole log; any defect is an error.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Vec<Event>, EventLogError> {
    let scan = scan(bytes, limits)?;
    match scan.tail_error {
        Some(e) => Err(e),
        None => Ok(scan.events),
    }
}

/// The longest well-formed prefix of a log (for recovering a torn append).
#[derive(Debug)]
pub struct Scan {
    /// Events of that prefix.
    pub events: Vec<Event>,
    /// Its length in bytes.
    pub complete_len: usize,
    /// Why the rest could not be read, if there is a rest.
    pub tail_error: Option<EventLogError>,
}

/// Reads events until the end or the first defect; a bad header is an error.
pub fn scan(bytes: &[u8], limits: &Limits) -> Result<Scan, EventLogError> {
    let mut c = Cursor { bytes, pos: 0 };
    parse_header(&mut c)?;
    let mut events = Vec::new();
    let mut complete_len = c.pos;
    while c.pos < bytes.len() {
        if events.len() >= limits.max_events {
            return Ok(Scan { events, complete_len, tail_error: Some(EventLogError::TooManyEvents(limits.max_events)) });
        }
        match parse_event(&mut c, events.len() + 1, limits) {
            Ok(e) => {
                events.push(e);
                complete_len = c.pos;
            }
            Err(e) => return Ok(Scan { events, complete_len, tail_error: Some(e) }),
        }
    }
    Ok(Scan { events, complete_len, tail_error: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_replay() {
        let events = vec![Event::tagged(15, TAG_ZONE_LAUNCH, b"{}"), Event::tagged(15, TAG_ZONE_STOP, b"{\"a\":1}")];
        let bytes = encode(&events);
        let back = parse(&bytes, &Limits::default()).unwrap();
        assert_eq!(back, events);
        assert!(back.iter().all(Event::digest_matches_data));
        assert_eq!(back[0].zone_event(), Some(ZoneEvent::Launch(b"{}")));
        let expected = extend(&extend(&[0; 32], &events[0].digest), &events[1].digest);
        assert_eq!(replay(&back, 15), expected);
        assert_eq!(replay(&back, 14), [0; 32]);
        let r = events[0].redacted();
        assert_eq!(r.zone_event(), Some(ZoneEvent::Redacted));
        assert_eq!(r.digest, events[0].digest);
        assert!(!r.digest_matches_data());
    }

    #[test]
    fn header_is_the_spec_id_event() {
        let h = header();
        assert_eq!(h.len(), 65);
        assert!(parse(&h, &Limits::default()).unwrap().is_empty());
        let mut bad = h.clone();
        bad[32] = b'X';
        assert!(matches!(parse(&bad, &Limits::default()), Err(EventLogError::Header(_))));
        assert!(parse(&[], &Limits::default()).is_err());
    }

    #[test]
    fn torn_tails_and_limits() {
        let events = vec![Event::tagged(15, TAG_ZONE_LAUNCH, b"{}"); 3];
        let bytes = encode(&events);
        for cut in 65..bytes.len() {
            let s = scan(&bytes[..cut], &Limits::default()).unwrap();
            assert!(s.complete_len <= cut);
            assert_eq!(s.tail_error.is_some(), s.complete_len != cut);
            assert!(parse(&bytes[..cut], &Limits::default()).is_err() || s.complete_len == cut);
        }
        let limits = Limits { max_events: 2, ..Limits::default() };
        assert_eq!(parse(&bytes, &limits), Err(EventLogError::TooManyEvents(2)));
        let limits = Limits { max_event_data: 5, ..Limits::default() };
        assert!(matches!(parse(&bytes, &limits), Err(EventLogError::Event { index: 1, .. })));
        // A size field claiming 4 GiB allocates nothing.
        let mut huge = encode(&events[..1]);
        let n = huge.len();
        huge[n - 14..n - 10].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&huge, &Limits::default()).is_err());
    }
}
