//! The host's event log: TCG PC Client crypto-agile format, SHA-256 only.
//!
//! Layout (integers little-endian, unlike TPM marshalling):
//! - the header, a TCG_PCR_EVENT (SHA-1 style) of type `EV_NO_ACTION` whose
//!   data is the `Spec ID Event03` structure naming one algorithm, SHA-256;
//! - then one TCG_PCR_EVENT2 per event: pcrIndex u32, eventType u32, digest
//!   count u32 (1), hashAlg u16 (0x000b), 32 digest bytes, eventSize u32, data.
//!
//! Zone events are `EV_EVENT_TAG` events whose data is a
//! TCG_PCClientTaggedEvent (taggedEventID u32, size u32, payload). The
//! payload is the launch's 16-byte *launch tag* followed by a record
//! ([`crate::launch`]: launch, stop, or the host's checkpoint, whose tag is
//! all zeros), and the digest extended is
//!
//! ```text
//! SHA-256("zone-attestor/event/v2\0" ‖ taggedEventID ‖ launch tag ‖ SHA-256(record))
//! launch tag = SHA-256("zone-attestor/launch-tag/v1\0" ‖ launch id)[..16]
//! ```
//!
//! so that a zone's evidence can withhold another zone's record (a
//! *redacted* event keeps the tag, the launch tag and the record's digest)
//! while the verifier still replays the log and knows that no redacted event
//! is one of the zone's own: an event cannot be hidden from the zone it is
//! about. A launch tag reveals nothing about the launch. Replaying a log means
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
/// Tagged-event id of the host's checkpoint (payload: checkpoint record).
pub const TAG_CHECKPOINT: u32 = 0x5a4f_4e03;
/// Tagged-event id of another zone's event whose record was withheld
/// (payload: the original taggedEventID, launch tag and record digest).
pub const TAG_REDACTED: u32 = 0x5a4f_4eff;
/// Length of a launch tag.
pub const LAUNCH_TAG_LEN: usize = 16;

const EVENT_DIGEST_LABEL: &[u8] = b"zone-attestor/event/v2\0";
const LAUNCH_TAG_LABEL: &[u8] = b"zone-attestor/launch-tag/v1\0";

/// The launch tag of `launch_id`.
pub fn launch_tag(launch_id: &str) -> [u8; LAUNCH_TAG_LEN] {
    let mut h = Sha256::new();
    h.update(LAUNCH_TAG_LABEL);
    h.update(launch_id.as_bytes());
    let full: [u8; 32] = h.finalize().into();
    let mut tag = [0u8; LAUNCH_TAG_LEN];
    tag.copy_from_slice(&full[..LAUNCH_TAG_LEN]);
    tag
}

/// The digest a zone event extends: see the module documentation.
pub fn zone_digest(tag: u32, launch_tag: &[u8; LAUNCH_TAG_LEN], record_sha256: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(EVENT_DIGEST_LABEL);
    h.update(tag.to_le_bytes());
    h.update(launch_tag);
    h.update(record_sha256);
    h.finalize().into()
}

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
        Self { max_events: 100_000, max_event_data: crate::launch::MAX_RECORD_LEN + 8 + LAUNCH_TAG_LEN }
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
    /// A launch; the record is a launch record.
    Launch {
        /// The launch's tag.
        launch_tag: [u8; LAUNCH_TAG_LEN],
        /// The launch record's bytes.
        record: &'a [u8],
    },
    /// A stop; the record is a stop record.
    Stop {
        /// The launch's tag.
        launch_tag: [u8; LAUNCH_TAG_LEN],
        /// The stop record's bytes.
        record: &'a [u8],
    },
    /// The host's checkpoint; the record is a checkpoint record.
    Checkpoint {
        /// The checkpoint record's bytes.
        record: &'a [u8],
    },
    /// Another zone's launch or stop, its record withheld.
    Redacted {
        /// The original taggedEventID.
        tag: u32,
        /// The launch's tag.
        launch_tag: [u8; LAUNCH_TAG_LEN],
        /// SHA-256 of the withheld record.
        record_sha256: [u8; 32],
    },
}

