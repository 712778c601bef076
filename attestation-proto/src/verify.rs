//! The verifier: checks a zone's evidence against trusted attestation keys
//! (each bound to the host it speaks for), a nonce and a policy. Pure: no
//! I/O, no TPM, no async runtime.
//!
//! The checks run in this order, and a rejection names the first that
//! failed ([`Check`]):
//!
//! 1. **format** — sizes, versions, canonical protobuf (no unknown or
//!    repeated fields), every structure parses (TPMS_ATTEST,
//!    TPMT_SIGNATURE, TPMT_PUBLIC, the event log, the launch record, the
//!    checkpoint);
//! 2. **ak-trusted** — SHA-256 of the AK's TPMT_PUBLIC is trusted, and the AK
//!    is a restricted signing key (so it only signs TPM-made attestations);
//! 3. **host** — the AK is trusted for the host the launch record names (a
//!    host cannot speak for another);
//! 4. **signature** — the AK signed the TPMS_ATTEST;
//! 5. **qualified-signer** — the quote names the AK as a child of the EK;
//! 6. **freshness** — the Merkle leaf of (nonce, launch record) is included
//!    under the root the quote carries as qualifying data;
//! 7. **pcr-selection** — only PCRs inside the signed selection are used;
//!    the zone PCR is one of them and cannot be reset at locality 0;
//! 8. **pcr-digest** — the PCR values hash to the quote's PCR digest;
//! 9. **checkpoint** — when the log starts after a checkpoint: the same AK
//!    quoted the zone PCR, in the same TPM boot (reset and restart counts)
//!    and no later than the evidence's quote, with the checkpoint event as
//!    the last extend before it (`pcr_before` extended by the event gives the
//!    quoted value, and SHA-256 has no preimages to fake that with); its
//!    qualifying data is the checkpoint label over the event's digest;
//! 10. **event-log-replay** — the event log replays to the zone PCR's value,
//!    from zero or from the checkpoint's value;
//! 11. **event-digest** — each event's digest is the one its data says
//!    (redacted events of other zones included: they keep the launch tag and
//!    the record's digest);
//! 12. **launch-record** — the zone's launch record is a launch event of the
//!    log, or (with an inclusion proof under the checkpoint's live-set root)
//!    was live at the checkpoint;
//! 13. **not-stopped** — no stop event of that launch follows, and no redacted
//!    event is one of this launch's (a zone's own events are never withheld
//!    from it, so a hidden stop would be a forgery);
//! 14. **policy** — the policy allows the zone's name and digests.
//!
//! Why a checkpoint is sound: the TPM attested that the zone PCR held `V_c`
//! at some time of this boot, and now holds `V`. PCRs change only by extends,
//! so `V` is `V_c` extended by whatever was extended since; the events after
//! the checkpoint replay from `V_c` to `V`, and by collision resistance they
//! are exactly those. The checkpoint event itself is bound as the extend that
//! produced `V_c`. What came before is summarized by the checkpoint's
//! Merkle root over the live launches' record digests, which the same daemon
//! wrote that wrote every other event; a launch from before the checkpoint
//! proves it was live with an inclusion proof under that root.

use sha2::{Digest, Sha256};

use crate::evidence::{self, Evidence, FORMAT_VERSION};
use crate::eventlog::{self, Event, ZoneEvent};
use crate::launch::{CheckpointRecord, LaunchRecord, StopRecord};
use crate::merkle;
use crate::policy::Policy;
use crate::tpm::{
    ALG_SHA256, Attest, PublicArea, Signature, TPM_RH_ENDORSEMENT, pcr_digest, qualified_name_of_child,
    qualified_name_of_primary,
};

/// Largest TPM structure accepted (TPMS_ATTEST, TPMT_SIGNATURE, TPMT_PUBLIC).
const MAX_TPM_STRUCT: usize = 2048;
/// Largest EK certificate accepted.
pub const MAX_EK_CERTIFICATE: usize = 8192;
/// Largest event log inside evidence.
pub const MAX_EVENT_LOG: usize = 4 * 1024 * 1024;
/// Most events inside evidence.
pub const MAX_EVENTS: usize = 20_000;
/// Deepest Merkle proof accepted.
const MAX_PROOF: usize = 64;

