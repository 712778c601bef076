//! Evidence assembly: a pure function from a snapshot of the log, one quote
//! and the batch of requests it answers to one encoded evidence per request.
//!
//! Each request's leaf binds its nonce to its zone's launch record
//! (`attestation_proto::evidence::leaf`); the quote's qualifying data is the
//! Merkle root of the batch's leaves, and each evidence carries its own
//! inclusion proof. A zone's evidence holds the host's event log with every
//! other zone's event data withheld (digests kept, so it still replays): a
//! zone learns nothing about its neighbours.

use attestation_proto::eventlog::{self, Event, ZoneEvent};
use attestation_proto::evidence::{self, Evidence, FORMAT_VERSION, MerkleProof, PcrValue};
use attestation_proto::merkle;

use crate::index::LogIndex;
use crate::tpm::{Quote, TpmKeys};

/// Why a request cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// The launch is not in the log, or it has ended.
    #[error("{0}")]
    NotMeasured(String),
}

/// The log as the ledger holds it, at the moment of one quote.
#[derive(Debug, Clone, Copy)]
pub struct LogView<'a> {
    /// The events.
    pub events: &'a [Event],
    /// Their owners.
    pub index: &'a LogIndex,
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
}

/// Checks that `launch_id` is a live launch of the log and computes its leaf.
pub fn prepare(view: &LogView<'_>, launch_id: &str, nonce: &[u8]) -> Result<Prepared, EvidenceError> {
    let Some(&idx) = view.index.launches.get(launch_id) else {
        return Err(EvidenceError::NotMeasured(
            "this zone has no launch event in the current TPM boot's event log (it was launched before the TPM \
             was reset); relaunch it to attest"
                .into(),
        ));
    };
    if view.index.stopped.contains(launch_id) {
        return Err(EvidenceError::NotMeasured("this zone's launch has ended (a stop event is logged)".into()));
    }
    let record = match view.events.get(idx).and_then(|e| e.zone_event()) {
        Some(ZoneEvent::Launch(d)) => d.to_vec(),
        _ => return Err(EvidenceError::NotMeasured("the zone's launch event is unreadable".into())),
    };
    let leaf = evidence::leaf(nonce, &record).map_err(|e| EvidenceError::NotMeasured(e.to_string()))?;
    Ok(Prepared { launch_id: launch_id.to_owned(), record, leaf })
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
    for ((event, owner), hidden) in view.events.iter().zip(&view.index.owners).zip(redacted) {
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
    let redacted: Vec<Vec<u8>> = view.events.iter().map(|e| e.redacted().encode()).collect();
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
            };
            evidence::encode(&ev)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use attestation_proto::eventlog::{TAG_ZONE_LAUNCH, TAG_ZONE_STOP};
    use attestation_proto::launch::{Artifact, LaunchRecord, RECORD_VERSION, StopRecord};

    fn launch(zone: &str, id: &str) -> Event {
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
        };
        Event::tagged(15, TAG_ZONE_LAUNCH, &r.encode())
    }

    fn stop(zone: &str, id: &str) -> Event {
        let r = StopRecord { version: RECORD_VERSION, zone: zone.into(), launch_id: id.into(), reason: "stopped".into(), stopped_unix_ms: 2 };
        Event::tagged(15, TAG_ZONE_STOP, &r.encode())
    }

    #[test]
    fn a_zone_sees_only_its_own_events_and_ended_launches_get_nothing() {
        let id_a = "a".repeat(32);
        let id_b = "b".repeat(32);
        let events = vec![launch("a", &id_a), launch("b", &id_b), stop("b", &id_b)];
        let index = LogIndex::of(&events);
        let keys = TpmKeys { ak_public: vec![1], ek_public: vec![2], ek_certificate: None, tcti: "t".into() };
        let view = LogView { events: &events, index: &index, pcr: 15, pcr_value: eventlog::replay(&events, 15), keys: &keys };
        assert!(matches!(prepare(&view, &id_b, &[7; 16]), Err(EvidenceError::NotMeasured(m)) if m.contains("ended")));
        assert!(prepare(&view, &"c".repeat(32), &[7; 16]).is_err());
        let batch = vec![prepare(&view, &id_a, &[7; 16]).unwrap(), prepare(&view, &id_a, &[8; 16]).unwrap()];
        let quote = Quote { attest: vec![], signature: vec![], reset_count: 0 };
        let out = assemble(&view, &quote, &batch);
        assert_eq!(out.len(), 2);
        let ev = attestation_proto::evidence::decode(&out[1]).unwrap();
        let logged = eventlog::parse(&ev.event_log, &eventlog::Limits::default()).unwrap();
        assert_eq!(eventlog::replay(&logged, 15), view.pcr_value, "the redacted log still replays");
        let zone_b = logged.iter().filter(|e| matches!(e.zone_event(), Some(ZoneEvent::Launch(d)) if d != batch[0].record.as_slice()));
        assert_eq!(zone_b.count(), 0, "zone b's records are withheld");
        assert_eq!(ev.batch.unwrap().leaf_index, 1);
    }
}