impl ZoneEvent<'_> {
    /// The digest this event must have.
    pub fn digest(&self) -> [u8; 32] {
        match *self {
            Self::Launch { launch_tag, record } => zone_digest(TAG_ZONE_LAUNCH, &launch_tag, &Sha256::digest(record).into()),
            Self::Stop { launch_tag, record } => zone_digest(TAG_ZONE_STOP, &launch_tag, &Sha256::digest(record).into()),
            Self::Checkpoint { record } => zone_digest(TAG_CHECKPOINT, &[0; LAUNCH_TAG_LEN], &Sha256::digest(record).into()),
            Self::Redacted { tag, launch_tag, record_sha256 } => zone_digest(tag, &launch_tag, &record_sha256),
        }
    }

    /// The launch tag, for launches, stops and redacted events.
    pub fn launch_tag(&self) -> Option<[u8; LAUNCH_TAG_LEN]> {
        match *self {
            Self::Launch { launch_tag, .. } | Self::Stop { launch_tag, .. } | Self::Redacted { launch_tag, .. } => Some(launch_tag),
            Self::Checkpoint { .. } => None,
        }
    }
}

fn tagged_data(tag: u32, payload: &[&[u8]]) -> Vec<u8> {
    let len: usize = payload.iter().map(|p| p.len()).sum();
    let mut data = Vec::with_capacity(8 + len);
    data.extend_from_slice(&tag.to_le_bytes());
    data.extend_from_slice(&len_u32(len).to_le_bytes());
    for p in payload {
        data.extend_from_slice(p);
    }
    data
}

impl Event {
    /// A zone launch or stop event of launch `launch_id` (`tag` is
    /// [`TAG_ZONE_LAUNCH`] or [`TAG_ZONE_STOP`]) carrying `record`.
    pub fn zone(pcr: u32, tag: u32, launch_id: &str, record: &[u8]) -> Self {
        let lt = launch_tag(launch_id);
        let data = tagged_data(tag, &[&lt, record]);
        Self { pcr, event_type: EV_EVENT_TAG, digest: zone_digest(tag, &lt, &Sha256::digest(record).into()), data }
    }

    /// The host's checkpoint event carrying `record`.
    pub fn checkpoint(pcr: u32, record: &[u8]) -> Self {
        let lt = [0u8; LAUNCH_TAG_LEN];
        let data = tagged_data(TAG_CHECKPOINT, &[&lt, record]);
        Self { pcr, event_type: EV_EVENT_TAG, digest: zone_digest(TAG_CHECKPOINT, &lt, &Sha256::digest(record).into()), data }
    }

    /// The same event with its record withheld (tag, launch tag and record
    /// digest kept, so it still replays and still says whose it is).
    /// Events that are not launches or stops are returned unchanged.
    pub fn redacted(&self) -> Self {
        match self.zone_event() {
            Some(z @ (ZoneEvent::Launch { .. } | ZoneEvent::Stop { .. })) => {
                let (tag, lt, record) = match z {
                    ZoneEvent::Launch { launch_tag, record } => (TAG_ZONE_LAUNCH, launch_tag, record),
                    ZoneEvent::Stop { launch_tag, record } => (TAG_ZONE_STOP, launch_tag, record),
                    _ => unreachable!("matched above"),
                };
                let rd: [u8; 32] = Sha256::digest(record).into();
                let data = tagged_data(TAG_REDACTED, &[&tag.to_le_bytes(), &lt, &rd]);
                Self { pcr: self.pcr, event_type: EV_EVENT_TAG, digest: self.digest, data }
            }
            _ => self.clone(),
        }
    }