/// The checks, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Check {
    /// Sizes, versions, parsing.
    Format,
    /// AK pinned and restricted.
    AkTrusted,
    /// The AK speaks for the record's host.
    Host,
    /// Quote signature.
    Signature,
    /// qualifiedSigner.
    QualifiedSigner,
    /// Nonce inclusion under the qualifying data.
    Freshness,
    /// Signed PCR selection.
    PcrSelection,
    /// PCR digest.
    PcrDigest,
    /// The checkpoint the log starts after.
    Checkpoint,
    /// Log replay.
    EventLogReplay,
    /// Event digests.
    EventDigest,
    /// Launch record in the log.
    LaunchRecord,
    /// Launch not stopped.
    NotStopped,
    /// Policy.
    Policy,
}

impl Check {
    /// The check's name, as it appears in rejections.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Format => "format",
            Self::AkTrusted => "ak-trusted",
            Self::Host => "host",
            Self::Signature => "signature",
            Self::QualifiedSigner => "qualified-signer",
            Self::Freshness => "freshness",
            Self::PcrSelection => "pcr-selection",
            Self::PcrDigest => "pcr-digest",
            Self::Checkpoint => "checkpoint",
            Self::EventLogReplay => "event-log-replay",
            Self::EventDigest => "event-digest",
            Self::LaunchRecord => "launch-record",
            Self::NotStopped => "not-stopped",
            Self::Policy => "policy",
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why evidence was rejected: the failed check and the detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("evidence rejected by check {check}: {detail}")]
pub struct Rejection {
    /// Which check failed.
    pub check: Check,
    /// What exactly.
    pub detail: String,
}

fn reject<T>(check: Check, detail: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection { check, detail: detail.into() })
}

/// An attestation key trusted to speak for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedAk {
    /// The host id its launch records must name.
    pub host: String,
    /// SHA-256 of its TPMT_PUBLIC (`zonectl eventlog` prints it).
    pub ak_sha256: [u8; 32],
}

/// What the verifier trusts: AKs, each for the host it speaks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    /// The trusted keys.
    pub aks: Vec<TrustedAk>,
}

impl Trust {
    /// Trusts `ak_sha256` for `host` (builder style).
    pub fn with(mut self, host: &str, ak_sha256: [u8; 32]) -> Self {
        self.aks.push(TrustedAk { host: host.to_owned(), ak_sha256 });
        self
    }

    /// The hosts `ak_sha256` is trusted for.
    pub fn hosts_of(&self, ak_sha256: &[u8; 32]) -> Vec<&str> {
        self.aks.iter().filter(|t| &t.ak_sha256 == ak_sha256).map(|t| t.host.as_str()).collect()
    }

    /// Parses a `HOST=SHA256` trust entry (as `zonectl verify --trust-ak` and
    /// the SPIRE plugin's `trusted_hosts` take them).
    pub fn parse_entry(entry: &str) -> Result<TrustedAk, String> {
        let (host, hexd) = entry.split_once('=').ok_or_else(|| {
            format!("trusted AK {entry:?}: write HOST=SHA256 (an AK is trusted for one host; `zonectl eventlog` prints both)")
        })?;
        let d = hex::decode(hexd.trim()).ok().and_then(|d| <[u8; 32]>::try_from(d).ok());
        let ak_sha256 = d.ok_or_else(|| format!("trusted AK {entry:?}: {hexd:?} is not 64 hex digits"))?;
        let host = host.trim();
        if host.is_empty() {
            return Err(format!("trusted AK {entry:?}: the host id is empty"));
        }
        Ok(TrustedAk { host: host.to_owned(), ak_sha256 })
    }
}

