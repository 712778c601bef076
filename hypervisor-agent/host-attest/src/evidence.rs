//! Evidence assembly: a pure function from a snapshot of the ledger (the
//! latest checkpoint, the events since, the live launches), one quote and the
//! batch of requests it answers to one encoded evidence per request.
//!
//! Each request's leaf binds its nonce to its zone's launch record
//! (`attestation_proto::evidence::leaf`); the quote's qualifying data is the
//! Merkle root of the batch's leaves, and each evidence carries its own
//! inclusion proof. A zone's evidence holds the events since the latest
//! checkpoint with every other zone's record withheld (the redacted events
//! keep their digests and launch tags, so the log still replays and the zone
//! knows none of its own events is hidden): a zone learns nothing about its
//! neighbours, and the evidence's size does not grow with the host's history.

use std::collections::BTreeMap;

use attestation_proto::eventlog::{self, Event};
use attestation_proto::evidence::{self, Checkpoint, Evidence, FORMAT_VERSION, MerkleProof, PcrValue};
use attestation_proto::launch::{CheckpointRecord, LaunchRecord};
use sha2::Digest as _;
use attestation_proto::merkle;

use crate::tpm::{Quote, TpmKeys};

/// Why a request cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// The launch is not in the log, or it has ended.
    #[error("{0}")]
    NotMeasured(String),
    /// The logged launch is not what the daemon recorded for the asking zone.
    #[error("{0}")]
    Mismatch(String),
}

/// The latest checkpoint: its event and the TPM's quote right after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Its sequence number.
    pub seq: u64,
    /// The zone PCR before the checkpoint event.
    pub pcr_before: [u8; 32],
    /// The checkpoint event.
    pub event: Event,
    /// The quote (TPMS_ATTEST and TPMT_SIGNATURE).
    pub quote: Quote,
    /// The live launches' record digests at the checkpoint, sorted (the
    /// leaves of its live-set root).
    pub live: Vec<[u8; 32]>,
}

/// The ledger as it is at the moment of one quote.
#[derive(Debug, Clone, Copy)]
pub struct LogView<'a> {
    /// The events after the latest checkpoint (all of them without one).
    pub since: &'a [Event],
    /// Per event of `since`: the launch it belongs to.
    pub owners: &'a [Option<String>],
    /// Launched and not stopped: launch id → launch record bytes.
    pub live: &'a BTreeMap<String, Vec<u8>>,
    /// The latest checkpoint, if any.
    pub checkpoint: Option<&'a StoredCheckpoint>,
    /// The zone PCR.
    pub pcr: u32,
    /// Its value (the log's replay, which the TPM holds).
    pub pcr_value: [u8; 32],
    /// The TPM's keys.
    pub keys: &'a TpmKeys,
}

/// One request, ready to be quoted: its launch record and leaf.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The launch the evidence is about.
    pub launch_id: String,
    /// The launch record's bytes, as logged.
    pub record: Vec<u8>,
    /// The request's Merkle leaf.
    pub leaf: [u8; 32],
    /// When the launch is from before the checkpoint: its live-set proof.
    pub live_proof: Option<MerkleProof>,
}

/// What the daemon recorded for the zone asking: its name and the bytes of
/// the launch record it logged for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The zone's name.
    pub zone: String,
    /// Its launch record, as the daemon recorded it.
    pub record: Vec<u8>,
}