    /// Whether the digest is what the event's data says it must be (for
    /// zone events, redacted ones included).
    pub fn digest_matches_data(&self) -> bool {
        self.zone_event().is_some_and(|z| z.digest() == self.digest)
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
        let split = |p: &[u8]| -> Option<([u8; LAUNCH_TAG_LEN], usize)> {
            Some((p.get(..LAUNCH_TAG_LEN)?.try_into().ok()?, LAUNCH_TAG_LEN))
        };
        match tag {
            TAG_ZONE_LAUNCH | TAG_ZONE_STOP => {
                let (launch_tag, at) = split(payload)?;
                let record = &payload[at..];
                Some(if tag == TAG_ZONE_LAUNCH { ZoneEvent::Launch { launch_tag, record } } else { ZoneEvent::Stop { launch_tag, record } })
            }
            TAG_CHECKPOINT => {
                let (launch_tag, at) = split(payload)?;
                (launch_tag == [0; LAUNCH_TAG_LEN]).then(|| ZoneEvent::Checkpoint { record: &payload[at..] })
            }
            TAG_REDACTED if payload.len() == 4 + LAUNCH_TAG_LEN + 32 => {
                let tag = u32::from_le_bytes(payload[..4].try_into().ok()?);
                if tag != TAG_ZONE_LAUNCH && tag != TAG_ZONE_STOP {
                    return None;
                }
                Some(ZoneEvent::Redacted {
                    tag,
                    launch_tag: payload[4..4 + LAUNCH_TAG_LEN].try_into().ok()?,
                    record_sha256: payload[4 + LAUNCH_TAG_LEN..].try_into().ok()?,
                })
            }
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

/// Parses exactly one TCG_PCR_EVENT2 (no header, nothing after it).
pub fn parse_event_bytes(bytes: &[u8], limits: &Limits) -> Result<Event, EventLogError> {
    let mut c = Cursor { bytes, pos: 0 };
    let e = parse_event(&mut c, 1, limits)?;
    if c.pos != bytes.len() {
        return Err(EventLogError::Event { index: 1, offset: c.pos, detail: "trailing bytes after the event".into() });
    }
    Ok(e)
}

/// Replays `events` that extend `pcr`, starting from `start`.
pub fn replay_from(start: [u8; 32], events: &[Event], pcr: u32) -> [u8; 32] {
    events.iter().filter(|e| e.pcr == pcr && e.event_type != EV_NO_ACTION).fold(start, |acc, e| extend(&acc, &e.digest))
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
        let events = vec![Event::zone(15, TAG_ZONE_LAUNCH, "id-1", b"{}"), Event::zone(15, TAG_ZONE_STOP, "id-1", b"{\"a\":1}")];
        let bytes = encode(&events);
        let back = parse(&bytes, &Limits::default()).unwrap();
        assert_eq!(back, events);
        assert!(back.iter().all(Event::digest_matches_data));
        assert_eq!(back[0].zone_event(), Some(ZoneEvent::Launch { launch_tag: launch_tag("id-1"), record: b"{}" }));
        let expected = extend(&extend(&[0; 32], &events[0].digest), &events[1].digest);
        assert_eq!(replay(&back, 15), expected);
        assert_eq!(replay(&back, 14), [0; 32]);
    }

    #[test]
    fn a_redacted_event_still_replays_and_says_whose_it_is() {
        let stop = Event::zone(15, TAG_ZONE_STOP, "id-1", b"{\"secret\":1}");
        let r = stop.redacted();
        assert_eq!(r.digest, stop.digest);
        assert!(r.digest_matches_data(), "the redacted form still proves its digest");
        assert!(!r.data.windows(6).any(|w| w == b"secret"), "the record is withheld");
        match r.zone_event() {
            Some(ZoneEvent::Redacted { tag, launch_tag: lt, .. }) => {
                assert_eq!(tag, TAG_ZONE_STOP);
                assert_eq!(lt, launch_tag("id-1"));
            }
            other => panic!("{other:?}"),
        }
        // A redacted event cannot claim another launch than the one it belongs to.
        let mut forged = r.clone();
        forged.data[12] ^= 1;
        assert!(!forged.digest_matches_data());
        // Nor be turned into a launch when it was a stop.
        let mut retagged = r.clone();
        retagged.data[8..12].copy_from_slice(&TAG_ZONE_LAUNCH.to_le_bytes());
        assert!(!retagged.digest_matches_data());
        let cp = Event::checkpoint(15, b"{}");
        assert!(cp.digest_matches_data());
        assert_eq!(cp.redacted(), cp, "a checkpoint is the host's, never withheld");
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
        let events = vec![Event::zone(15, TAG_ZONE_LAUNCH, "id", b"{}"); 3];
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
        let (n, d) = (huge.len(), events[0].data.len());
        huge[n - d - 4..n - d].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&huge, &Limits::default()).is_err());
    }
}