/// What verified evidence establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The zone's launch record.
    pub record: LaunchRecord,
    /// SHA-256 of the AK that signed (hex).
    pub ak_sha256: String,
    /// The PCR the zone was measured into.
    pub zone_pcr: u32,
    /// The TPM's reset count at the quote (changes with each host boot).
    pub reset_count: u32,
    /// How many requests shared the quote.
    pub batch_size: u64,
    /// Events in the log (after the checkpoint, if any).
    pub events: usize,
    /// The checkpoint the log started after, if any (its sequence number).
    pub checkpoint_seq: Option<u64>,
    /// The TPM's EK certificate (DER), if the evidence carried one.
    pub ek_certificate: Option<Vec<u8>>,
}

/// SHA-256 of an AK's TPMT_PUBLIC: what [`Trust`] pins.
pub fn ak_digest(ak_public: &[u8]) -> [u8; 32] {
    Sha256::digest(ak_public).into()
}

struct ParsedCheckpoint {
    attest_bytes: Vec<u8>,
    attest: Attest,
    signature: Signature,
    pcr_before: [u8; 32],
    event: Event,
    record: CheckpointRecord,
    /// The zone's inclusion proof in the live set: (leaf index, siblings).
    live_proof: Option<(u64, Vec<[u8; 32]>, u64)>,
}

struct Parsed {
    ev: Evidence,
    attest: Attest,
    signature: Signature,
    ak: PublicArea,
    ek: PublicArea,
    record: LaunchRecord,
    events: Vec<Event>,
    checkpoint: Option<ParsedCheckpoint>,
}

