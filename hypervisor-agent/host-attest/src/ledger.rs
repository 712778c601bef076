//! The ledger: the event log and the zone PCR, kept in step by one thread
//! that owns both the TPM and the log.
//!
//! - **Record** (zone launches and stops): write the intent (the events'
//!   exact bytes), append the events to the log and fsync, *then* extend the
//!   PCR, then clear the intent. Records that queue up while the thread is
//!   busy are committed together (one intent, one fsync). A crash between
//!   append and extend leaves the log ahead of the PCR; at the next start
//!   the ledger completes the extend only if the events past the PCR are
//!   exactly the recorded intent. Anything else (the PCR extended by someone
//!   else, events appended to the file by someone else, a log from another
//!   TPM, a launch id logged twice) is refused with an explanation: the
//!   daemon does not start.
//! - **Checkpoints**: every [`CHECKPOINT_EVERY`] events the ledger appends a
//!   checkpoint event listing the live launches and has the TPM quote the
//!   PCR right after it (`checkpoint.json`). Evidence carries the latest
//!   checkpoint and only the events since, so its size and the verifier's
//!   work are bounded whatever the host's history; the ledger keeps only
//!   those events (and the live launches) in memory.
//! - **Evidence**: requests that arrive while a quote is being made queue
//!   up; the next quote answers all of them at once (`crate::evidence`).
//!   Because the same thread appends and quotes, each quote's log snapshot
//!   is exactly what the PCR holds.
//! - A new TPM boot (the reset count in a quote changed) starts a new log;
//!   the previous one is archived.
//!
//! The ledger talks to the TPM through [`TpmOps`], so crash recovery and
//! batching are unit-tested with a software stand-in. It keeps the PCR's
//! value itself (the log's replay, checked against the TPM at start and
//! advanced with every extend), so evidence needs no PCR read.
//!
//! Fault injection for the crash-consistency tests (test builds only):
//! `HYPERVISOR_AGENT_FAULT=before-append|after-append|after-extend` aborts
//! the daemon at that point of the next record.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use attestation_proto::eventlog::{Event, TAG_ZONE_LAUNCH, TAG_ZONE_STOP};
use attestation_proto::launch::{CheckpointRecord, LaunchRecord, MAX_RECORD_LEN, StopRecord};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::eventlog::{LogError, LogMeta, LogStore};
use crate::evidence::{self, EvidenceError, Expected, LogView, StoredCheckpoint};
use crate::index::{Kind, LogIndex, kind_of, owner};
use crate::settings::TpmSettings;
use crate::tpm::{Quote, Tpm, TpmError, TpmOps, swtpm::Swtpm};

/// Events between two checkpoints: evidence carries at most this many.
pub const CHECKPOINT_EVERY: usize = 256;
/// Largest log `snapshot` returns whole; a longer one is returned from the
/// latest checkpoint on.
pub const MAX_SNAPSHOT_LOG: u64 = 4 * 1024 * 1024;
/// Records committed together at most.
const MAX_GROUP: usize = 64;

/// The fault-injection variable (test builds only).
#[cfg(feature = "test-hooks")]
pub const FAULT_ENV: &str = "HYPERVISOR_AGENT_FAULT";

/// A ledger failure.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The TPM failed.
    #[error(transparent)]
    Tpm(#[from] TpmError),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The log and the PCR disagree in a way that cannot be repaired.
    #[error("{0}")]
    Irreconcilable(String),
    /// The zone has no live launch in the current log.
    #[error("{0}")]
    NotMeasured(String),
    /// What the log holds for the zone is not what the daemon recorded.
    #[error("{0}")]
    Mismatch(String),
    /// A record the log cannot take (too large, a launch id already logged).
    #[error("{0}")]
    Refused(String),
    /// An earlier failure left the log and the PCR out of step.
    #[error("the event log and PCR are out of step after an earlier failure ({0}); restart the daemon to reconcile them")]
    Poisoned(String),
    /// The ledger thread is gone.
    #[error("the TPM thread has stopped; restart the daemon")]
    Gone,
}

impl From<EvidenceError> for LedgerError {
    fn from(e: EvidenceError) -> Self {
        match e {
            EvidenceError::NotMeasured(m) => Self::NotMeasured(m),
            EvidenceError::Mismatch(m) => Self::Mismatch(m),
        }
    }
}

/// What the ledger holds right now.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The log's bytes: whole, or (when it is larger than [`MAX_SNAPSHOT_LOG`])
    /// from the latest checkpoint on.
    pub log: Vec<u8>,
    /// The PCR value the returned log replays from (zero: the whole log).
    pub start_value: [u8; 32],
    /// Events of the log not in the returned bytes.
    pub events_before: u64,
    /// Events of the whole log.
    pub events: u64,
    /// The zone PCR.
    pub pcr: u32,
    /// Its value in the TPM.
    pub pcr_value: [u8; 32],
    /// The TPM boot the log belongs to.
    pub reset_count: u32,
    /// The latest checkpoint's sequence number, if any.
    pub checkpoint_seq: Option<u64>,
    /// TPMT_PUBLIC of the AK.
    pub ak_public: Vec<u8>,
    /// TPMT_PUBLIC of the EK.
    pub ek_public: Vec<u8>,
    /// The EK certificate, if any.
    pub ek_certificate: Option<Vec<u8>>,
    /// Which TPM.
    pub tcti: String,
    /// Whether it is a software TPM (the embedded swtpm).
    pub software: bool,
}

/// One pending evidence request.
struct EvidenceRequest {
    launch_id: String,
    expected: Expected,
    nonce: Vec<u8>,
    reply: oneshot::Sender<Result<Vec<u8>, LedgerError>>,
}

