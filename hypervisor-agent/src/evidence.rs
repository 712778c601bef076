//! Evidence issuance: one TPM quote answers a whole batch of requests.
//!
//! Each request's leaf binds its nonce to its zone's launch record
//! (`attestation_proto::evidence::leaf`); the quote's qualifying data is the
//! Merkle root of the batch's leaves, and each evidence carries its own
//! inclusion proof. A zone's evidence holds the host's event log with every
//! other zone's event data withheld (digests kept, so it still replays):
//! a zone learns nothing about its neighbours.

use attestation_proto::eventlog::{self, ZoneEvent};
use attestation_proto::evidence::{self, Evidence, FORMAT_VERSION, MerkleProof, PcrValue};
use attestation_proto::merkle;

use crate::ledger::{EvidenceRequest, LedgerError, State};

struct Pending {
    req: EvidenceRequest,
    record: Vec<u8>,
    leaf: [u8; 32],
}

/// The log as `launch_id`'s zone may see it; `redacted[i]` is event i's
/// redacted encoding (made once per batch).
fn redacted_log(state: &State, launch_id: &str, redacted: &[Vec<u8>]) -> Vec<u8> {
    let mut b = eventlog::header();
    for ((event, owner), hidden) in state.log.events().iter().zip(&state.owners).zip(redacted) {
        if owner.as_deref() == Some(launch_id) {
            b.extend_from_slice(&event.encode());
        } else {
            b.extend_from_slice(hidden);
        }
    }
    b
}

fn launch_record(state: &State, launch_id: &str) -> Result<Vec<u8>, LedgerError> {
    let Some(&idx) = state.launches.get(launch_id) else {
        return Err(LedgerError::NotMeasured(
            "this zone has no launch event in the current TPM boot's event log (it was launched before the TPM \
             was reset); relaunch it to attest"
                .into(),
        ));
    };
    if state.stopped.contains(launch_id) {
        return Err(LedgerError::NotMeasured("this zone's launch has ended (a stop event is logged)".into()));
    }
    match state.log.events().get(idx).and_then(|e| e.zone_event()) {
        Some(ZoneEvent::Launch(d)) => Ok(d.to_vec()),
        _ => Err(LedgerError::NotMeasured("the zone's launch event is unreadable".into())),
    }
}

/// Answers `batch` with one quote.
pub(crate) fn answer(state: &mut State, batch: Vec<EvidenceRequest>) {
    let mut pending = Vec::with_capacity(batch.len());
    for req in batch {
        let prepared = launch_record(state, &req.launch_id).and_then(|record| {
            let leaf = evidence::leaf(&req.nonce, &record).map_err(|e| LedgerError::NotMeasured(e.to_string()))?;
            Ok((record, leaf))
        });
        match prepared {
            Ok((record, leaf)) => pending.push(Pending { req, record, leaf }),
            Err(e) => {
                let _ = req.reply.send(Err(e));
            }
        }
    }
    if pending.is_empty() {
        return;
    }
    let leaves: Vec<[u8; 32]> = pending.iter().map(|p| p.leaf).collect();
    let quoted = merkle::root(&leaves)
        .map_err(|e| LedgerError::NotMeasured(e.to_string()))
        .and_then(|root| Ok(state.tpm.quote(&root, &[state.pcr])?))
        .and_then(|q| Ok((q, state.tpm.read_pcrs(&[state.pcr])?[0])));
    if !state.quote_delay.is_zero() {
        std::thread::sleep(state.quote_delay);
    }
    let (quote, pcr_value) = match quoted {
        Ok(v) => v,
        Err(e) => {
            let msg = e.to_string();
            for p in pending {
                let _ = p.req.reply.send(Err(LedgerError::NotMeasured(format!("quote failed: {msg}"))));
            }
            return;
        }
    };
    tracing::debug!(batch = pending.len(), "answered evidence requests with one quote");
    let redacted: Vec<Vec<u8>> = state.log.events().iter().map(|e| e.redacted().encode()).collect();
    for (i, p) in pending.into_iter().enumerate() {
        let proof = merkle::inclusion_proof(&leaves, i).unwrap_or_default();
        let ev = Evidence {
            format_version: FORMAT_VERSION,
            launch_record: p.record,
            quote_attest: quote.attest.clone(),
            quote_signature: quote.signature.clone(),
            pcrs: vec![PcrValue { index: state.pcr, sha256: pcr_value.to_vec() }],
            event_log: redacted_log(state, &p.req.launch_id, &redacted),
            ak_public: state.tpm.ak_public.clone(),
            ek_public: state.tpm.ek_public.clone(),
            batch: Some(MerkleProof {
                leaf_index: i as u64,
                tree_size: leaves.len() as u64,
                siblings: proof.iter().map(|s| s.to_vec()).collect(),
            }),
            zone_pcr: state.pcr,
        };
        let _ = p.req.reply.send(Ok(evidence::encode(&ev)));
    }
}