fn check_format(bytes: &[u8], nonce: &[u8]) -> Result<Parsed, Rejection> {
    let f = Check::Format;
    let ev = evidence::decode(bytes).or_else(|e| reject(f, e))?;
    if ev.format_version != FORMAT_VERSION {
        return reject(f, format!("format version {} is not supported (expected {FORMAT_VERSION})", ev.format_version));
    }
    // Protobuf decoding skips unknown fields and lets a repeated field
    // override or merge with an earlier one; the daemon never writes either.
    // Accept only the one byte form the daemon writes, so nothing in the
    // evidence goes unread.
    if evidence::encode(&ev) != bytes {
        return reject(f, "evidence is not in canonical form (unknown, repeated or out-of-order fields, or non-minimal encodings)");
    }
    if let Err(e) = evidence::check_nonce(nonce) {
        return reject(f, e.to_string());
    }
    for (what, len) in [
        ("quote_attest", ev.quote_attest.len()),
        ("quote_signature", ev.quote_signature.len()),
        ("ak_public", ev.ak_public.len()),
        ("ek_public", ev.ek_public.len()),
    ] {
        if len == 0 || len > MAX_TPM_STRUCT {
            return reject(f, format!("{what} is {len} bytes (expected 1..={MAX_TPM_STRUCT})"));
        }
    }
    if ev.ek_certificate.len() > MAX_EK_CERTIFICATE {
        return reject(f, format!("ek_certificate is {} bytes, more than {MAX_EK_CERTIFICATE}", ev.ek_certificate.len()));
    }
    if ev.event_log.len() > MAX_EVENT_LOG {
        return reject(f, format!("event log is {} bytes, more than {MAX_EVENT_LOG}", ev.event_log.len()));
    }
    if ev.pcrs.len() > 24 || ev.pcrs.iter().any(|p| p.sha256.len() != 32 || p.index > 23) {
        return reject(f, "PCR values must be at most 24 entries of index 0..=23 with 32-byte SHA-256 values");
    }
    let batch = ev.batch.as_ref().map_or(0, |b| b.siblings.len());
    if ev.batch.is_none() || batch > MAX_PROOF || ev.batch.iter().flat_map(|b| &b.siblings).any(|s| s.len() != 32) {
        return reject(f, format!("batch proof missing or malformed (at most {MAX_PROOF} 32-byte hashes)"));
    }
    let attest = Attest::parse(&ev.quote_attest).or_else(|e| reject(f, format!("quote_attest: {e}")))?;
    let signature = Signature::parse(&ev.quote_signature).or_else(|e| reject(f, format!("quote_signature: {e}")))?;
    let ak = PublicArea::parse(&ev.ak_public).or_else(|e| reject(f, format!("ak_public: {e}")))?;
    let ek = PublicArea::parse(&ev.ek_public).or_else(|e| reject(f, format!("ek_public: {e}")))?;
    let record = LaunchRecord::decode(&ev.launch_record).or_else(|e| reject(f, format!("launch_record: {e}")))?;
    let limits = eventlog::Limits { max_events: MAX_EVENTS, ..eventlog::Limits::default() };
    let events = eventlog::parse(&ev.event_log, &limits).or_else(|e| reject(f, format!("event_log: {e}")))?;
    let checkpoint = match &ev.checkpoint {
        None => None,
        Some(c) => {
            for (what, len) in [("checkpoint.quote_attest", c.quote_attest.len()), ("checkpoint.quote_signature", c.quote_signature.len())] {
                if len == 0 || len > MAX_TPM_STRUCT {
                    return reject(f, format!("{what} is {len} bytes (expected 1..={MAX_TPM_STRUCT})"));
                }
            }
            let Ok(pcr_before) = <[u8; 32]>::try_from(c.pcr_before.as_slice()) else {
                return reject(f, "checkpoint.pcr_before is not a 32-byte SHA-256 value");
            };
            let attest = Attest::parse(&c.quote_attest).or_else(|e| reject(f, format!("checkpoint.quote_attest: {e}")))?;
            let signature =
                Signature::parse(&c.quote_signature).or_else(|e| reject(f, format!("checkpoint.quote_signature: {e}")))?;
            let event = eventlog::parse_event_bytes(&c.event, &eventlog::Limits::default())
                .or_else(|e| reject(f, format!("checkpoint.event: {e}")))?;
            let record = match event.zone_event() {
                Some(ZoneEvent::Checkpoint { record }) => {
                    CheckpointRecord::decode(record).or_else(|e| reject(f, format!("checkpoint.event: {e}")))?
                }
                _ => return reject(f, "checkpoint.event is not a checkpoint event"),
            };
            let live_proof = match &c.live_proof {
                None => None,
                Some(p) => {
                    if p.siblings.len() > MAX_PROOF || p.siblings.iter().any(|s| s.len() != 32) {
                        return reject(f, format!("checkpoint.live_proof is malformed (at most {MAX_PROOF} 32-byte hashes)"));
                    }
                    let siblings = p.siblings.iter().filter_map(|s| <[u8; 32]>::try_from(s.as_slice()).ok()).collect();
                    Some((p.leaf_index, siblings, p.tree_size))
                }
            };
            Some(ParsedCheckpoint { attest_bytes: c.quote_attest.clone(), attest, signature, pcr_before, event, record, live_proof })
        }
    };
    Ok(Parsed { ev, attest, signature, ak, ek, record, events, checkpoint })
}