enum Request {
    Record { event: Event, reply: mpsc::SyncSender<Result<(), LedgerError>> },
    Evidence(EvidenceRequest),
    Snapshot { reply: mpsc::SyncSender<Result<Snapshot, LedgerError>> },
    Activate { id_object: Vec<u8>, encrypted_secret: Vec<u8>, reply: oneshot::Sender<Result<Vec<u8>, LedgerError>> },
    #[cfg(feature = "test-hooks")]
    Bulk { events: Vec<Event>, reply: mpsc::SyncSender<Result<(), LedgerError>> },
}

/// Handle to the ledger thread.
#[derive(Debug, Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Request>,
    /// The TPM's public keys (fixed for the ledger's life).
    keys: std::sync::Arc<crate::tpm::TpmKeys>,
}

/// The latest checkpoint as kept in `checkpoint.json`.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointFile {
    seq: u64,
    pcr_before: String,
    event: String,
    quote_attest: String,
    quote_signature: String,
}

impl CheckpointFile {
    fn of(c: &StoredCheckpoint) -> Self {
        Self {
            seq: c.seq,
            pcr_before: hex::encode(c.pcr_before),
            event: hex::encode(c.event.encode()),
            quote_attest: hex::encode(&c.quote.attest),
            quote_signature: hex::encode(&c.quote.signature),
        }
    }

    /// The stored checkpoint, if it is the one of `event`.
    fn matching(&self, event: &Event, pcr_before: [u8; 32], live: Vec<[u8; 32]>) -> Option<StoredCheckpoint> {
        let same = hex::decode(&self.event).ok()? == event.encode() && hex::decode(&self.pcr_before).ok()? == pcr_before;
        same.then(|| StoredCheckpoint {
            seq: self.seq,
            pcr_before,
            event: event.clone(),
            quote: Quote {
                attest: hex::decode(&self.quote_attest).unwrap_or_default(),
                signature: hex::decode(&self.quote_signature).unwrap_or_default(),
                reset_count: 0,
            },
            live,
        })
    }
}

/// The state the ledger thread owns.
struct State {
    tpm: Box<dyn TpmOps>,
    log: LogStore,
    pcr: u32,
    /// The PCR's value: the log's replay, in step with the TPM.
    pcr_value: [u8; 32],
    reset_count: u32,
    index: LogIndex,
    /// Events after the latest checkpoint event (all events without one).
    since: Vec<Event>,
    /// Per event of `since`: the launch it belongs to.
    owners: Vec<Option<String>>,
    /// Events of the whole log.
    events_total: u64,
    checkpoint: Option<StoredCheckpoint>,
    max_batch: usize,
    quote_delay: Duration,
    poisoned: Option<String>,
}

#[cfg(feature = "test-hooks")]
fn fault(point: &str) {
    if std::env::var(FAULT_ENV).is_ok_and(|v| v == point) {
        tracing::error!(point, "fault injection: aborting");
        std::process::abort();
    }
}

#[cfg(not(feature = "test-hooks"))]
fn fault(_point: &str) {}

/// `SHA256(value ‖ digest)`: a PCR extend.
fn extended(value: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(value);
    h.update(digest);
    h.finalize().into()
}

impl State {
    /// Appends and extends `events` (already admitted) as one group.
    fn commit(&mut self, events: &[(Event, Kind)]) -> Result<(), LedgerError> {
        if let Some(why) = &self.poisoned {
            return Err(LedgerError::Poisoned(why.clone()));
        }
        let plain: Vec<Event> = events.iter().map(|(e, _)| e.clone()).collect();
        self.log.write_intent(&plain)?;
        fault("before-append");
        self.log.append(&plain)?;
        fault("after-append");
        for (event, kind) in events {
            if let Err(e) = self.tpm.extend(self.pcr, &event.digest) {
                // The events are in the log but not (all) in the PCR: the
                // next start completes the extends from the intent; until
                // then nothing more is recorded.
                self.poisoned = Some(e.to_string());
                return Err(e.into());
            }
            self.pcr_value = extended(&self.pcr_value, &event.digest);
            self.index.push(kind).map_err(LedgerError::Irreconcilable)?;
            self.since.push(event.clone());
            self.owners.push(owner(kind).map(str::to_owned));
            self.events_total += 1;
        }
        fault("after-extend");
        self.log.clear_intent();
        Ok(())
    }

    /// Records a batch of requested events: each is admitted (or refused, or
    /// a no-op) on its own, the admitted ones are committed together.
    fn record(&mut self, requests: Vec<(Event, mpsc::SyncSender<Result<(), LedgerError>>)>) {
        let mut group = Vec::with_capacity(requests.len());
        let mut replies = Vec::with_capacity(requests.len());
        // What this group adds, so that it is admitted against the log and against itself.
        let mut launching = std::collections::HashSet::new();
        let mut stopping = std::collections::HashSet::new();
        for (event, reply) in requests {
            let kind = match kind_of(&event) {
                Ok(k) => k,
                Err(e) => {
                    let _ = reply.send(Err(LedgerError::Refused(e)));
                    continue;
                }
            };
            let admit = match &kind {
                Kind::Launch { launch_id, .. } => {
                    let tag = attestation_proto::eventlog::launch_tag(launch_id);
                    if self.index.seen.contains(&tag) || !launching.insert(launch_id.clone()) {
                        Err(format!("launch id {launch_id} is already in the log"))
                    } else {
                        Ok(true)
                    }
                }
                // A stop closes a live launch once; anything else has nothing to close.
                Kind::Stop { launch_id } => Ok((self.index.live.contains_key(launch_id) || launching.contains(launch_id))
                    && stopping.insert(launch_id.clone())),
                Kind::Checkpoint(_) => Err("checkpoints are the ledger's own".into()),
            };
            match admit {
                Ok(true) => {
                    group.push((event, kind));
                    replies.push(reply);
                }
                Ok(false) => {
                    let _ = reply.send(Ok(()));
                }
                Err(e) => {
                    let _ = reply.send(Err(LedgerError::Refused(e)));
                }
            }
        }
        if group.is_empty() {
            return;
        }
        let result = self.commit(&group).and_then(|()| self.maybe_checkpoint());
        for r in replies {
            let _ = r.send(match &result {
                Ok(()) => Ok(()),
                // Every record of the group failed the same way.
                Err(LedgerError::Poisoned(m)) => Err(LedgerError::Poisoned(m.clone())),
                Err(e) => Err(LedgerError::Irreconcilable(e.to_string())),
            });
        }
    }

