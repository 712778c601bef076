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
//! Fault injection for the crash-consistency tests:
//! `HYPERVISOR_AGENT_FAULT=before-append|after-append|after-extend` aborts
//! the daemon at that point of the next record.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use attestation_proto::eventlog::{Event, TAG_ZONE_LAUNCH, TAG_ZONE_STOP, ZoneEvent};
use attestation_proto::launch::{LaunchRecord, StopRecord};
use tokio::sync::oneshot;

use crate::daemon::config::TpmSettings;
use crate::eventlog::{LogError, LogMeta, LogStore};
use crate::tpm::{Tpm, TpmError, swtpm::Swtpm};

/// The fault-injection variable (tests only).
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

/// One pending evidence request.
pub(crate) struct EvidenceRequest {
    pub(crate) launch_id: String,
    pub(crate) nonce: Vec<u8>,
    pub(crate) reply: oneshot::Sender<Result<Vec<u8>, LedgerError>>,
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
pub(crate) struct State {
    pub(crate) tpm: Tpm,
    pub(crate) log: LogStore,
    pub(crate) pcr: u32,
    pub(crate) reset_count: u32,
    /// Per event: the launch id it belongs to (zone events only).
    pub(crate) owners: Vec<Option<String>>,
    /// Launch id → index of its launch event.
    pub(crate) launches: HashMap<String, usize>,
    pub(crate) stopped: HashSet<String>,
    pub(crate) max_batch: usize,
    pub(crate) quote_delay: Duration,
    poisoned: Option<String>,
}

fn owner_of(event: &Event) -> Option<(String, bool)> {
    match event.zone_event()? {
        ZoneEvent::Launch(d) => LaunchRecord::decode(d).ok().map(|r| (r.launch_id, true)),
        ZoneEvent::Stop(d) => StopRecord::decode(d).ok().map(|r| (r.launch_id, false)),
        ZoneEvent::Redacted => None,
    }
}

fn fault(point: &str) {
    if std::env::var(FAULT_ENV).is_ok_and(|v| v == point) {
        tracing::error!(point, "fault injection: aborting");
        std::process::abort();
    }
}

impl State {
    fn index(&mut self, owner: Option<(String, bool)>) {
        if let Some((id, is_launch)) = &owner {
            if *is_launch {
                self.launches.insert(id.clone(), self.owners.len());
            } else {
                self.stopped.insert(id.clone());
            }
        }
        self.owners.push(owner.map(|(id, _)| id));
    }

    fn record(&mut self, event: Event) -> Result<(), LedgerError> {
        if let Some(why) = &self.poisoned {
            return Err(LedgerError::Poisoned(why.clone()));
        }
        let owner = owner_of(&event);
        if let Some((id, false)) = &owner {
            // A stop closes a logged, open launch; anything else has nothing to close.
            if self.stopped.contains(id) || !self.launches.contains_key(id) {
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
        fault("after-extend");
        self.index(owner);
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Snapshot, LedgerError> {
        let pcr_value = self.tpm.read_pcrs(&[self.pcr])?[0];
        Ok(Snapshot {
            log: self.log.bytes().to_vec(),
            events: self.log.events().len(),
            pcr: self.pcr,
            pcr_value,
            reset_count: self.reset_count,
            ak_public: self.tpm.ak_public.clone(),
            ek_public: self.tpm.ek_public.clone(),
            ek_certificate: self.tpm.ek_certificate.clone(),
            tcti: self.tpm.tcti.clone(),
        })
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

/// Opens the TPM and the log and reconciles them (on the ledger thread:
/// the TSS context stays on the thread that made it).
fn open(settings: &TpmSettings, state_dir: &Path) -> Result<State, LedgerError> {
    let mut tpm = open_tpm(settings, state_dir)?;
    // The reset count comes with any quote's clock info.
    let reset_count = tpm.quote(&[0; 32], &[settings.pcr])?.reset_count;
    let log_dir: PathBuf = state_dir.join("eventlog");
    let log = reconcile(&mut tpm, &log_dir, settings.pcr, reset_count)?;
    let mut state = State {
        tpm,
        log,
        pcr: settings.pcr,
        reset_count,
        owners: Vec::new(),
        launches: HashMap::new(),
        stopped: HashSet::new(),
        max_batch: settings.max_batch,
        quote_delay: Duration::from_millis(settings.simulated_quote_latency_ms),
        poisoned: None,
    };
    let owners: Vec<_> = state.log.events().iter().map(owner_of).collect();
    for owner in owners {
        state.index(owner);
    }
    Ok(state)
}

/// Brings the log and the PCR into step, or explains why they cannot be.
fn reconcile(tpm: &mut Tpm, dir: &Path, pcr: u32, reset_count: u32) -> Result<LogStore, LedgerError> {
    let value = tpm.read_pcrs(&[pcr])?[0];
    let fresh = |tpm_value: [u8; 32]| -> Result<LogStore, LedgerError> {
        if tpm_value != [0; 32] {
            return Err(LedgerError::Irreconcilable(format!(
                "PCR {pcr} already holds {} in this TPM boot but there is no event log for it here: another \
                 program extends PCR {pcr}, or this state directory's log was lost. Choose a PCR nothing else \
                 uses (tpm.pcr in the config) or reboot the host to start a new log.",
                hex::encode(tpm_value)
            )));
        }
        Ok(LogStore::create(dir, LogMeta { reset_count, pcr })?)
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
        return Ok(log);
    }
    let events = log.events();
    if let Some((last, earlier)) = events.split_last() {
        if attestation_proto::eventlog::replay(earlier, pcr) == value {
            tracing::warn!(events = events.len(), "the last event was logged but not extended (interrupted): extending it now");
            tpm.extend(pcr, &last.digest)?;
            return Ok(log);
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
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (settings, state_dir) = (settings.clone(), state_dir.to_owned());
        std::thread::Builder::new()
            .name("ledger".into())
            .spawn(move || match open(&settings, &state_dir) {
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
                let _ = reply.send(state.snapshot());
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
                crate::evidence::answer(&mut state, batch);
            }
        }
    }
}
