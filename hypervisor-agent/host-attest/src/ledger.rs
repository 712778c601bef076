//! The ledger: the event log and the zone PCR, kept in step by one thread
//! that owns both the TPM and the log.
//!
//! - **Record** (a zone launch or stop): append the event to the log and
//!   fsync, *then* extend the PCR. A crash between the two leaves the log
//!   one event ahead; at the next start the ledger finds
//!   `replay(log minus last) == PCR` and completes the extend. Any other
//!   mismatch (the PCR extended by someone else, a log from another TPM) is
//!   refused with an explanation: the daemon does not start.
//! - **Evidence**: requests that arrive while a quote is being made queue
//!   up; the next quote answers all of them at once (`crate::evidence`).
//!   Because the same thread appends and quotes, each quote's log snapshot
//!   is exactly what the PCR holds.
//! - A new TPM boot (the reset count in a quote changed) starts a new log;
//!   the previous one is archived.
//!
//! The ledger talks to the TPM through [`TpmOps`], so crash recovery and
//! batching are unit-tested with a software stand-in. It keeps the PCR's
//! value itself (the log's replay, which it checked against the TPM at
//! start and advances with every extend), so evidence needs no PCR read.
//!
//! Fault injection for the crash-consistency tests (test builds only):
//! `HYPERVISOR_AGENT_FAULT=before-append|after-append|after-extend` aborts
//! the daemon at that point of the next record.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use attestation_proto::eventlog::{Event, TAG_ZONE_LAUNCH, TAG_ZONE_STOP};
use attestation_proto::launch::{LaunchRecord, StopRecord};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::eventlog::{LogError, LogMeta, LogStore};
use crate::evidence::{self, EvidenceError, LogView};
use crate::index::{LogIndex, owner_of};
use crate::settings::TpmSettings;
use crate::tpm::{Tpm, TpmError, TpmOps, swtpm::Swtpm};

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
    /// The zone has no launch in the current log.
    #[error("{0}")]
    NotMeasured(String),
    /// An earlier failure left the log and the PCR out of step.
    #[error("the event log and PCR are out of step after an earlier failure ({0}); restart the daemon to reconcile them")]
    Poisoned(String),
    /// The ledger thread is gone.
    #[error("the TPM thread has stopped; restart the daemon")]
    Gone,
}

/// What the ledger holds right now.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The log's bytes.
    pub log: Vec<u8>,
    /// Events in it.
    pub events: usize,
    /// The zone PCR.
    pub pcr: u32,
    /// Its value in the TPM.
    pub pcr_value: [u8; 32],
    /// The TPM boot the log belongs to.
    pub reset_count: u32,
    /// TPMT_PUBLIC of the AK.
    pub ak_public: Vec<u8>,
    /// TPMT_PUBLIC of the EK.
    pub ek_public: Vec<u8>,
    /// The EK certificate, if any.
    pub ek_certificate: Option<Vec<u8>>,
    /// Which TPM.
    pub tcti: String,
}

impl From<EvidenceError> for LedgerError {
    fn from(e: EvidenceError) -> Self {
        match e {
            EvidenceError::NotMeasured(m) => Self::NotMeasured(m),
        }
    }
}

/// One pending evidence request.
struct EvidenceRequest {
    launch_id: String,
    nonce: Vec<u8>,
    reply: oneshot::Sender<Result<Vec<u8>, LedgerError>>,
}

enum Request {
    Record { event: Event, reply: mpsc::SyncSender<Result<(), LedgerError>> },
    Evidence(EvidenceRequest),
    Snapshot { reply: mpsc::SyncSender<Result<Snapshot, LedgerError>> },
}

