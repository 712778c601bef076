//! What the ledger knows about the log without keeping it: the live
//! launches (launched, not stopped) with their records, the launch tags of
//! every launch of this TPM boot, and the owner of each event since the
//! latest checkpoint.
//!
//! Built from the whole log at start, where it also refuses a log that was
//! altered (a launch id logged twice, a stop of a launch that was never
//! logged, a zone event it cannot read), and kept up to date with every
//! event recorded.

use std::collections::{BTreeMap, HashSet};

use attestation_proto::eventlog::{Event, LAUNCH_TAG_LEN, ZoneEvent, launch_tag};
use attestation_proto::launch::{CheckpointRecord, LaunchRecord, StopRecord};
use sha2::{Digest, Sha256};

/// What an event of the log is, for the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A launch: its id and record bytes.
    Launch {
        /// The launch id.
        launch_id: String,
        /// The launch record's bytes.
        record: Vec<u8>,
    },
    /// A stop of launch `launch_id`.
    Stop {
        /// The launch id.
        launch_id: String,
    },
    /// A checkpoint.
    Checkpoint(CheckpointRecord),
}

/// Reads an event of the host's own log; `Err` names what is wrong.
pub fn kind_of(event: &Event) -> Result<Kind, String> {
    let z = event.zone_event().ok_or("an event that is not a zone event")?;
    if z.digest() != event.digest {
        return Err("an event whose digest is not the one its data says".into());
    }
    let check_tag = |tag: [u8; LAUNCH_TAG_LEN], id: &str| {
        if tag == launch_tag(id) { Ok(()) } else { Err(format!("an event of launch {id} with another launch's tag")) }
    };
    match z {
        ZoneEvent::Launch { launch_tag: t, record } => {
            let r = LaunchRecord::decode(record).map_err(|e| format!("an unreadable launch record: {e}"))?;
            check_tag(t, &r.launch_id)?;
            Ok(Kind::Launch { launch_id: r.launch_id, record: record.to_vec() })
        }
        ZoneEvent::Stop { launch_tag: t, record } => {
            let r = StopRecord::decode(record).map_err(|e| format!("an unreadable stop record: {e}"))?;
            check_tag(t, &r.launch_id)?;
            Ok(Kind::Stop { launch_id: r.launch_id })
        }
        ZoneEvent::Checkpoint { record } => {
            CheckpointRecord::decode(record).map(Kind::Checkpoint).map_err(|e| format!("an unreadable checkpoint: {e}"))
        }
        ZoneEvent::Redacted { .. } => Err("a redacted event (the host's own log is never redacted)".into()),
    }
}

/// The ledger's knowledge of the log.
#[derive(Debug, Default, Clone)]
pub struct LogIndex {
    /// Launched and not stopped: launch id → launch record bytes.
    pub live: BTreeMap<String, Vec<u8>>,
    /// The launch tags of every launch of this TPM boot.
    pub seen: HashSet<[u8; LAUNCH_TAG_LEN]>,
    /// Launch ids that have stopped (kept to dedup stops).
    pub stopped: HashSet<[u8; LAUNCH_TAG_LEN]>,
}

impl LogIndex {
    /// Takes a logged event into account.
    pub fn push(&mut self, kind: &Kind) -> Result<(), String> {
        match kind {
            Kind::Launch { launch_id, record } => {
                if !self.seen.insert(launch_tag(launch_id)) {
                    return Err(format!("launch id {launch_id} is logged twice"));
                }
                self.live.insert(launch_id.clone(), record.clone());
            }
            Kind::Stop { launch_id } => {
                if self.live.remove(launch_id).is_none() {
                    let tag = launch_tag(launch_id);
                    if !self.seen.contains(&tag) {
                        return Err(format!("a stop of launch {launch_id}, which was never launched"));
                    }
                    if !self.stopped.insert(tag) {
                        return Err(format!("launch {launch_id} is stopped twice"));
                    }
                } else {
                    self.stopped.insert(launch_tag(launch_id));
                }
            }
            Kind::Checkpoint(_) => {}
        }
        Ok(())
    }

    /// The live launches' record digests, sorted and distinct.
    pub fn live_digests(&self) -> Vec<[u8; 32]> {
        let mut live: Vec<[u8; 32]> = self.live.values().map(|r| Sha256::digest(r).into()).collect();
        live.sort_unstable();
        live.dedup();
        live
    }

    /// The checkpoint record of this moment (sequence `seq`, `events_before` events logged).
    pub fn checkpoint_record(&self, seq: u64, events_before: u64) -> CheckpointRecord {
        CheckpointRecord::new(seq, events_before, &self.live_digests())
    }
}

/// The launch id an event belongs to (launches and stops).
pub fn owner(kind: &Kind) -> Option<&str> {
    match kind {
        Kind::Launch { launch_id, .. } | Kind::Stop { launch_id } => Some(launch_id),
        Kind::Checkpoint(_) => None,
    }
}