/// Verifies `bytes` as evidence for `nonce`; on success says what was proven.
pub fn verify(bytes: &[u8], nonce: &[u8], trust: &Trust, policy: &Policy) -> Result<Verified, Rejection> {
    let Parsed { ev, attest, signature, ak, ek, record, events, checkpoint } = check_format(bytes, nonce)?;

    // 2. The AK is one we trust, and it only signs what the TPM itself made.
    let ak_hash = ak_digest(&ev.ak_public);
    let hosts = trust.hosts_of(&ak_hash);
    if hosts.is_empty() {
        return reject(Check::AkTrusted, format!("attestation key sha256:{} is not pinned as trusted", hex::encode(ak_hash)));
    }
    if !ak.is_restricted_signing_key() {
        return reject(Check::AkTrusted, "the attestation key is not a restricted, fixedTPM signing key");
    }

    // 3. ... for the host the record names.
    if !hosts.contains(&record.host.as_str()) {
        return reject(
            Check::Host,
            format!(
                "the launch record names host {:?} but attestation key sha256:{} is trusted only for {hosts:?}",
                record.host,
                hex::encode(ak_hash)
            ),
        );
    }

    // 3. Signature over the TPMS_ATTEST bytes as received.
    if let Err(e) = ak.verify(&ev.quote_attest, &signature) {
        return reject(Check::Signature, format!("the quote signature does not verify with the AK: {e}"));
    }

    // 4. The quote names this AK, a child of this EK.
    let ek_qn = qualified_name_of_primary(TPM_RH_ENDORSEMENT, &ek.name());
    if qualified_name_of_child(&ek_qn, &ak.name()) != attest.qualified_signer {
        return reject(Check::QualifiedSigner, "the quote's qualifiedSigner is not the AK under the given EK");
    }

    // 5. Our nonce and this launch record are committed to by the quote.
    let Some(proof) = ev.batch.as_ref() else { return reject(Check::Format, "batch proof missing") };
    let leaf = evidence::leaf(nonce, &ev.launch_record).or_else(|e| reject(Check::Format, e.to_string()))?;
    let Ok(root) = <[u8; 32]>::try_from(attest.extra_data.as_slice()) else {
        return reject(Check::Freshness, "the quote's qualifying data is not a 32-byte batch root");
    };
    let siblings: Vec<[u8; 32]> = proof.siblings.iter().filter_map(|s| <[u8; 32]>::try_from(s.as_slice()).ok()).collect();
    if let Err(e) = merkle::verify_inclusion(&leaf, proof.leaf_index, proof.tree_size, &siblings, &root) {
        return reject(
            Check::Freshness,
            format!("the quote does not commit to this nonce and launch record ({e}): stale, replayed or another zone's evidence"),
        );
    }

    // 6. Only signed PCRs count; the zone PCR is one of them and not resettable.
    if attest.pcr_select.len() != 1 || attest.pcr_select[0].hash_alg != ALG_SHA256 {
        return reject(Check::PcrSelection, "the quote must select exactly one bank, SHA-256");
    }
    let signed = attest.pcr_select[0].pcrs();
    let given: Vec<u32> = ev.pcrs.iter().map(|p| p.index).collect();
    if given != signed.iter().map(|&p| u32::from(p)).collect::<Vec<_>>() {
        return reject(
            Check::PcrSelection,
            format!("PCR values given for {given:?} but the quote signs exactly {signed:?} (ascending)"),
        );
    }
    let zone_pcr = ev.zone_pcr;
    if zone_pcr > 15 {
        return reject(Check::PcrSelection, format!("zone PCR {zone_pcr} can be reset or is not extendable at locality 0; use 8–15"));
    }
    let Some(zone_value) = ev.pcrs.iter().find(|p| p.index == zone_pcr) else {
        return reject(Check::PcrSelection, format!("the quote does not cover the zone PCR {zone_pcr}"));
    };

    // 7. The values are the ones signed.
    let values: Vec<[u8; 32]> = ev.pcrs.iter().filter_map(|p| <[u8; 32]>::try_from(p.sha256.as_slice()).ok()).collect();
    if pcr_digest(&values).as_slice() != attest.pcr_digest.as_slice() {
        return reject(Check::PcrDigest, "the PCR values do not hash to the quote's PCR digest");
    }

    // 9. Where the log starts: at zero, or at a checkpoint of this TPM boot.
    let start = match &checkpoint {
        None => [0u8; 32],
        Some(c) => check_checkpoint(c, &ak, &attest, zone_pcr)?,
    };

    // 10. The log replays to the zone PCR.
    if let Some(e) = events.iter().find(|e| e.pcr != zone_pcr) {
        return reject(Check::EventLogReplay, format!("the log extends PCR {} besides the zone PCR {zone_pcr}", e.pcr));
    }
    if eventlog::replay_from(start, &events, zone_pcr).as_slice() != zone_value.sha256.as_slice() {
        return reject(Check::EventLogReplay, format!("the event log does not replay to the quoted PCR {zone_pcr}"));
    }

    // 11. Every event is what its digest says.
    let mut zone_events = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let Some(z) = e.zone_event() else {
            return reject(Check::EventDigest, format!("event {} is not a zone event this verifier understands", i + 1));
        };
        if z.digest() != e.digest {
            return reject(Check::EventDigest, format!("event {}'s digest is not the one its data says", i + 1));
        }
        zone_events.push(z);
    }

    // 12. This launch is in the log (or live at the checkpoint), once.
    let own_tag = eventlog::launch_tag(&record.launch_id);
    let mut launches = 0;
    for z in &zone_events {
        match *z {
            ZoneEvent::Launch { launch_tag, record: r } if r == ev.launch_record.as_slice() => {
                if launch_tag != own_tag {
                    return reject(Check::EventDigest, "the zone's launch event carries another launch's tag");
                }
                launches += 1;
            }
            ZoneEvent::Checkpoint { .. } => {
                return reject(Check::EventLogReplay, "a checkpoint event inside the log: the log must start after the latest checkpoint");
            }
            _ => {}
        }
    }
    let live_at_checkpoint = match checkpoint.as_ref().and_then(|c| c.live_proof.as_ref().map(|p| (c, p))) {
        None => false,
        Some((c, (index, siblings, size))) => {
            let digest: [u8; 32] = Sha256::digest(&ev.launch_record).into();
            let leaf = merkle::leaf_hash(&digest);
            let root = hex::decode(&c.record.live_root).ok().and_then(|r| <[u8; 32]>::try_from(r).ok()).unwrap_or_default();
            if *size != c.record.live_count {
                return reject(Check::LaunchRecord, "the live-set proof is for another number of live launches than the checkpoint's");
            }
            if let Err(e) = merkle::verify_inclusion(&leaf, *index, *size, siblings, &root) {
                return reject(Check::LaunchRecord, format!("the zone's launch record is not in the checkpoint's live set ({e})"));
            }
            true
        }
    };
    match (launches, live_at_checkpoint) {
        (1, false) | (0, true) => {}
        (n, live) => {
            return reject(
                Check::LaunchRecord,
                format!(
                    "the zone's launch record appears {n} times in the log{} (expected once, in the log or as live at the checkpoint)",
                    if live { " and is live at the checkpoint" } else { "" }
                ),
            );
        }
    }

    // 13. ... and has not ended; nothing of this launch is withheld.
    for z in &zone_events {
        match *z {
            ZoneEvent::Stop { launch_tag, record: d } => {
                let stop = StopRecord::decode(d).or_else(|e| reject(Check::EventDigest, format!("a stop event: {e}")))?;
                if eventlog::launch_tag(&stop.launch_id) != launch_tag {
                    return reject(Check::EventDigest, "a stop event carries another launch's tag");
                }
                if stop.launch_id == record.launch_id {
                    return reject(Check::NotStopped, format!("zone {} (launch {}) was stopped: {}", record.zone, record.launch_id, stop.reason));
                }
            }
            ZoneEvent::Redacted { launch_tag, .. } if launch_tag == own_tag => {
                return reject(
                    Check::NotStopped,
                    "an event of this zone's own launch is withheld from it (a zone's evidence never hides its own events)",
                );
            }
            _ => {}
        }
    }

    // 14. Policy.
    if let Err(detail) = policy.check(&record) {
        return reject(Check::Policy, detail);
    }
    Ok(Verified {
        ak_sha256: hex::encode(ak_hash),
        zone_pcr,
        reset_count: attest.clock.reset_count,
        batch_size: proof.tree_size,
        events: events.len(),
        checkpoint_seq: checkpoint.as_ref().map(|c| c.record.seq),
        ek_certificate: (!ev.ek_certificate.is_empty()).then(|| ev.ek_certificate.clone()),
        record,
    })
}