/// Handle to the ledger thread.
#[derive(Debug, Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Request>,
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
    fn record(&mut self, event: Event) -> Result<(), LedgerError> {
        if let Some(why) = &self.poisoned {
            return Err(LedgerError::Poisoned(why.clone()));
        }
        let owner = owner_of(&event);
        if let Some((id, false)) = &owner {
            // A stop closes a logged, open launch; anything else has nothing to close.
            if self.index.stopped.contains(id) || !self.index.launches.contains_key(id) {
                return Ok(());
            }
        }
        fault("before-append");
        self.log.append(&event)?;
        fault("after-append");
        if let Err(e) = self.tpm.extend(self.pcr, &event.digest) {
            // The event is in the log but not in the PCR: the next start
            // completes the extend; until then nothing more is recorded.
            self.poisoned = Some(e.to_string());
            return Err(e.into());
        }
        self.pcr_value = extended(&self.pcr_value, &event.digest);
        fault("after-extend");
        self.index.push(owner);
        Ok(())
    }

    fn snapshot(&self) -> Snapshot {
        let keys = self.tpm.keys();
        Snapshot {
            log: self.log.bytes().to_vec(),
            events: self.log.events().len(),
            pcr: self.pcr,
            pcr_value: self.pcr_value,
            reset_count: self.reset_count,
            ak_public: keys.ak_public.clone(),
            ek_public: keys.ek_public.clone(),
            ek_certificate: keys.ek_certificate.clone(),
            tcti: keys.tcti.clone(),
        }
    }

    fn view(&self) -> LogView<'_> {
        LogView {
            events: self.log.events(),
            index: &self.index,
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
                match evidence::prepare(&view, &req.launch_id, &req.nonce) {
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

/// Picks the TPM: the device if present, else the embedded swtpm.
fn open_tpm(settings: &TpmSettings, state_dir: &Path) -> Result<Tpm, LedgerError> {
    let key_dir = state_dir.join("tpm");
    if settings.device.exists() {
        let tcti = format!("device:{}", settings.device.display());
        tracing::info!(%tcti, "using the host TPM");
        return Ok(Tpm::open(&tcti, &key_dir, false)?);
    }
    let swtpm = Swtpm::new(&state_dir.join("swtpm"), settings.swtpm_port);
    tracing::info!(device = %settings.device.display(), "no TPM device; using the embedded swtpm");
    swtpm.ensure_running()?;
    Ok(Tpm::open(&swtpm.tcti(), &key_dir, true)?)
}

/// Opens the log in `log_dir` against `tpm` and reconciles them (on the
/// ledger thread: a TSS context stays on the thread that made it).
fn open(mut tpm: Box<dyn TpmOps>, settings: &TpmSettings, log_dir: &Path) -> Result<State, LedgerError> {
    // The reset count comes with any quote's clock info.
    let reset_count = tpm.quote(&[0; 32], &[settings.pcr])?.reset_count;
    let (log, pcr_value) = reconcile(tpm.as_mut(), log_dir, settings.pcr, reset_count)?;
    let index = LogIndex::of(log.events());
    #[cfg(feature = "test-hooks")]
    let quote_delay = Duration::from_millis(settings.simulated_quote_latency_ms);
    #[cfg(not(feature = "test-hooks"))]
    let quote_delay = Duration::ZERO;
    Ok(State {
        tpm,
        log,
        pcr: settings.pcr,
        pcr_value,
        reset_count,
        index,
        max_batch: settings.max_batch,
        quote_delay,
        poisoned: None,
    })
}

/// Brings the log and the PCR into step, or explains why they cannot be;
/// returns the log and the PCR's value.
fn reconcile(tpm: &mut dyn TpmOps, dir: &Path, pcr: u32, reset_count: u32) -> Result<(LogStore, [u8; 32]), LedgerError> {
    let value = tpm.read_pcr(pcr)?;
    let fresh = |tpm_value: [u8; 32]| -> Result<(LogStore, [u8; 32]), LedgerError> {
        if tpm_value != [0; 32] {
            return Err(LedgerError::Irreconcilable(format!(
                "PCR {pcr} already holds {} in this TPM boot but there is no event log for it here: another \
                 program extends PCR {pcr}, or this state directory's log was lost. Choose a PCR nothing else \
                 uses (tpm.pcr in the config) or reboot the host to start a new log.",
                hex::encode(tpm_value)
            )));
        }
        Ok((LogStore::create(dir, LogMeta { reset_count, pcr })?, tpm_value))
    };
    let Some(log) = LogStore::open(dir)? else {
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
    if log.replay() == value {
        tracing::info!(events = log.events().len(), pcr, "event log replays to the PCR");
        return Ok((log, value));
    }
    let events = log.events();
    if let Some((last, earlier)) = events.split_last() {
        if attestation_proto::eventlog::replay(earlier, pcr) == value {
            tracing::warn!(events = events.len(), "the last event was logged but not extended (interrupted): extending it now");
            let digest = last.digest;
            tpm.extend(pcr, &digest)?;
            return Ok((log, extended(&value, &digest)));
        }
    }
    Err(LedgerError::Irreconcilable(format!(
        "the event log in {} ({} events) replays to {} but PCR {pcr} holds {}: something else extended PCR {pcr} \
         or the log was altered. Zones of this TPM boot cannot attest; reboot the host (or, for the embedded \
         swtpm, stop it) to start a new log, and make sure nothing else uses PCR {pcr}.",
        dir.display(),
        events.len(),
        hex::encode(log.replay()),
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
                    let _ = ready_tx.send(Ok(()));
                    run(state, rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| LedgerError::Irreconcilable(format!("cannot start the TPM thread: {e}")))?;
        ready_rx.recv().map_err(|_| LedgerError::Gone)??;
        Ok(Self { tx })
    }

    fn call<T>(&self, make: impl FnOnce(mpsc::SyncSender<Result<T, LedgerError>>) -> Request) -> Result<T, LedgerError> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.tx.send(make(reply)).map_err(|_| LedgerError::Gone)?;
        rx.recv().map_err(|_| LedgerError::Gone)?
    }

    /// Records a zone launch (blocking: the log append and the PCR extend).
    pub fn record_launch(&self, pcr: u32, record: &LaunchRecord) -> Result<(), LedgerError> {
        let event = Event::tagged(pcr, TAG_ZONE_LAUNCH, &record.encode());
        self.call(|reply| Request::Record { event, reply })
    }

    /// Records the end of a launch (blocking; a second stop of the same launch is a no-op).
    pub fn record_stop(&self, pcr: u32, record: &StopRecord) -> Result<(), LedgerError> {
        let event = Event::tagged(pcr, TAG_ZONE_STOP, &record.encode());
        self.call(|reply| Request::Record { event, reply })
    }

    /// The log, the PCR and the keys (blocking).
    pub fn snapshot(&self) -> Result<Snapshot, LedgerError> {
        self.call(|reply| Request::Snapshot { reply })
    }

    /// Fresh evidence about launch `launch_id` for `nonce` (encoded `Evidence`).
    pub async fn evidence(&self, launch_id: &str, nonce: &[u8]) -> Result<Vec<u8>, LedgerError> {
        let (reply, rx) = oneshot::channel();
        let req = EvidenceRequest { launch_id: launch_id.to_owned(), nonce: nonce.to_vec(), reply };
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
                let _ = reply.send(state.record(event));
            }
            Request::Snapshot { reply } => {
                let _ = reply.send(Ok(state.snapshot()));
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

    use crate::tpm::{Quote, TpmKeys};

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
    }

    fn start(soft: &Soft, dir: &Path) -> Result<Ledger, LedgerError> {
        let soft = soft.clone();
        let keys = TpmKeys { ak_public: vec![1], ek_public: vec![2], ek_certificate: None, tcti: "soft".into() };
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
        }
    }

    #[test]
    fn an_interrupted_extend_is_completed_and_a_foreign_one_refused() {
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
        drop(ledger);
        // Someone else extends the PCR: the ledger refuses to start.
        let other = [9u8; 32];
        {
            let mut s = soft.0.lock().unwrap();
            s.pcrs[15] = extended(&s.pcrs[15], &other);
        }
        let e = start(&soft, dir.path()).unwrap_err();
        assert!(e.to_string().contains("something else extended PCR 15"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_one_quote() {
        let dir = tempfile::tempdir().unwrap();
        let soft = Soft::default();
        let ledger = start(&soft, dir.path()).unwrap();
        let id = "4".repeat(32);
        ledger.record_launch(15, &record("z", &id)).unwrap();
        // A slow TPM: while the first request is being quoted, the others queue.
        soft.0.lock().unwrap().quote_delay = Duration::from_millis(300);
        let mut tasks = Vec::new();
        for n in 0..20u8 {
            let (l, id) = (ledger.clone(), id.clone());
            tasks.push(tokio::spawn(async move { l.evidence(&id, &[n; 16]).await }));
        }
        for t in tasks {
            let ev = attestation_proto::evidence::decode(&t.await.unwrap().unwrap()).unwrap();
            assert!(ev.batch.unwrap().tree_size >= 1);
        }
        let quotes = soft.0.lock().unwrap().quotes;
        // One quote at start (reset count), one for the first request, one for the 19 that queued.
        assert!(quotes <= 3, "{quotes} quotes for 20 requests");
        assert!(ledger.evidence(&"5".repeat(32), &[1; 16]).await.is_err(), "an unknown launch has no evidence");
    }
}