/// Checks that `launch_id` is a live launch of the log, logged for exactly
/// what the daemon recorded for the zone (`expected`), and computes its leaf.
pub fn prepare(view: &LogView<'_>, launch_id: &str, expected: &Expected, nonce: &[u8]) -> Result<Prepared, EvidenceError> {
    let Some(record) = view.live.get(launch_id) else {
        return Err(EvidenceError::NotMeasured(
            "this zone's launch is not a live launch of the current TPM boot's event log (it ended, or it was launched \
             before the TPM was reset); relaunch it to attest"
                .into(),
        ));
    };
    let logged = LaunchRecord::decode(record).map_err(|e| EvidenceError::Mismatch(format!("the logged launch record is unreadable: {e}")))?;
    if logged.zone != expected.zone {
        return Err(EvidenceError::Mismatch(format!(
            "the logged launch {launch_id} belongs to zone {:?}, not to zone {:?} that asks (its record was altered)",
            logged.zone, expected.zone
        )));
    }
    if *record != expected.record {
        return Err(EvidenceError::Mismatch(format!(
            "the logged launch record of {launch_id} is not the one the daemon recorded for zone {:?} (its record was altered)",
            expected.zone
        )));
    }
    let leaf = evidence::leaf(nonce, record).map_err(|e| EvidenceError::NotMeasured(e.to_string()))?;
    // Launched after the checkpoint: its event is in the log the zone gets.
    // Before it: the checkpoint's live set must hold it, with a proof.
    let in_log = view.since.iter().zip(view.owners).any(|(e, o)| {
        o.as_deref() == Some(launch_id) && matches!(e.zone_event(), Some(eventlog::ZoneEvent::Launch { .. }))
    });
    let live_proof = match (in_log, view.checkpoint) {
        (true, _) => None,
        (false, Some(c)) => {
            let digest: [u8; 32] = sha2::Sha256::digest(record).into();
            let index = c.live.binary_search(&digest).map_err(|_| {
                EvidenceError::NotMeasured(format!("launch {launch_id} is neither in the log since the checkpoint nor live at it"))
            })?;
            let leaves = CheckpointRecord::live_leaves(&c.live);
            let siblings = merkle::inclusion_proof(&leaves, index).map_err(|e| EvidenceError::NotMeasured(e.to_string()))?;
            Some(MerkleProof { leaf_index: index as u64, tree_size: leaves.len() as u64, siblings: siblings.iter().map(|s| s.to_vec()).collect() })
        }
        (false, None) => return Err(EvidenceError::NotMeasured(format!("launch {launch_id} is live but not in the log"))),
    };
    Ok(Prepared { launch_id: launch_id.to_owned(), record: record.clone(), leaf, live_proof })
}

/// The Merkle root a batch's quote must carry as qualifying data.
pub fn batch_root(batch: &[Prepared]) -> Result<[u8; 32], EvidenceError> {
    let leaves: Vec<[u8; 32]> = batch.iter().map(|p| p.leaf).collect();
    merkle::root(&leaves).map_err(|e| EvidenceError::NotMeasured(e.to_string()))
}

/// The log as `launch_id`'s zone may see it; `redacted[i]` is event i's
/// redacted encoding (made once per batch).
fn redacted_log(view: &LogView<'_>, launch_id: &str, redacted: &[Vec<u8>]) -> Vec<u8> {
    let mut b = eventlog::header();
    for ((event, owner), hidden) in view.since.iter().zip(view.owners).zip(redacted) {
        if owner.as_deref() == Some(launch_id) {
            b.extend_from_slice(&event.encode());
        } else {
            b.extend_from_slice(hidden);
        }
    }
    b
}