/// The checkpoint check; returns the zone PCR's value at the checkpoint.
fn check_checkpoint(c: &ParsedCheckpoint, ak: &PublicArea, attest: &Attest, zone_pcr: u32) -> Result<[u8; 32], Rejection> {
    let k = Check::Checkpoint;
    let cp = &c.attest;
    if let Err(e) = ak.verify(&c.attest_bytes, &c.signature) {
        return reject(k, format!("the checkpoint quote's signature does not verify with the AK: {e}"));
    }
    if !c.event.digest_matches_data() || c.event.pcr != zone_pcr {
        return reject(k, "the checkpoint event's digest or PCR is not what its data says");
    }
    if cp.qualified_signer != attest.qualified_signer {
        return reject(k, "the checkpoint was quoted by another key");
    }
    if cp.clock.reset_count != attest.clock.reset_count
        || cp.clock.restart_count != attest.clock.restart_count
        || cp.clock.clock > attest.clock.clock
    {
        return reject(k, "the checkpoint is not from this TPM boot, or is later than the quote");
    }
    if cp.extra_data.as_slice() != evidence::checkpoint_qualifying_data(&c.event.digest) {
        return reject(k, "the checkpoint quote's qualifying data is not the checkpoint label over its event");
    }
    if cp.pcr_select.len() != 1
        || cp.pcr_select[0].hash_alg != ALG_SHA256
        || cp.pcr_select[0].pcrs() != [u8::try_from(zone_pcr).unwrap_or(u8::MAX)]
    {
        return reject(k, "the checkpoint quote must select exactly the zone PCR in the SHA-256 bank");
    }
    let value = eventlog::extend(&c.pcr_before, &c.event.digest);
    if pcr_digest(&[value]).as_slice() != cp.pcr_digest.as_slice() {
        return reject(k, "the checkpoint event is not the last extend before the checkpoint quote");
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_entries_bind_an_ak_to_one_host() {
        let t = Trust::parse_entry(&format!("host-a={}", "ab".repeat(32))).unwrap();
        assert_eq!(t.host, "host-a");
        let trust = Trust::default().with("host-a", [0xab; 32]).with("host-b", [0xcd; 32]);
        assert_eq!(trust.hosts_of(&[0xab; 32]), ["host-a"]);
        assert!(Trust::parse_entry(&"ab".repeat(32)).unwrap_err().contains("HOST=SHA256"));
        assert!(Trust::parse_entry("h=zz").unwrap_err().contains("64 hex"));
        assert!(Trust::parse_entry(&format!("={}", "ab".repeat(32))).unwrap_err().contains("empty"));
    }

    /// Found by the `verify_signed` fuzz target: genuine evidence with an
    /// unknown field appended verified, the field unread.
    #[test]
    fn unknown_or_repeated_fields_are_rejected() {
        let ev = Evidence { format_version: FORMAT_VERSION, zone_pcr: 15, ..Evidence::default() };
        let bytes = evidence::encode(&ev);
        let run = |b: &[u8]| verify(b, &[7; 32], &Trust::default(), &Policy { version: 1, allow: vec![] }).unwrap_err();
        // The canonical form gets past this check (and fails on the missing quote).
        let r = run(&bytes);
        assert_eq!(r.check, Check::Format);
        assert!(r.detail.starts_with("quote_attest is 0 bytes"), "{}", r.detail);
        // Field 797 (fixed32), unknown to this layout.
        let mut unknown = bytes.clone();
        unknown.extend_from_slice(&[0xed, 0x31, 19, 121, 204, 100]);
        // zone_pcr = 15 a second time: the same message, another byte form.
        let mut repeated = bytes.clone();
        repeated.extend_from_slice(&[0x50, 15]);
        // A non-minimal varint for format_version.
        let mut long_varint = vec![0x08, 0x80 | u8::try_from(FORMAT_VERSION).unwrap(), 0x00];
        long_varint.extend_from_slice(&bytes[2..]);
        for b in [unknown, repeated, long_varint] {
            assert_eq!(evidence::decode(&b).unwrap(), ev);
            let r = run(&b);
            assert_eq!(r.check, Check::Format);
            assert!(r.detail.contains("canonical form"), "{}", r.detail);
        }
    }
}