    fn maybe_checkpoint(&mut self) -> Result<(), LedgerError> {
        if self.since.len() >= CHECKPOINT_EVERY { self.make_checkpoint() } else { Ok(()) }
    }

    /// Appends a checkpoint event and has the TPM quote the PCR right after it.
    fn make_checkpoint(&mut self) -> Result<(), LedgerError> {
        let seq = self.checkpoint.as_ref().map_or(1, |c| c.seq + 1);
        let live = self.index.live_digests();
        let record = CheckpointRecord::new(seq, self.events_total, &live);
        let event = Event::checkpoint(self.pcr, &record.encode());
        let pcr_before = self.pcr_value;
        self.commit(&[(event.clone(), Kind::Checkpoint(record))])?;
        self.quote_checkpoint(seq, pcr_before, event, live)
    }

    fn quote_checkpoint(&mut self, seq: u64, pcr_before: [u8; 32], event: Event, live: Vec<[u8; 32]>) -> Result<(), LedgerError> {
        let data = attestation_proto::evidence::checkpoint_qualifying_data(&event.digest);
        let quote = self.tpm.quote(&data, &[self.pcr])?;
        let cp = StoredCheckpoint { seq, pcr_before, event, quote, live };
        let path = self.log.dir().join("checkpoint.json");
        let json = serde_json::to_vec(&CheckpointFile::of(&cp)).unwrap_or_default();
        crate::durable::write_atomic(&path, &json, 0o600).map_err(|source| LogError::Io { path, source })?;
        self.checkpoint = Some(cp);
        self.since.clear();
        self.owners.clear();
        tracing::debug!(seq, events = self.events_total, "checkpoint");
        Ok(())
    }

    fn snapshot(&self) -> Result<Snapshot, LedgerError> {
        let keys = self.tpm.keys();
        let (log, start_value, events_before) = match &self.checkpoint {
            Some(c) if self.log.len() > MAX_SNAPSHOT_LOG => {
                let mut b = attestation_proto::eventlog::header();
                for e in &self.since {
                    b.extend_from_slice(&e.encode());
                }
                let start = extended(&c.pcr_before, &c.event.digest);
                (b, start, self.events_total - self.since.len() as u64)
            }
            _ => (self.log.read_all()?, [0; 32], 0),
        };
        Ok(Snapshot {
            log,
            start_value,
            events_before,
            events: self.events_total,
            pcr: self.pcr,
            pcr_value: self.pcr_value,
            reset_count: self.reset_count,
            checkpoint_seq: self.checkpoint.as_ref().map(|c| c.seq),
            ak_public: keys.ak_public.clone(),
            ek_public: keys.ek_public.clone(),
            ek_certificate: keys.ek_certificate.clone(),
            tcti: keys.tcti.clone(),
            software: keys.software,
        })
    }

    fn view(&self) -> LogView<'_> {
        LogView {
            since: &self.since,
            owners: &self.owners,
            live: &self.index.live,
            checkpoint: self.checkpoint.as_ref(),
            pcr: self.pcr,
            pcr_value: self.pcr_value,
            keys: self.tpm.keys(),
        }
    }

    /// Answers `batch` with one quote.
    fn answer(&mut self, batch: Vec<EvidenceRequest>) {
        let mut prepared = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        {
            let view = self.view();
            for req in batch {
                match evidence::prepare(&view, &req.launch_id, &req.expected, &req.nonce) {
                    Ok(p) => {
                        prepared.push(p);
                        replies.push(req.reply);
                    }
                    Err(e) => {
                        let _ = req.reply.send(Err(e.into()));
                    }
                }
            }
        }
        if prepared.is_empty() {
            return;
        }
        let quoted = evidence::batch_root(&prepared)
            .map_err(LedgerError::from)
            .and_then(|root| Ok(self.tpm.quote(&root, &[self.pcr])?));
        if !self.quote_delay.is_zero() {
            std::thread::sleep(self.quote_delay);
        }
        let quote = match quoted {
            Ok(q) => q,
            Err(e) => {
                let msg = e.to_string();
                for r in replies {
                    let _ = r.send(Err(LedgerError::NotMeasured(format!("quote failed: {msg}"))));
                }
                return;
            }
        };
        tracing::debug!(batch = prepared.len(), "answered evidence requests with one quote");
        for (reply, ev) in replies.into_iter().zip(evidence::assemble(&self.view(), &quote, &prepared)) {
            let _ = reply.send(Ok(ev));
        }
    }
}