/// One encoded evidence per request of `batch`, all answered by `quote`
/// (made over [`batch_root`] of the same batch).
pub fn assemble(view: &LogView<'_>, quote: &Quote, batch: &[Prepared]) -> Vec<Vec<u8>> {
    let leaves: Vec<[u8; 32]> = batch.iter().map(|p| p.leaf).collect();
    let redacted: Vec<Vec<u8>> = view.since.iter().map(|e| e.redacted().encode()).collect();
    let checkpoint = view.checkpoint.map(|c| Checkpoint {
        quote_attest: c.quote.attest.clone(),
        quote_signature: c.quote.signature.clone(),
        pcr_before: c.pcr_before.to_vec(),
        event: c.event.encode(),
        live_proof: None,
    });
    batch
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let proof = merkle::inclusion_proof(&leaves, i).unwrap_or_default();
            let ev = Evidence {
                format_version: FORMAT_VERSION,
                launch_record: p.record.clone(),
                quote_attest: quote.attest.clone(),
                quote_signature: quote.signature.clone(),
                pcrs: vec![PcrValue { index: view.pcr, sha256: view.pcr_value.to_vec() }],
                event_log: redacted_log(view, &p.launch_id, &redacted),
                ak_public: view.keys.ak_public.clone(),
                ek_public: view.keys.ek_public.clone(),
                batch: Some(MerkleProof {
                    leaf_index: i as u64,
                    tree_size: leaves.len() as u64,
                    siblings: proof.iter().map(|s| s.to_vec()).collect(),
                }),
                zone_pcr: view.pcr,
                checkpoint: checkpoint.clone().map(|c| Checkpoint { live_proof: p.live_proof.clone(), ..c }),
                ek_certificate: view.keys.ek_certificate.clone().unwrap_or_default(),
            };
            evidence::encode(&ev)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use attestation_proto::eventlog::{TAG_ZONE_LAUNCH, TAG_ZONE_STOP, ZoneEvent};
    use attestation_proto::launch::{Artifact, RECORD_VERSION, StopRecord};

    fn launch(zone: &str, id: &str) -> (Event, Vec<u8>) {
        let r = LaunchRecord {
            version: RECORD_VERSION,
            host: "h".into(),
            zone: zone.into(),
            launch_id: id.into(),
            kernel: Artifact::measure("/k", b"k"),
            initrd: None,
            cmdline: "c".into(),
            cmdline_sha256: attestation_proto::launch::sha256_hex(b"c"),
            vcpus: 1,
            memory_mib: 64,
            devices: vec![],
            launched_unix_ms: 1,
            rootfs: None,
        };
        let bytes = r.encode();
        (Event::zone(15, TAG_ZONE_LAUNCH, id, &bytes), bytes)
    }

    fn stop(zone: &str, id: &str) -> Event {
        let r = StopRecord { version: RECORD_VERSION, zone: zone.into(), launch_id: id.into(), reason: "stopped".into(), stopped_unix_ms: 2 };
        Event::zone(15, TAG_ZONE_STOP, id, &r.encode())
    }

    #[test]
    fn a_zone_sees_only_its_own_events_and_gets_only_its_own_record() {
        let (id_a, id_b) = ("a".repeat(32), "b".repeat(32));
        let (la, ra) = launch("a", &id_a);
        let (lb, _) = launch("b", &id_b);
        let events = vec![la, lb, stop("b", &id_b)];
        let owners = vec![Some(id_a.clone()), Some(id_b.clone()), Some(id_b.clone())];
        let live: BTreeMap<String, Vec<u8>> = [(id_a.clone(), ra.clone())].into();
        let keys = TpmKeys { ak_public: vec![1], ek_public: vec![2], ek_certificate: None, ek_chain: Vec::new(), tcti: "t".into(), software: true };
        let view = LogView {
            since: &events,
            owners: &owners,
            live: &live,
            checkpoint: None,
            pcr: 15,
            pcr_value: eventlog::replay(&events, 15),
            keys: &keys,
        };
        let a = Expected { zone: "a".into(), record: ra.clone() };
        assert!(matches!(prepare(&view, &id_b, &a, &[7; 16]), Err(EvidenceError::NotMeasured(m)) if m.contains("ended")));
        // Zone b's channel presenting zone a's launch id (records swapped on disk): refused.
        let b = Expected { zone: "b".into(), record: ra.clone() };
        assert!(matches!(prepare(&view, &id_a, &b, &[7; 16]), Err(EvidenceError::Mismatch(m)) if m.contains("belongs to zone")));
        let batch = vec![prepare(&view, &id_a, &a, &[7; 16]).unwrap(), prepare(&view, &id_a, &a, &[8; 16]).unwrap()];
        let quote = Quote { attest: vec![], signature: vec![], reset_count: 0 };
        let out = assemble(&view, &quote, &batch);
        assert_eq!(out.len(), 2);
        let ev = attestation_proto::evidence::decode(&out[1]).unwrap();
        let logged = eventlog::parse(&ev.event_log, &eventlog::Limits::default()).unwrap();
        assert_eq!(eventlog::replay(&logged, 15), view.pcr_value, "the redacted log still replays");
        let readable_of_b = logged.iter().filter(|e| matches!(e.zone_event(), Some(ZoneEvent::Launch { record, .. }) if record != ra.as_slice())).count();
        assert_eq!(readable_of_b, 0, "zone b's records are withheld");
        assert_eq!(ev.batch.unwrap().leaf_index, 1);
    }
}