/// Picks the TPM: the device if present, else the embedded swtpm (unless
/// `tpm.require_device`), which is private to this thread's network namespace.
fn open_tpm(settings: &TpmSettings, state_dir: &Path) -> Result<Tpm, LedgerError> {
    let configured = settings.ek_chain_path.as_deref().map(read_ek_chain).transpose()?;
    let mut tpm = open_tpm_alone(settings, state_dir)?;
    let chain = match configured {
        Some(chain) => chain,
        // The embedded swtpm's EK certificate is issued by its local CA's
        // issuing certificate, signed by that CA's root.
        None if tpm.keys().software => {
            let issuer = state_dir.join("swtpm/localca/issuercert.pem");
            std::fs::read(&issuer).ok().and_then(|b| attestation_proto::ek::certificates_of(&b).ok()).unwrap_or_default()
        }
        None => Vec::new(),
    };
    tpm.set_ek_chain(chain);
    Ok(tpm)
}

/// Reads `tpm.ek_chain_path`: PEM certificates.
fn read_ek_chain(path: &Path) -> Result<Vec<Vec<u8>>, LedgerError> {
    let bytes = std::fs::read(path).map_err(|e| {
        LedgerError::Irreconcilable(format!("cannot read tpm.ek_chain_path {}: {e}; fix the path or remove the setting", path.display()))
    })?;
    attestation_proto::ek::certificates_of(&bytes).map_err(|e| {
        LedgerError::Irreconcilable(format!(
            "tpm.ek_chain_path {}: {e}; it must hold the PEM certificates between the EK certificate and its root",
            path.display()
        ))
    })
}

fn open_tpm_alone(settings: &TpmSettings, state_dir: &Path) -> Result<Tpm, LedgerError> {
    let key_dir = state_dir.join("tpm");
    if settings.device.exists() {
        let tcti = format!("device:{}", settings.device.display());
        tracing::info!(%tcti, "using the host TPM");
        return Ok(Tpm::open(&tcti, &key_dir, false)?);
    }
    if settings.require_device {
        return Err(LedgerError::Irreconcilable(format!(
            "there is no TPM device at {} and tpm.require_device = true: refusing to use a software TPM. Give the \
             host a TPM (or point tpm.device at it), or set tpm.require_device = false to use the embedded swtpm",
            settings.device.display()
        )));
    }
    let swtpm = Swtpm::new(&state_dir.join("swtpm"), settings.swtpm_port);
    tracing::warn!(
        device = %settings.device.display(),
        "no TPM device: using the embedded swtpm, a SOFTWARE TPM (evidence from it proves only what this host's \
         software says; its EK certificate is issued by this daemon's own CA, swtpm-localca)"
    );
    swtpm.ensure_running()?;
    Ok(Tpm::open(&swtpm.tcti(), &key_dir, true)?)
}

/// Opens the log in `log_dir` against `tpm` and reconciles them (on the
/// ledger thread: a TSS context stays on the thread that made it).
fn open(mut tpm: Box<dyn TpmOps>, settings: &TpmSettings, log_dir: &Path) -> Result<State, LedgerError> {
    // The reset count comes with any quote's clock info.
    let reset_count = tpm.quote(&[0; 32], &[settings.pcr])?.reset_count;
    let (log, events, pcr_value) = reconcile(tpm.as_mut(), log_dir, settings.pcr, reset_count)?;
    let bad = |i: usize, e: String| {
        LedgerError::Irreconcilable(format!(
            "the event log in {} was altered or is not this daemon's: event {} is {e}. Zones of this TPM boot cannot \
             attest; reboot the host (or, for the embedded swtpm, stop it) to start a new log.",
            log_dir.display(),
            i + 1
        ))
    };
    // What the ledger keeps: the live launches, and the events since the latest checkpoint.
    let mut index = LogIndex::default();
    let mut kinds = Vec::with_capacity(events.len());
    // The live set at the latest checkpoint (its record holds only the root).
    let mut live_at_checkpoint = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let kind = kind_of(e).map_err(|m| bad(i, m))?;
        if let Kind::Checkpoint(r) = &kind {
            let live = index.live_digests();
            if r.live_count != live.len() as u64 || r.live_root != hex::encode(CheckpointRecord::live_root(&live)) {
                return Err(bad(i, "a checkpoint whose live launches are not the log's".into()));
            }
            live_at_checkpoint = live;
        }
        index.push(&kind).map_err(|m| bad(i, m))?;
        kinds.push(kind);
    }
    let last_cp = kinds.iter().rposition(|k| matches!(k, Kind::Checkpoint(_)));
    let start = last_cp.map_or(0, |p| p + 1);
    let since: Vec<Event> = events[start..].to_vec();
    let owners: Vec<Option<String>> = kinds[start..].iter().map(|k| owner(k).map(str::to_owned)).collect();
    #[cfg(feature = "test-hooks")]
    let quote_delay = Duration::from_millis(settings.simulated_quote_latency_ms);
    #[cfg(not(feature = "test-hooks"))]
    let quote_delay = Duration::ZERO;
    let mut state = State {
        tpm,
        log,
        pcr: settings.pcr,
        pcr_value,
        reset_count,
        index,
        since,
        owners,
        events_total: events.len() as u64,
        checkpoint: None,
        max_batch: settings.max_batch,
        quote_delay,
        poisoned: None,
    };
    if let Some(p) = last_cp {
        let pcr_before = attestation_proto::eventlog::replay(&events[..p], settings.pcr);
        let stored = std::fs::read(log_dir.join("checkpoint.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<CheckpointFile>(&b).ok())
            .and_then(|f| f.matching(&events[p], pcr_before, live_at_checkpoint.clone()));
        match (stored, &kinds[p]) {
            (Some(c), _) => state.checkpoint = Some(c),
            // Interrupted between the checkpoint's extend and its quote: quote it now.
            (None, Kind::Checkpoint(r)) if p + 1 == events.len() => {
                state.quote_checkpoint(r.seq, pcr_before, events[p].clone(), live_at_checkpoint)?;
            }
            // Its quote is lost and events followed: the next checkpoint replaces it.
            (None, _) => {
                state.since = events[..].to_vec();
                state.owners = kinds.iter().map(|k| owner(k).map(str::to_owned)).collect();
                state.make_checkpoint()?;
            }
        }
    }
    drop((events, kinds));
    state.maybe_checkpoint()?;
    Ok(state)
}

/// Brings the log and the PCR into step, or explains why they cannot be;
/// returns the log, its events and the PCR's value.
fn reconcile(
    tpm: &mut dyn TpmOps,
    dir: &Path,
    pcr: u32,
    reset_count: u32,
) -> Result<(LogStore, Vec<Event>, [u8; 32]), LedgerError> {
    let value = tpm.read_pcr(pcr)?;
    let fresh = |tpm_value: [u8; 32]| -> Result<(LogStore, Vec<Event>, [u8; 32]), LedgerError> {
        if tpm_value != [0; 32] {
            return Err(LedgerError::Irreconcilable(format!(
                "PCR {pcr} already holds {} in this TPM boot but there is no event log for it here: another \
                 program extends PCR {pcr}, or this state directory's log was lost. Choose a PCR nothing else \
                 uses (tpm.pcr in the config) or reboot the host to start a new log.",
                hex::encode(tpm_value)
            )));
        }
        Ok((LogStore::create(dir, LogMeta { reset_count, pcr })?, Vec::new(), tpm_value))
    };
    let Some((log, events)) = LogStore::open(dir)? else {
        tracing::info!(pcr, reset_count, "starting the event log");
        return fresh(value);
    };
    let meta = log.meta();
    if meta.reset_count != reset_count {
        tracing::info!(old = meta.reset_count, new = reset_count, "the TPM was reset (host reboot): starting a new event log");
        drop(log);
        return fresh(value);
    }
    if meta.pcr != pcr {
        return Err(LedgerError::Irreconcilable(format!(
            "the event log of this TPM boot extends PCR {} but the config says tpm.pcr = {pcr}; \
             restore tpm.pcr = {} (or reboot the host to start over with PCR {pcr})",
            meta.pcr, meta.pcr
        )));
    }
    let replay = attestation_proto::eventlog::replay(&events, pcr);
    if replay == value {
        tracing::info!(events = events.len(), pcr, "event log replays to the PCR");
        log.clear_intent();
        return Ok((log, events, value));
    }
    // The only repairable difference: the daemon's own intent, appended but
    // not (fully) extended when it stopped. Its bytes must match exactly.
    if let Some(intent) = log.intent()? {
        let mut tail_len = 0;
        let mut tail = Vec::new();
        for e in events.iter().rev() {
            tail_len += e.encode().len();
            tail.push(e);
            if tail_len >= intent.len() {
                break;
            }
        }
        tail.reverse();
        let tail_bytes: Vec<u8> = tail.iter().flat_map(|e| e.encode()).collect();
        if tail_bytes == intent {
            // Some of the intent's events may have been extended already.
            let pending = tail.len();
            for done in 0..=pending {
                let base = &events[..events.len() - pending + done];
                if attestation_proto::eventlog::replay(base, pcr) == value {
                    let mut v = value;
                    for e in &tail[done..] {
                        tpm.extend(pcr, &e.digest)?;
                        v = extended(&v, &e.digest);
                    }
                    tracing::warn!(events = pending - done, "completing the extends of an interrupted record (matching its intent)");
                    log.clear_intent();
                    return Ok((log, events, v));
                }
            }
        }
    }
    Err(LedgerError::Irreconcilable(format!(
        "the event log in {} ({} events) replays to {} but PCR {pcr} holds {}, and the difference is not an \
         interrupted record of this daemon (no matching intent): something else extended PCR {pcr}, or events \
         were added to or removed from the log. Zones of this TPM boot cannot attest; reboot the host (or, for the \
         embedded swtpm, stop it) to start a new log, and make sure nothing else uses PCR {pcr}.",
        dir.display(),
        events.len(),
        hex::encode(replay),
        hex::encode(value)
    )))
}

impl Ledger {
    /// Starts the thread, which opens the TPM and the log and reconciles
    /// them; returns once that is done (or failed).
    pub fn start(settings: &TpmSettings, state_dir: &Path) -> Result<Self, LedgerError> {
        let (tpm_settings, dir) = (settings.clone(), state_dir.to_owned());
        Self::start_with(move || Ok(Box::new(open_tpm(&tpm_settings, &dir)?) as Box<dyn TpmOps>), settings, &state_dir.join("eventlog"))
    }

    /// Starts the thread with the TPM `open` returns (called on the thread)
    /// and the log in `log_dir`.
    pub fn start_with(
        open_tpm: impl FnOnce() -> Result<Box<dyn TpmOps>, LedgerError> + Send + 'static,
        settings: &TpmSettings,
        log_dir: &Path,
    ) -> Result<Self, LedgerError> {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (settings, log_dir) = (settings.clone(), log_dir.to_owned());
        std::thread::Builder::new()
            .name("ledger".into())
            .spawn(move || match open_tpm().and_then(|tpm| open(tpm, &settings, &log_dir)) {
                Ok(state) => {
                    let _ = ready_tx.send(Ok(state.tpm.keys().clone()));
                    run(state, rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| LedgerError::Irreconcilable(format!("cannot start the TPM thread: {e}")))?;
        let keys = ready_rx.recv().map_err(|_| LedgerError::Gone)??;
        Ok(Self { tx, keys: std::sync::Arc::new(keys) })
    }

    /// The TPM's public keys: AK, EK and the EK certificate.
    pub fn keys(&self) -> &crate::tpm::TpmKeys {
        &self.keys
    }

    fn call<T>(&self, make: impl FnOnce(mpsc::SyncSender<Result<T, LedgerError>>) -> Request) -> Result<T, LedgerError> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.tx.send(make(reply)).map_err(|_| LedgerError::Gone)?;
        rx.recv().map_err(|_| LedgerError::Gone)?
    }

    fn record(&self, event: Event, bytes: usize) -> Result<(), LedgerError> {
        if bytes > MAX_RECORD_LEN {
            return Err(LedgerError::Refused(format!(
                "the record is {bytes} bytes, more than the {MAX_RECORD_LEN} a log event may hold"
            )));
        }
        self.call(|reply| Request::Record { event, reply })
    }

    /// Records a zone launch (blocking: the log append and the PCR extend).
    pub fn record_launch(&self, pcr: u32, record: &LaunchRecord) -> Result<(), LedgerError> {
        let bytes = record.encode();
        self.record(Event::zone(pcr, TAG_ZONE_LAUNCH, &record.launch_id, &bytes), bytes.len())
    }

    /// Records the end of a launch (blocking; a second stop of the same launch is a no-op).
    pub fn record_stop(&self, pcr: u32, record: &StopRecord) -> Result<(), LedgerError> {
        let bytes = record.encode();
        self.record(Event::zone(pcr, TAG_ZONE_STOP, &record.launch_id, &bytes), bytes.len())
    }

    /// Test builds: records many launch and stop events at once (one intent,
    /// one fsync), to give a host a long history quickly.
    #[cfg(feature = "test-hooks")]
    pub fn record_bulk(&self, events: Vec<Event>) -> Result<(), LedgerError> {
        self.call(|reply| Request::Bulk { events, reply })
    }

    /// The log, the PCR and the keys (blocking).
    pub fn snapshot(&self) -> Result<Snapshot, LedgerError> {
        self.call(|reply| Request::Snapshot { reply })
    }

    /// Runs TPM2_ActivateCredential with the AK and the EK: the secret a
    /// verifier encrypted for them (`attestation_proto::tpm::credential`).
    pub async fn activate(&self, id_object: &[u8], encrypted_secret: &[u8]) -> Result<Vec<u8>, LedgerError> {
        let (reply, rx) = oneshot::channel();
        let req = Request::Activate { id_object: id_object.to_vec(), encrypted_secret: encrypted_secret.to_vec(), reply };
        self.tx.send(req).map_err(|_| LedgerError::Gone)?;
        rx.await.map_err(|_| LedgerError::Gone)?
    }

    /// Fresh evidence about launch `launch_id` for `nonce` (encoded
    /// `Evidence`), if the log holds it as a live launch of `expected.zone`
    /// with exactly the record the daemon recorded.
    pub async fn evidence(&self, launch_id: &str, expected: Expected, nonce: &[u8]) -> Result<Vec<u8>, LedgerError> {
        let (reply, rx) = oneshot::channel();
        let req = EvidenceRequest { launch_id: launch_id.to_owned(), expected, nonce: nonce.to_vec(), reply };
        self.tx.send(Request::Evidence(req)).map_err(|_| LedgerError::Gone)?;
        rx.await.map_err(|_| LedgerError::Gone)?
    }
}

fn run(mut state: State, rx: mpsc::Receiver<Request>) {
    let mut deferred: VecDeque<Request> = VecDeque::new();
    loop {
        let next = match deferred.pop_front() {
            Some(r) => r,
            None => match rx.recv() {
                Ok(r) => r,
                Err(_) => return,
            },
        };
        match next {
            Request::Record { event, reply } => {
                // Records already waiting are committed with this one (group commit).
                let mut group = vec![(event, reply)];
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(Request::Record { event, reply }) => group.push((event, reply)),
                        Ok(other) => deferred.push_back(other),
                        Err(_) => break,
                    }
                }
                state.record(group);
            }
            Request::Snapshot { reply } => {
                let _ = reply.send(state.snapshot());
            }
            Request::Activate { id_object, encrypted_secret, reply } => {
                let result = state.tpm.activate_credential(&id_object, &encrypted_secret).map_err(|e| {
                    LedgerError::Refused(format!(
                        "the TPM did not release the credential ({e}): it was not made for this host's attestation key and EK"
                    ))
                });
                let _ = reply.send(result);
            }
            #[cfg(feature = "test-hooks")]
            Request::Bulk { events, reply } => {
                let mut result = Ok(());
                for chunk in events.chunks(CHECKPOINT_EVERY) {
                    let group: Result<Vec<(Event, Kind)>, LedgerError> = chunk
                        .iter()
                        .map(|e| kind_of(e).map(|k| (e.clone(), k)).map_err(LedgerError::Refused))
                        .collect();
                    result = group.and_then(|g| state.commit(&g)).and_then(|()| state.maybe_checkpoint());
                    if result.is_err() {
                        break;
                    }
                }
                let _ = reply.send(result);
            }
            Request::Evidence(first) => {
                // Everything already waiting joins this quote.
                let mut batch = vec![first];
                while batch.len() < state.max_batch {
                    match rx.try_recv() {
                        Ok(Request::Evidence(r)) => batch.push(r),
                        Ok(other) => deferred.push_back(other),
                        Err(_) => break,
                    }
                }
                state.answer(batch);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use attestation_proto::launch::{Artifact, RECORD_VERSION};

    use crate::tpm::TpmKeys;

    /// A software stand-in for the TPM: PCRs in memory, quotes counted.
    #[derive(Debug, Clone, Default)]
    struct Soft(Arc<Mutex<SoftState>>);

    #[derive(Debug, Default)]
    struct SoftState {
        pcrs: [[u8; 32]; 24],
        quotes: usize,
        fail_extend: bool,
        reset_count: u32,
        quote_delay: Duration,
    }

    struct SoftTpm(Soft, TpmKeys);

    impl TpmOps for SoftTpm {
        fn extend(&mut self, pcr: u32, digest: &[u8; 32]) -> Result<(), TpmError> {
            let mut s = self.0.0.lock().unwrap();
            if s.fail_extend {
                return Err(TpmError::Swtpm("extend refused (test)".into()));
            }
            let v = &mut s.pcrs[pcr as usize];
            *v = extended(v, digest);
            Ok(())
        }
        fn read_pcr(&mut self, pcr: u32) -> Result<[u8; 32], TpmError> {
            Ok(self.0.0.lock().unwrap().pcrs[pcr as usize])
        }
        fn quote(&mut self, qualifying_data: &[u8], _pcrs: &[u32]) -> Result<Quote, TpmError> {
            let delay = self.0.0.lock().unwrap().quote_delay;
            std::thread::sleep(delay);
            let mut s = self.0.0.lock().unwrap();
            s.quotes += 1;
            Ok(Quote { attest: qualifying_data.to_vec(), signature: vec![], reset_count: s.reset_count })
        }
        fn keys(&self) -> &TpmKeys {
            &self.1
        }
        fn activate_credential(&mut self, _: &[u8], encrypted_secret: &[u8]) -> Result<Vec<u8>, TpmError> {
            // No credential crypto in the unit tests: the "secret" passes through.
            Ok(encrypted_secret.to_vec())
        }
    }

    fn start(soft: &Soft, dir: &Path) -> Result<Ledger, LedgerError> {
        let soft = soft.clone();
        let keys = TpmKeys { ak_public: vec![1], ek_public: vec![2], ek_certificate: None, ek_chain: Vec::new(), tcti: "soft".into(), software: true };
        Ledger::start_with(move || Ok(Box::new(SoftTpm(soft, keys)) as Box<dyn TpmOps>), &TpmSettings::default(), dir)
    }

    fn record(zone: &str, id: &str) -> LaunchRecord {
        LaunchRecord {
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
        }
    }

    fn stop(zone: &str, id: &str) -> StopRecord {
        StopRecord { version: RECORD_VERSION, zone: zone.into(), launch_id: id.into(), reason: "stopped".into(), stopped_unix_ms: 2 }
    }

    fn expected(r: &LaunchRecord) -> Expected {
        Expected { zone: r.zone.clone(), record: r.encode() }
    }

    #[test]
    fn an_interrupted_extend_is_completed_only_from_its_intent() {
        let dir = tempfile::tempdir().unwrap();
        let soft = Soft::default();
        let ledger = start(&soft, dir.path()).unwrap();
        ledger.record_launch(15, &record("a", &"1".repeat(32))).unwrap();
        // The next extend fails after the append: the log is one event ahead.
        soft.0.lock().unwrap().fail_extend = true;
        assert!(ledger.record_launch(15, &record("b", &"2".repeat(32))).is_err());
        assert!(matches!(ledger.record_launch(15, &record("c", &"3".repeat(32))), Err(LedgerError::Poisoned(_))));
        drop(ledger);
        soft.0.lock().unwrap().fail_extend = false;
        let ledger = start(&soft, dir.path()).unwrap();
        let snap = ledger.snapshot().unwrap();
        assert_eq!(snap.events, 2);
        assert_eq!(snap.pcr_value, soft.0.lock().unwrap().pcrs[15], "completed: log and PCR agree");
        assert!(!dir.path().join("intent.bin").exists());
        drop(ledger);
        // An event someone else appended to the file (no intent of ours): never extended.
        let foreign = Event::zone(15, TAG_ZONE_LAUNCH, &"9".repeat(32), &record("x", &"9".repeat(32)).encode());
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join("eventlog.bin")).unwrap();
        std::io::Write::write_all(&mut f, &foreign.encode()).unwrap();
        drop(f);
        let pcr_before = soft.0.lock().unwrap().pcrs[15];
        let e = start(&soft, dir.path()).unwrap_err().to_string();
        assert!(e.contains("no matching intent"), "{e}");
        assert_eq!(soft.0.lock().unwrap().pcrs[15], pcr_before, "the foreign event was not extended");
        // Nor when an intent exists for other bytes.
        std::fs::write(dir.path().join("intent.bin"), b"some other intent").unwrap();
        assert!(start(&soft, dir.path()).unwrap_err().to_string().contains("no matching intent"));
        // Someone else extends the PCR: refused too.
        let dir = tempfile::tempdir().unwrap();
        let soft = Soft::default();
        drop(start(&soft, dir.path()).unwrap());
        {
            let mut s = soft.0.lock().unwrap();
            s.pcrs[15] = extended(&s.pcrs[15], &[9; 32]);
        }
        assert!(start(&soft, dir.path()).unwrap_err().to_string().contains("something else extended PCR 15"));
    }

    #[test]
    fn a_launch_id_logged_twice_stops_the_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let soft = Soft::default();
        let ledger = start(&soft, dir.path()).unwrap();
        let id = "4".repeat(32);
        ledger.record_launch(15, &record("a", &id)).unwrap();
        let e = ledger.record_launch(15, &record("b", &id)).unwrap_err();
        assert!(e.to_string().contains("already in the log"), "{e}");
        drop(ledger);
        // The same, written into the log (and the PCR) behind the daemon's back.
        let dup = Event::zone(15, TAG_ZONE_LAUNCH, &id, &record("b", &id).encode());
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join("eventlog.bin")).unwrap();
        std::io::Write::write_all(&mut f, &dup.encode()).unwrap();
        {
            let mut s = soft.0.lock().unwrap();
            s.pcrs[15] = extended(&s.pcrs[15], &dup.digest);
        }
        let e = start(&soft, dir.path()).unwrap_err().to_string();
        assert!(e.contains("logged twice"), "{e}");
    }

    #[test]
    fn checkpoints_bound_what_evidence_carries_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let soft = Soft::default();
        let ledger = start(&soft, dir.path()).unwrap();
        let keep = record("keep", &"k".repeat(32));
        ledger.record_launch(15, &keep).unwrap();
        for i in 0..(CHECKPOINT_EVERY + 20) / 2 {
            let id = format!("{i:032}");
            ledger.record_launch(15, &record("churn", &id)).unwrap();
            ledger.record_stop(15, &stop("churn", &id)).unwrap();
        }
        let snap = ledger.snapshot().unwrap();
        assert_eq!(snap.checkpoint_seq, Some(1));
        assert_eq!(snap.pcr_value, soft.0.lock().unwrap().pcrs[15]);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let ev = rt.block_on(ledger.evidence(&keep.launch_id, expected(&keep), &[7; 16])).unwrap();
        let ev = attestation_proto::evidence::decode(&ev).unwrap();
        let cp = ev.checkpoint.expect("the evidence starts at the checkpoint");
        let events = attestation_proto::eventlog::parse(&ev.event_log, &attestation_proto::eventlog::Limits::default()).unwrap();
        assert!(events.len() < CHECKPOINT_EVERY, "{} events after the checkpoint", events.len());
        let cp_event = attestation_proto::eventlog::parse_event_bytes(&cp.event, &attestation_proto::eventlog::Limits::default()).unwrap();
        let v_c = attestation_proto::eventlog::extend(&cp.pcr_before.try_into().unwrap(), &cp_event.digest);
        assert_eq!(attestation_proto::eventlog::replay_from(v_c, &events, 15), snap.pcr_value, "replays from the checkpoint");
        let proof = cp.live_proof.expect("a launch from before the checkpoint carries its live-set proof");
        assert!((1..=2).contains(&proof.tree_size), "the long-lived zone (and at most one churning one) was live: {}", proof.tree_size);
        // The long-lived zone is live at the checkpoint; a restart keeps it so.
        drop(ledger);
        let ledger = start(&soft, dir.path()).unwrap();
        assert_eq!(ledger.snapshot().unwrap().checkpoint_seq, Some(1));
        assert!(rt.block_on(ledger.evidence(&keep.launch_id, expected(&keep), &[8; 16])).is_ok());
    }

    #[test]
    fn evidence_is_refused_for_a_record_that_is_not_the_asking_zones() {
        let dir = tempfile::tempdir().unwrap();
        let soft = Soft::default();
        let ledger = start(&soft, dir.path()).unwrap();
        let (a, b) = (record("a", &"a".repeat(32)), record("b", &"b".repeat(32)));
        ledger.record_launch(15, &a).unwrap();
        ledger.record_launch(15, &b).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        // Zone b asking with zone a's launch id (the records' launch ids swapped on disk).
        let e = rt.block_on(ledger.evidence(&a.launch_id, expected(&b), &[1; 16])).unwrap_err();
        assert!(matches!(e, LedgerError::Mismatch(ref m) if m.contains("belongs to zone")), "{e}");
        ledger.record_stop(15, &stop("a", &a.launch_id)).unwrap();
        assert!(matches!(rt.block_on(ledger.evidence(&a.launch_id, expected(&a), &[1; 16])), Err(LedgerError::NotMeasured(_))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_one_quote() {
        let dir = tempfile::tempdir().unwrap();
        let soft = Soft::default();
        let ledger = start(&soft, dir.path()).unwrap();
        let r = record("z", &"4".repeat(32));
        ledger.record_launch(15, &r).unwrap();
        // A slow TPM: while the first request is being quoted, the others queue.
        soft.0.lock().unwrap().quote_delay = Duration::from_millis(300);
        let mut tasks = Vec::new();
        for n in 0..20u8 {
            let (l, r) = (ledger.clone(), r.clone());
            tasks.push(tokio::spawn(async move { l.evidence(&r.launch_id, expected(&r), &[n; 16]).await }));
        }
        for t in tasks {
            let ev = attestation_proto::evidence::decode(&t.await.unwrap().unwrap()).unwrap();
            assert!(ev.batch.unwrap().tree_size >= 1);
        }
        let quotes = soft.0.lock().unwrap().quotes;
        // One quote at start (reset count), one for the first request, one for the 19 that queued.
        assert!(quotes <= 3, "{quotes} quotes for 20 requests");
        assert!(ledger.evidence(&"5".repeat(32), expected(&r), &[1; 16]).await.is_err(), "an unknown launch has no evidence");
    }
}
