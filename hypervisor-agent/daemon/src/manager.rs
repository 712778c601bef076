//! The zone manager: owns the zones of this host.
//!
//! It keeps one record per zone ([`crate::store`]), starts one jailed VMM
//! process per zone and watches it ([`crate::jail`], [`crate::supervisor`]),
//! talks to each zone's `zone-guest` over that zone's own host channel
//! ([`crate::channel`]), and is what the gRPC control API (`crate::api`)
//! drives. A create writes the record first and then acts; on start the
//! daemon reloads every record and re-adopts the VMMs that still run, so a
//! daemon restart never touches a running zone.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use attestation_proto::launch::{LaunchRecord, RECORD_VERSION, StopRecord};
use host_attest::cache::{SealCache, Source};
use host_attest::ledger::{Ledger, LedgerError};
use host_attest::measure::{self, MeasureError};
use zone_vmm::launch::{self as vmm_launch, LaunchConfig};
use zone_vmm::outcome::ExitReason;

use crate::config::DaemonConfig;
use crate::jail::{self, Jailer, spawn};
use crate::store::{Spec, State, Store, StoreError, VmmHandle, ZoneRecord};
use crate::zone_dir::ZoneDir;
use crate::{channel, forward, supervisor};

/// Lowest guest CID (0–2 are reserved by vsock).
const FIRST_GUEST_CID: u32 = 3;
/// Tests only: pause this many ms after measuring a zone's artifacts (the
/// window in which a test replaces the files on disk).
#[cfg(feature = "test-hooks")]
pub const PAUSE_AFTER_MEASURE_ENV: &str = "HYPERVISOR_AGENT_PAUSE_AFTER_MEASURE_MS";
/// Tests only: paths the next VMMs try to open from inside their jail (comma-separated).
#[cfg(feature = "test-hooks")]
pub const VMM_PROBE_ENV: &str = "HYPERVISOR_AGENT_VMM_PROBE";
/// Tests only: the next VMMs make a forbidden system call on vCPU 0.
#[cfg(feature = "test-hooks")]
pub const VMM_FORBIDDEN_SYSCALL_ENV: &str = "HYPERVISOR_AGENT_VMM_FORBIDDEN_SYSCALL";
/// How long a stop waits for the VMM before killing it.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The scratch disk's name: its virtio-blk serial in the guest
/// (`/sys/block/vdX/serial`) and its entry in the launch record.
pub const SCRATCH_DISK: &str = "scratch";
/// The image root disk's name (its serial in the guest).
pub const ROOTFS_DISK: &str = "rootfs";

/// Checks an image root request's fields before anything is opened.
fn check_image(img: &crate::store::ImageSpec) -> Result<(), DaemonError> {
    let bad = |m: String| DaemonError::InvalidArgument(format!("image root: {m}"));
    img.rootfs.check().map_err(|e| bad(format!("{e}; import the image again (zonectl image import)")))?;
    if !img.path.is_absolute() {
        return Err(bad(format!("path {} is not absolute", img.path.display())));
    }
    if img.env.len() > 256 || img.env.iter().any(|e| !e.contains('=') || e.len() > 1024) {
        return Err(bad("the environment must be at most 256 NAME=value entries of at most 1024 bytes".into()));
    }
    if !(img.workdir.is_empty() || img.workdir.starts_with('/')) || img.workdir.len() > 1024 {
        return Err(bad(format!("working directory {:?} is not an absolute path", img.workdir)));
    }
    if img.user.len() > 256 || !img.user.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b)) {
        return Err(bad(format!("user {:?} is not name[:group] or uid[:gid]", img.user)));
    }
    Ok(())
}

/// The devices of a zone as its launch record lists them (measured: a
/// verifier sees what the zone was given).
fn devices_of(spec: &Spec, guest_cid: u32) -> Vec<String> {
    let mut d = vec![format!("virtio-vsock:cid={guest_cid}")];
    if spec.image.is_some() {
        d.push(format!("virtio-blk:{ROOTFS_DISK}:ro:verity"));
    }
    if spec.scratch_mib > 0 {
        d.push(format!("virtio-blk:{SCRATCH_DISK}:rw:{}MiB", spec.scratch_mib));
    }
    if let Some(n) = &spec.net {
        d.push(n.device());
    }
    d
}

/// Why a request failed; each maps to one gRPC status code in `api`.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The zone does not exist.
    #[error("no zone named {0:?}; `zonectl list` shows the zones")]
    NotFound(String),
    /// The zone exists already.
    #[error("a zone named {0:?} already exists; pick another name or `zonectl destroy {0}` first")]
    AlreadyExists(String),
    /// A configured limit or the disk would be exceeded.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The zone is not in a state that allows this.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for DaemonError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Full { .. } => Self::ResourceExhausted(e.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

/// What a launch asks for; empty fields take the daemon's defaults.
#[derive(Debug, Clone, Default)]
pub struct LaunchRequest {
    /// Zone name.
    pub name: String,
    /// Kernel path.
    pub kernel: Option<PathBuf>,
    /// Initramfs path.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: Option<String>,
    /// vCPUs.
    pub vcpus: Option<u32>,
    /// Memory (MiB).
    pub memory_mib: Option<u64>,
    /// The zone's command.
    pub command: Vec<String>,
    /// Scratch disk size (MiB).
    pub scratch_mib: Option<u64>,
    /// An image root.
    pub image: Option<crate::store::ImageSpec>,
    /// Whether the zone gets a network interface on the zone network.
    pub network: bool,
    /// Host ports forwarded to the zone (implies `network`).
    pub publish: Vec<crate::network::Publish>,
    /// Who asks (the control connection's peer): artifacts it names are
    /// opened with its rights.
    pub caller: Option<crate::artifacts::Caller>,
}

struct Entry {
    record: ZoneRecord,
    launched: Instant,
    channel: Option<tokio::task::JoinHandle<()>>,
    /// Bumped by every change of `record`.
    version: u64,
    /// The version last written to `zone.json`; its lock orders the zone's saves.
    saved: Arc<Mutex<u64>>,
}

impl Entry {
    fn new(record: ZoneRecord) -> Self {
        Self { record, launched: Instant::now(), channel: None, version: 0, saved: Arc::new(Mutex::new(0)) }
    }
}

/// Zones whose record changed because a guest said so (hello, exit): saved
/// by a thread of their own, coalesced, never on the async workers.
#[derive(Debug, Default)]
struct Saver {
    dirty: Mutex<BTreeSet<String>>,
    wake: Condvar,
}

/// Guest-triggered saves of one zone happen at most this often.
const SAVE_COALESCE: Duration = Duration::from_millis(50);

/// The daemon's shared state.
pub struct Daemon {
    config: DaemonConfig,
    store: Store,
    ledger: Ledger,
    jailer: Jailer,
    /// Sealed boot artifacts by file identity: a file is measured once.
    artifacts: SealCache,
    zones: Mutex<BTreeMap<String, Entry>>,
    changes: watch::Sender<u64>,
    saver: Saver,
    /// The zone network's policy in nftables, with `[network]`.
    firewall: Option<crate::firewall::Firewall>,
    /// The CNI network's configuration list, with `[cni]`.
    cni: Option<crate::cni::NetworkList>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("state_dir", &self.config.state_dir).finish_non_exhaustive()
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn measure_error(e: MeasureError) -> DaemonError {
    DaemonError::InvalidArgument(e.to_string())
}

fn internal(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Internal(e.to_string())
}

fn ledger_error(e: LedgerError) -> DaemonError {
    match e {
        LedgerError::NotMeasured(m) | LedgerError::Mismatch(m) => DaemonError::FailedPrecondition(m),
        LedgerError::Refused(m) => DaemonError::InvalidArgument(m),
        other => DaemonError::Internal(other.to_string()),
    }
}

/// 16 random bytes, hex.
fn new_launch_id() -> Result<String, DaemonError> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .map_err(|e| DaemonError::Internal(format!("cannot read /dev/urandom: {e}")))?;
    Ok(hex::encode(b))
}

/// Longest zone name: the zone's vsock sockets (`<zone dir>/vsock.sock_<port>`)
/// must fit a Unix socket address (107 bytes) under the default state directory.
pub const MAX_NAME: usize = 48;

/// Checks a zone name: `[a-z0-9][a-z0-9-]{0,47}`.
pub fn validate_name(name: &str) -> Result<(), DaemonError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(DaemonError::InvalidArgument(format!(
            "invalid zone name {name:?}: use 1-{MAX_NAME} characters of a-z, 0-9 and '-', not starting with '-'"
        )))
    }
}

impl Daemon {
    /// Opens the TPM and the event log (reconciling them), loads the zone
    /// records and re-adopts the VMMs that still run.
    pub async fn start(config: DaemonConfig) -> Result<Arc<Self>, DaemonError> {
        crate::store::ensure_private_dir(&config.state_dir)?;
        let store = Store::open(&config.state_dir)?;
        let jailer = Jailer::new(&config.jail, &config.state_dir, config.limits.max_zones)
            .map_err(|e| DaemonError::FailedPrecondition(format!("cannot set up the VMM jail: {e}")))?;
        let (tpm, dir) = (config.tpm.clone(), config.state_dir.clone());
        let ledger = tokio::task::spawn_blocking(move || Ledger::start(&tpm, &dir))
            .await
            .map_err(|e| DaemonError::Internal(e.to_string()))?
            .map_err(|e| DaemonError::FailedPrecondition(format!("cannot start the measurement ledger: {e}")))?;
        let loaded = store.load_all()?;
        for name in loaded.incomplete {
            tracing::warn!(zone = %name, "removing a zone directory left without a record by an interrupted create");
            store.remove(&name)?;
        }
        let mut records = loaded.records;
        for (name, detail) in loaded.corrupt {
            records.push(Self::fail_unreadable(&store, &jailer, &name, &detail)?);
        }
        let (changes, _) = watch::channel(0);
        // Measuring is hashing: one file per core at a time.
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let artifacts = SealCache::new(config.limits.artifact_cache_mib << 20, cores);
        let firewall = config
            .network
            .as_ref()
            .map(|n| crate::firewall::Firewall::new(n.policy(), n.pool.clone()))
            .transpose()
            .map_err(|e| DaemonError::FailedPrecondition(e.to_string()))?;
        let cni = match &config.cni {
            Some(c) => {
                crate::sandbox::check_tools().map_err(|e| DaemonError::FailedPrecondition(e.to_string()))?;
                Some(crate::cni::NetworkList::load(c).map_err(|e| DaemonError::FailedPrecondition(e.to_string()))?)
            }
            None => None,
        };
        let daemon = Arc::new(Self {
            config,
            store,
            ledger,
            jailer,
            artifacts,
            zones: Mutex::new(BTreeMap::new()),
            changes,
            saver: Saver::default(),
            firewall,
            cni,
        });
        Self::start_saver(&daemon)?;
        for record in records {
            let name = record.name.clone();
            let live_vmm = record.vmm.filter(|h| record.state.is_live() && supervisor::is_alive(*h));
            daemon.lock().insert(name.clone(), Entry::new(record.clone()));
            match (record.state.is_live(), live_vmm) {
                (true, Some(handle)) => {
                    tracing::info!(zone = %name, pid = handle.pid, "re-adopting running zone");
                    daemon.watch_vmm(&name, handle)?;
                    let gid = record.jail.as_ref().map_or(0, |j| j.gid);
                    let published = match record.spec.net.as_ref().map(crate::network::bind_published).transpose() {
                        Ok(p) => p.unwrap_or_default(),
                        Err(e) => {
                            tracing::error!(zone = %name, error = %e, "cannot publish the zone's ports again");
                            Vec::new()
                        }
                    };
                    if let Err(e) = daemon.open_channel(&name, gid, published) {
                        tracing::error!(zone = %name, error = %e, "cannot reopen the zone's host channel");
                    }
                }
                (true, None) => daemon.finish(&name, None),
                // Stopped while the plugins still held its network (a crash between).
                (false, _) => {
                    let _ = daemon.detach_cni(&name);
                }
            }
        }
        // Before any zone is launched, and for those re-adopted: the table
        // as the records say.
        daemon.sync_firewall()?;
        Ok(daemon)
    }

    /// A zone whose record cannot be read: its bytes are kept aside, whatever
    /// still runs in its jail is stopped (its VMM can no longer be managed),
    /// and it is recorded as failed with the reason, so the daemon serves the
    /// other zones and the operator can destroy this one.
    fn fail_unreadable(store: &Store, jailer: &Jailer, name: &str, detail: &str) -> Result<ZoneRecord, DaemonError> {
        let kept = store.set_aside(name)?;
        let killed = jailer.reclaim(name);
        let failure = format!(
            "its record could not be read when the daemon started ({detail}); the bytes are kept in {}{}. \
             Destroy it (`zonectl destroy {name}`) and launch it again",
            kept.display(),
            if killed > 0 { format!(", and its unmanaged VMM ({killed} processes) was stopped") } else { String::new() }
        );
        tracing::error!(zone = %name, %failure, "unreadable zone record");
        let record = ZoneRecord {
            name: name.to_owned(),
            state: State::Failed,
            spec: Spec {
                kernel: PathBuf::new(),
                initrd: None,
                cmdline: String::new(),
                vcpus: 0,
                memory_mib: 0,
                command: Vec::new(),
                scratch_mib: 0,
                image: None,
                net: None,
            },
            failure: Some(failure),
            created_unix_ms: now_unix_ms(),
            ready_uptime_ms: None,
            launch_to_ready_ms: None,
            vmm: None,
            exit_status: None,
            guest_cid: 0,
            launch: None,
            jail: None,
        };
        store.save(&record)?;
        Ok(record)
    }

    /// Starts the thread that saves guest-triggered changes.
    fn start_saver(daemon: &Arc<Self>) -> Result<(), DaemonError> {
        let weak = Arc::downgrade(daemon);
        std::thread::Builder::new()
            .name("record-saver".into())
            .spawn(move || {
                loop {
                    let Some(d) = weak.upgrade() else { return };
                    let names = {
                        let mut dirty = d.saver.dirty.lock().unwrap_or_else(|p| p.into_inner());
                        if dirty.is_empty() {
                            let (guard, _) = d.saver.wake.wait_timeout(dirty, Duration::from_secs(1)).unwrap_or_else(|p| p.into_inner());
                            dirty = guard;
                        }
                        std::mem::take(&mut *dirty)
                    };
                    for name in names {
                        if let Err(e) = d.persist(&name) {
                            tracing::error!(zone = %name, error = %e, "cannot save the zone's record");
                        }
                    }
                    drop(d);
                    std::thread::sleep(SAVE_COALESCE);
                }
            })
            .map_err(internal)?;
        Ok(())
    }

    /// The configuration in force.
    pub fn config(&self) -> &DaemonConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.zones.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn zone_dir(&self, name: &str) -> ZoneDir {
        self.store.zone_dir(name)
    }

    /// Applies `f` to a zone's entry; returns the record and whether it changed.
    fn modify(&self, name: &str, f: impl FnOnce(&mut Entry)) -> Result<(ZoneRecord, bool), DaemonError> {
        let mut zones = self.lock();
        let entry = zones.get_mut(name).ok_or_else(|| DaemonError::NotFound(name.into()))?;
        let before = entry.record.clone();
        f(entry);
        let changed = entry.record != before;
        if changed {
            entry.version += 1;
        }
        Ok((entry.record.clone(), changed))
    }

    /// Writes the zone's current record unless a newer or equal version is
    /// already on disk. Saves of one zone are ordered by its lock, so the
    /// file always ends at the latest record (each write is atomic, with a
    /// temporary file of its own).
    fn persist(&self, name: &str) -> Result<(), DaemonError> {
        let Some(saved) = self.lock().get(name).map(|e| Arc::clone(&e.saved)) else { return Ok(()) };
        let mut saved = saved.lock().unwrap_or_else(|p| p.into_inner());
        let Some((record, version)) = self.lock().get(name).map(|e| (e.record.clone(), e.version)) else { return Ok(()) };
        if version <= *saved {
            return Ok(());
        }
        self.store.save(&record)?;
        *saved = version;
        Ok(())
    }

    /// Applies `f` to a zone's record, persists it and announces the change.
    fn update(&self, name: &str, f: impl FnOnce(&mut Entry)) -> Result<ZoneRecord, DaemonError> {
        let (record, changed) = self.modify(name, f)?;
        if changed {
            self.persist(name)?;
            self.changes.send_modify(|n| *n += 1);
        }
        Ok(record)
    }

    /// Like [`Self::update`] for what a guest reports: the change is visible
    /// at once, and saved soon by the saver thread (coalesced).
    fn update_deferred(&self, name: &str, f: impl FnOnce(&mut Entry)) {
        if let Ok((_, true)) = self.modify(name, f) {
            self.saver.dirty.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned());
            self.saver.wake.notify_one();
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// All zones.
    pub fn list(&self) -> Vec<ZoneRecord> {
        self.lock().values().map(|e| e.record.clone()).collect()
    }

    /// One zone.
    pub fn get(&self, name: &str) -> Result<ZoneRecord, DaemonError> {
        self.lock().get(name).map(|e| e.record.clone()).ok_or_else(|| DaemonError::NotFound(name.into()))
    }

    /// The zone's directory, if the zone exists.
    pub fn dir_of(&self, name: &str) -> Result<ZoneDir, DaemonError> {
        self.get(name).map(|_| self.zone_dir(name))
    }

    fn resolve(&self, req: &LaunchRequest) -> Result<Spec, DaemonError> {
        let d = &self.config.defaults;
        let l = &self.config.limits;
        let kernel = req.kernel.clone().or_else(|| d.kernel.clone()).ok_or_else(|| {
            DaemonError::InvalidArgument(
                "no kernel given and the daemon has no defaults.kernel; pass --kernel or set it in the config".into(),
            )
        })?;
        let initrd = req.initrd.clone().or_else(|| d.initrd.clone());
        for (what, path) in [("kernel", Some(&kernel)), ("initrd", initrd.as_ref())] {
            if let Some(p) = path {
                if !p.is_absolute() || p.as_os_str().len() > crate::artifacts::MAX_PATH {
                    let shown: String = p.display().to_string().chars().take(80).collect();
                    return Err(DaemonError::InvalidArgument(format!(
                        "the {what} path {shown}{} ({} bytes) must be absolute and at most {} bytes",
                        if shown.len() < p.as_os_str().len() { "…" } else { "" },
                        p.as_os_str().len(),
                        crate::artifacts::MAX_PATH
                    )));
                }
            }
        }
        let vcpus = req.vcpus.unwrap_or(u32::from(d.vcpus));
        if vcpus == 0 || vcpus > u32::from(l.max_vcpus) {
            return Err(DaemonError::InvalidArgument(format!(
                "vcpus = {vcpus} is outside 1..={} (limits.max_vcpus)",
                l.max_vcpus
            )));
        }
        let memory_mib = req.memory_mib.unwrap_or(d.memory_mib);
        if !(zone_vmm::vstate::layout::MIN_MEMORY_MIB..=l.max_memory_mib).contains(&memory_mib) {
            return Err(DaemonError::InvalidArgument(format!(
                "memory = {memory_mib} MiB is outside {}..={} MiB (limits.max_memory_mib)",
                zone_vmm::vstate::layout::MIN_MEMORY_MIB,
                l.max_memory_mib
            )));
        }
        let scratch_mib = req.scratch_mib.unwrap_or(0);
        if scratch_mib > l.max_scratch_mib {
            return Err(DaemonError::InvalidArgument(format!(
                "a scratch disk of {scratch_mib} MiB is more than limits.max_scratch_mib = {} MiB; ask for less",
                l.max_scratch_mib
            )));
        }
        let cmdline = req.cmdline.clone().filter(|c| !c.is_empty()).unwrap_or_else(|| d.cmdline.clone());
        if let Some(img) = &req.image {
            check_image(img)?;
        }
        if req.publish.len() > crate::network::MAX_PUBLISHED {
            return Err(DaemonError::InvalidArgument(format!(
                "{} published ports; at most {} per zone",
                req.publish.len(),
                crate::network::MAX_PUBLISHED
            )));
        }
        for (i, p) in req.publish.iter().enumerate() {
            if req.publish[..i].iter().any(|q| q.host.port() == p.host.port()) {
                return Err(DaemonError::InvalidArgument(format!("host port {} is published twice", p.host.port())));
            }
        }
        // The addresses are assigned under the zones' lock; the widest a
        // link can have stand in for the length check below.
        let net = match (&self.config.network, &self.config.cni, &self.cni, req.network || !req.publish.is_empty()) {
            (_, _, _, false) => None,
            (Some(n), _, _, true) => Some(crate::network::assign(n, &[]).map_err(|e| DaemonError::FailedPrecondition(e.to_string()))?.longest()),
            (None, Some(c), Some(list), true) => Some(crate::network::assign_cni(c, list, &req.name, 0, "0").longest()),
            (None, _, _, true) => {
                return Err(DaemonError::FailedPrecondition(
                    "this daemon has no zone network: add a [network] table with a pool (or a [cni] table naming a CNI network) to its config to launch zones with --net".into(),
                ));
            }
        };
        let spec = Spec {
            kernel,
            initrd,
            cmdline,
            vcpus: vcpus as u8,
            memory_mib,
            command: req.command.clone(),
            scratch_mib,
            image: req.image.clone(),
            net,
        };
        if spec.image.is_some() && spec.command.is_empty() {
            return Err(DaemonError::InvalidArgument(
                "an image zone needs a command: the image's entrypoint and cmd, or one given after --".into(),
            ));
        }
        // Bounded before anything is logged: the line must fit the kernel's
        // command line buffer (and so the launch record fits a log event).
        let base = spec.kernel_params().map_err(|e| DaemonError::InvalidArgument(e.to_string()))?;
        let full = zone_vmm::boot::cmdline::boot_cmdline(&base, &spec.command, spec.virtio_devices())
            .map_err(|e| DaemonError::InvalidArgument(e.to_string()))?;
        let max = zone_vmm::vstate::layout::CMDLINE_MAX_SIZE - 1;
        if full.len() > max {
            return Err(DaemonError::InvalidArgument(format!(
                "the kernel command line with the zone's command is {} bytes; at most {max} fit (shorten --cmdline or the command)",
                full.len()
            )));
        }
        Ok(spec)
    }

    /// Creates and boots a zone; returns once its VMM runs.
    pub fn launch(self: &Arc<Self>, req: LaunchRequest) -> Result<ZoneRecord, DaemonError> {
        validate_name(&req.name)?;
        let sock = self.zone_dir(&req.name).vsock();
        if sock.as_os_str().len() > zone_vmm::devices::virtio::vsock::MAX_UDS_PATH {
            return Err(DaemonError::InvalidArgument(format!(
                "the zone's socket path {} is too long for a Unix socket; use a shorter zone name or state_dir",
                sock.display()
            )));
        }
        let spec = self.resolve(&req)?;
        let name = req.name.clone();
        // Opened now, with the caller's rights for what the caller named.
        let open = |what: &str, path: &Path, named: bool| {
            // A caller whose credentials are unknown gets nobody's rights.
            let caller = req.caller.unwrap_or(crate::artifacts::Caller { uid: 65534, gid: 65534 });
            crate::artifacts::open_as(named.then_some(caller), path).map_err(|e| {
                let who = if named && caller.uid != 0 { format!(" by you (uid {})", caller.uid) } else { String::new() };
                DaemonError::InvalidArgument(format!("the {what} {} cannot be read{who}: {e}", path.display()))
            })
        };
        let kernel_file = open("kernel", &spec.kernel, req.kernel.is_some())?;
        let initrd_file = spec.initrd.as_deref().map(|p| open("initrd", p, req.initrd.is_some())).transpose()?;
        let rootfs_file = match &spec.image {
            Some(img) => {
                let f = open("image root", &img.path, true)?;
                let len = f.metadata().map_err(internal)?.len();
                let need = img.rootfs.verity.hash_start_block.saturating_add(1).saturating_mul(4096);
                if len < need || len % 512 != 0 {
                    return Err(DaemonError::InvalidArgument(format!(
                        "the image root {} is {len} bytes, but its verity parameters need at least {need} in whole sectors; \
                         import the image again (zonectl image rm, zonectl image import)",
                        img.path.display()
                    )));
                }
                Some(f)
            }
            None => None,
        };
        // Reserve the name and check the limits under one lock.
        let record = {
            let mut zones = self.lock();
            if zones.contains_key(&name) {
                return Err(DaemonError::AlreadyExists(name));
            }
            let live: Vec<&ZoneRecord> = zones.values().map(|e| &e.record).filter(|r| r.state.is_live()).collect();
            let l = &self.config.limits;
            if live.len() >= l.max_zones {
                return Err(DaemonError::ResourceExhausted(format!(
                    "{} zones already run, the limit (limits.max_zones) is {}; stop or destroy one first",
                    live.len(),
                    l.max_zones
                )));
            }
            let used: u64 = live.iter().map(|r| r.spec.memory_mib).sum();
            if used + spec.memory_mib > l.max_total_memory_mib {
                return Err(DaemonError::ResourceExhausted(format!(
                    "{used} MiB are in use and {} MiB more would exceed limits.max_total_memory_mib = {} MiB",
                    spec.memory_mib, l.max_total_memory_mib
                )));
            }
            let cids: Vec<u32> = live.iter().map(|r| r.guest_cid).collect();
            let guest_cid = (FIRST_GUEST_CID..).find(|c| !cids.contains(c)).unwrap_or(FIRST_GUEST_CID);
            let mut spec = spec;
            let created_unix_ms = now_unix_ms();
            if let (Some(n), Some(_)) = (&self.config.network, &spec.net) {
                // Every zone's link stays assigned until the zone is destroyed.
                let links: Vec<u32> = zones.values().filter_map(|e| e.record.spec.net.as_ref().map(|a| a.link)).collect();
                let mut a = crate::network::assign(n, &links).map_err(|e| DaemonError::ResourceExhausted(e.to_string()))?;
                a.publish = req.publish.clone();
                a.policy = n.policy().describe(&name);
                spec.net = Some(a);
            }
            if let (Some(c), Some(list), Some(_)) = (&self.config.cni, &self.cni, &spec.net) {
                // The plugins' IPAM assigns the address; the number only tells launches apart.
                let links: Vec<u32> = zones.values().filter_map(|e| e.record.spec.net.as_ref().map(|a| a.link)).collect();
                let link = (0..).find(|k| !links.contains(k)).unwrap_or(0);
                let mut a = crate::network::assign_cni(c, list, &name, link, &created_unix_ms.to_string());
                a.publish = req.publish.clone();
                spec.net = Some(a);
            }
            let record = ZoneRecord {
                name: name.clone(),
                state: State::Creating,
                spec,
                failure: None,
                created_unix_ms,
                ready_uptime_ms: None,
                launch_to_ready_ms: None,
                vmm: None,
                exit_status: None,
                guest_cid,
                launch: None,
                jail: None,
            };
            zones.insert(name.clone(), Entry::new(record.clone()));
            record
        };
        match self.create(&record, kernel_file, initrd_file, rootfs_file) {
            Ok(r) => Ok(r),
            Err(e) => {
                if let Ok(r) = self.get(&name) {
                    self.record_stop(&r, &format!("failed: {e}"));
                    if let Some(j) = &r.jail {
                        jail::release(j);
                    }
                }
                // What the CNI plugins set up for it goes (the record must still be there).
                let _ = self.detach_cni(&name);
                // Its channel, forwards and published ports stop with it.
                if let Some(task) = self.lock().remove(&name).and_then(|mut e| e.channel.take()) {
                    task.abort();
                }
                let _ = self.store.remove(&name);
                Err(e)
            }
        }
    }

    fn create(
        self: &Arc<Self>,
        record: &ZoneRecord,
        kernel_file: File,
        initrd_file: Option<File>,
        rootfs_file: Option<File>,
    ) -> Result<ZoneRecord, DaemonError> {
        let name = &record.name;
        let dir = self.store.create_dir(name)?;
        self.store.save(record)?;
        // On a CNI network the plugins give the zone its address before
        // anything is measured.
        let mut spec = record.spec.clone();
        let cni_tap = self.attach_cni(name, &mut spec)?;
        let spec = &spec;
        // The jail first: its gid owns the zone's socket directory.
        let prepare_started = Instant::now();
        let jail = self
            .jailer
            .prepare(name, record.guest_cid - FIRST_GUEST_CID, spec.vcpus, spec.memory_mib)
            .map_err(internal)?;
        let prepare_us = prepare_started.elapsed().as_micros();
        self.update(name, |e| e.record.jail = Some(jail.clone()))?;
        dir.create_sock_dir(jail.gid).map_err(internal)?;
        let kvm = zone_vmm::vstate::kvm::open(Path::new(zone_vmm::vstate::kvm::KVM_PATH))
            .map_err(|e| DaemonError::FailedPrecondition(e.to_string()))?;

        // Measure: each artifact into a sealed memfd (or the sealed copy of
        // the same, unchanged file from the cache); the VMM boots those bytes.
        let measure_started = Instant::now();
        let (kernel, kernel_source) =
            self.artifacts.seal("kernel", kernel_file, &spec.kernel.display().to_string()).map_err(measure_error)?;
        let (initrd, initrd_source) = match (initrd_file, &spec.initrd) {
            (Some(f), Some(p)) => {
                let (sealed, source) = self.artifacts.seal("initramfs", f, &p.display().to_string()).map_err(measure_error)?;
                (Some(sealed), Some(source))
            }
            _ => (None, None),
        };
        let measure_us = measure_started.elapsed().as_micros();
        #[cfg(feature = "test-hooks")]
        if let Some(ms) = std::env::var(PAUSE_AFTER_MEASURE_ENV).ok().and_then(|v| v.parse().ok()) {
            // Tests only: a window to replace the files after measurement.
            tracing::warn!(zone = %name, ms, "test hook: pausing after measurement");
            std::thread::sleep(Duration::from_millis(ms));
        }
        // The command line, computed once: measured here, loaded verbatim by the VMM.
        let base = spec.kernel_params().map_err(|e| DaemonError::InvalidArgument(e.to_string()))?;
        let cmdline = zone_vmm::boot::cmdline::boot_cmdline(&base, &spec.command, spec.virtio_devices())
            .map_err(|e| DaemonError::InvalidArgument(e.to_string()))?;
        // Checked in `resolve` too; the CNI plugins' addresses are only known now.
        let max = zone_vmm::vstate::layout::CMDLINE_MAX_SIZE - 1;
        if cmdline.len() > max {
            return Err(DaemonError::InvalidArgument(format!(
                "the kernel command line with the zone's addresses and command is {} bytes; at most {max} fit (shorten --cmdline or the command)",
                cmdline.len()
            )));
        }
        let launch_record = LaunchRecord {
            version: RECORD_VERSION,
            host: self.config.host_id.clone(),
            zone: name.clone(),
            launch_id: new_launch_id()?,
            kernel: kernel.artifact.clone(),
            initrd: initrd.as_ref().map(|i| i.artifact.clone()),
            cmdline_sha256: attestation_proto::launch::sha256_hex(cmdline.as_bytes()),
            cmdline: cmdline.clone(),
            vcpus: u32::from(spec.vcpus),
            memory_mib: spec.memory_mib,
            devices: devices_of(spec, record.guest_cid),
            launched_unix_ms: now_unix_ms(),
            rootfs: spec.image.as_ref().map(|i| i.rootfs.clone()),
        };
        if launch_record.encode().len() > attestation_proto::launch::MAX_RECORD_LEN {
            return Err(DaemonError::InvalidArgument(format!(
                "the launch record would be {} bytes, more than the {} a log event holds; shorten the paths, command line or command",
                launch_record.encode().len(),
                attestation_proto::launch::MAX_RECORD_LEN
            )));
        }
        // The record knows its launch before the log does, so a crash in
        // between can still be closed with a stop event after a restart.
        self.update(name, |e| e.record.launch = Some(launch_record.clone()))?;
        let ledger_started = Instant::now();
        self.ledger.record_launch(self.config.tpm.pcr, &launch_record).map_err(ledger_error)?;
        let ledger_us = ledger_started.elapsed().as_micros();

        // The sockets the VMM serves: bound here (the jailed VMM creates no files).
        let vsock = ZoneDir::bind(&dir.vsock(), None).map_err(internal)?;
        let console = ZoneDir::bind(&dir.console_socket(), None).map_err(internal)?;
        // The scratch disk: created empty (sparse) for this launch.
        let scratch = match spec.scratch_mib {
            0 => None,
            mib => Some(dir.create_scratch(mib << 20).map_err(|e| {
                DaemonError::FailedPrecondition(format!("cannot create the zone's {mib} MiB scratch disk: {e}"))
            })?),
        };
        let mut disks = Vec::new();
        if rootfs_file.is_some() {
            disks.push(zone_vmm::launch::LaunchDisk { name: ROOTFS_DISK.into(), read_only: true });
        }
        if scratch.is_some() {
            disks.push(zone_vmm::launch::LaunchDisk { name: SCRATCH_DISK.into(), read_only: false });
        }
        // The network interface's TAP, its host side configured: it lives
        // as long as the VMM holds it. The policy's rules name it before it exists.
        if spec.net.is_some() {
            self.sync_firewall()?;
        }
        let forwards = self.firewall.as_ref().is_some_and(|f| f.policy().forwards());
        let tap = match cni_tap {
            Some(tap) => Some(tap),
            None => spec
                .net
                .as_ref()
                .map(|n| crate::network::create_tap(n, forwards))
                .transpose()
                .map_err(|e| DaemonError::FailedPrecondition(e.to_string()))?,
        };
        // Published ports are bound now: one in use fails the launch before the zone boots.
        let published = spec
            .net
            .as_ref()
            .map(crate::network::bind_published)
            .transpose()
            .map_err(DaemonError::FailedPrecondition)?
            .unwrap_or_default();
        let mut jail_spec = self.jailer.spec(&jail, &dir.sock_dir());
        // RLIMIT_FSIZE bounds the offset of every write, disks included.
        jail_spec.max_file_size = jail_spec.max_file_size.max(spec.scratch_mib << 20);
        self.open_channel(name, jail.gid, published)?;
        let config = LaunchConfig {
            zone: name.clone(),
            cmdline,
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            guest_cid: record.guest_cid,
            initrd: initrd.is_some(),
            disks,
            net: spec.net.as_ref().map(|n| zone_vmm::launch::LaunchNet {
                mac: n.mac.clone(),
                mtu: n.mtu,
                rx_rate: n.limits.rx(),
                tx_rate: n.limits.tx(),
            }),
            jail: jail_spec,
            #[cfg(feature = "test-hooks")]
            test_hooks: test_hooks(),
        };
        let config_fd = measure::seal_bytes("launch", &config.encode()).map_err(internal)?;
        let (console_log, outcome, vmm_log) = dir.open_for_vmm().map_err(internal)?;
        let null = File::open("/dev/null").map_err(internal)?;
        // SAFETY: `kvm` owns its descriptor and outlives the borrow (until spawn returns).
        let kvm_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(kvm.as_raw_fd()) };
        let mut fds = vec![
            (vmm_launch::CONFIG_FD, config_fd.as_fd()),
            (vmm_launch::KVM_FD, kvm_fd),
            (vmm_launch::KERNEL_FD, kernel.fd.as_fd()),
            (vmm_launch::CONSOLE_LOG_FD, console_log.as_fd()),
            (vmm_launch::OUTCOME_FD, outcome.as_fd()),
            (vmm_launch::VSOCK_LISTENER_FD, vsock.as_fd()),
            (vmm_launch::CONSOLE_LISTENER_FD, console.as_fd()),
        ];
        if let Some(i) = &initrd {
            fds.push((vmm_launch::INITRD_FD, i.fd.as_fd()));
        }
        for (fd, disk) in (vmm_launch::FIRST_DISK_FD..).zip(rootfs_file.iter().chain(scratch.iter())) {
            fds.push((fd, disk.as_fd()));
        }
        if let Some(t) = &tap {
            fds.push((vmm_launch::NET_FD, t.as_fd()));
        }
        let cgroups = jail.cgroups.clone();
        let migrate = move |pid: u32| jail::cgroup::enter(&cgroups, pid).map_err(|e| e.to_string());
        let cgroup_dir = match (self.jailer.clone_into_cgroup(), jail.cgroups.first()) {
            (true, Some(dir)) => Some(
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                    .open(dir)
                    .map_err(internal)?,
            ),
            _ => None,
        };
        let place = match (&cgroup_dir, jail.cgroups.is_empty()) {
            (Some(d), _) => spawn::Placement::Into(d.as_fd()),
            (None, false) => spawn::Placement::Migrate(&migrate),
            (None, true) => spawn::Placement::None,
        };
        let (pid, times) = spawn::spawn(&spawn::VmmCommand {
            program: self.jailer.vmm(),
            fds,
            log: vmm_log.as_fd(),
            null: null.as_fd(),
            place,
        })
        .map_err(internal)?;
        let spawn_us = times.clone_us + times.place_us + times.exec_us;
        let handle = supervisor::handle_of(pid);
        tracing::info!(
            zone = %name,
            pid,
            uid = jail.uid,
            kernel = %launch_record.kernel.sha256,
            kernel_cached = kernel_source == Source::Cached,
            initrd_cached = initrd_source == Some(Source::Cached),
            measure_us,
            ledger_us,
            prepare_us,
            spawn_us,
            clone_us = times.clone_us,
            place_us = times.place_us,
            exec_us = times.exec_us,
            "VMM started in its jail"
        );
        let record = self.update(name, |e| {
            e.record.state = State::Booting;
            e.record.vmm = Some(handle);
            e.launched = Instant::now();
        })?;
        self.watch_vmm(name, handle)?;
        Ok(record)
    }

    /// Logs the end of a zone's launch (no-op if it was never logged or already ended).
    fn record_stop(&self, record: &ZoneRecord, reason: &str) {
        let Some(launch) = &record.launch else { return };
        let stop = StopRecord {
            version: RECORD_VERSION,
            zone: record.name.clone(),
            launch_id: launch.launch_id.clone(),
            reason: reason.to_owned(),
            stopped_unix_ms: now_unix_ms(),
        };
        if let Err(e) = self.ledger.record_stop(self.config.tpm.pcr, &stop) {
            tracing::error!(zone = %record.name, error = %e, "cannot log the zone's stop event");
        }
    }

    /// Fresh evidence about a live zone for `nonce`.
    pub async fn evidence(&self, name: &str, nonce: &[u8]) -> Result<Vec<u8>, DaemonError> {
        self.launch_evidence(name, None, nonce).await
    }

    /// Fresh evidence about a live zone for `nonce`; with `launch_id`, only
    /// if the zone is still that launch (a host channel connection belongs
    /// to one launch of a name, never to the next zone of the same name).
    pub async fn launch_evidence(&self, name: &str, launch_id: Option<&str>, nonce: &[u8]) -> Result<Vec<u8>, DaemonError> {
        attestation_proto::evidence::check_nonce(nonce).map_err(|e| DaemonError::InvalidArgument(e.to_string()))?;
        let r = self.get(name)?;
        if !r.state.is_live() || r.state == State::Stopping {
            return Err(DaemonError::FailedPrecondition(format!("zone {name} is {}; only a running zone has evidence", r.state.as_str())));
        }
        let launch = r.launch.as_ref().ok_or_else(|| {
            DaemonError::FailedPrecondition(format!(
                "zone {name} has no measured launch in its record (the record was altered); destroy and relaunch it"
            ))
        })?;
        if launch_id.is_some_and(|id| id != launch.launch_id) {
            return Err(DaemonError::FailedPrecondition(format!("zone {name} was relaunched; this connection belongs to an earlier launch")));
        }
        // The log must hold, for this launch id, exactly the record the daemon
        // recorded for this zone: an altered record on disk gets no evidence.
        let expected = host_attest::evidence::Expected { zone: name.to_owned(), record: launch.encode() };
        if launch.zone != name {
            return Err(DaemonError::FailedPrecondition(format!(
                "zone {name}'s record names launch {} of zone {:?} (its record was altered); relaunch it",
                launch.launch_id, launch.zone
            )));
        }
        self.ledger.evidence(&launch.launch_id, expected, nonce).await.map_err(ledger_error)
    }

    /// The launch ID of a zone's current launch, if it was measured.
    pub fn launch_id(&self, name: &str) -> Option<String> {
        self.get(name).ok().and_then(|r| r.launch.map(|l| l.launch_id))
    }

    /// The ledger (event log, PCR, keys).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Starts the daemon's side of a zone's host channel and forwards: their
    /// listeners in `sock/` (group `gid`: the zone's VMM connects to them),
    /// and its published ports (`published`, bound by the caller).
    fn open_channel(
        self: &Arc<Self>,
        name: &str,
        gid: u32,
        published: Vec<(crate::network::Publish, std::net::TcpListener)>,
    ) -> Result<(), DaemonError> {
        let dir = self.zone_dir(name);
        let listen = |port: u32| -> Result<tokio::net::UnixListener, DaemonError> {
            let l = ZoneDir::bind(&dir.port_socket(port), Some(gid)).map_err(internal)?;
            l.set_nonblocking(true).map_err(internal)?;
            tokio::net::UnixListener::from_std(l).map_err(internal)
        };
        let channel_listener = listen(attestation_proto::channel::HOST_CHANNEL_PORT)?;
        let channel = channel::serve(Arc::clone(self), name.to_owned(), dir.clone(), channel_listener);
        let mut forwards = Vec::new();
        for f in &self.config.forwards {
            forwards.push(forward::serve(name.to_owned(), listen(f.port)?, f.clone()));
        }
        let zone_address = self.get(name).ok().and_then(|r| r.spec.net.map(|n| n.address));
        let published: Vec<_> = match zone_address {
            Some(addr) => {
                published.into_iter().map(|(p, l)| crate::network::serve_published(name.to_owned(), addr, p, l)).collect()
            }
            None => Vec::new(),
        };
        // One task per zone: aborting it stops the channel, the forwards and the published ports.
        let task = tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            set.spawn(channel);
            for f in forwards {
                set.spawn(f);
            }
            for p in published {
                set.spawn(p);
            }
            // Dropping the set (when this task is aborted) aborts them all.
            while set.join_next().await.is_some() {}
        });
        if let Some(e) = self.lock().get_mut(name) {
            if let Some(old) = e.channel.replace(task) {
                old.abort();
            }
        }
        Ok(())
    }

    fn watch_vmm(self: &Arc<Self>, name: &str, handle: VmmHandle) -> Result<(), DaemonError> {
        let watch = supervisor::Watch::new(handle.pid).map_err(|e| DaemonError::Internal(e.to_string()))?;
        let daemon = Arc::clone(self);
        let name = name.to_owned();
        tokio::spawn(async move {
            let status = watch.exited().await;
            // finish() logs a stop event: a TPM command, so off the async workers.
            let _ = tokio::task::spawn_blocking(move || daemon.finish(&name, Some(status))).await;
        });
        Ok(())
    }

    /// Records how a zone's VMM ended and releases what it held. `status` is
    /// `Some(wait status)` when the VMM was seen exiting, `None` when it was
    /// already gone at daemon start.
    fn finish(&self, name: &str, status: Option<Option<i32>>) {
        let dir = self.zone_dir(name);
        let outcome = dir.read_outcome();
        dir.remove_sockets();
        // Nothing of a stopped zone's network stays on the host: released
        // before the zone is seen stopped, so a destroy that follows finds it done.
        let _ = self.detach_cni(name);
        let result = self.update(name, |e| {
            if let Some(task) = e.channel.take() {
                task.abort();
            }
            if let Some(j) = e.record.jail.take() {
                jail::release(&j);
            }
            e.record.vmm = None;
            let stopping = e.record.state == State::Stopping;
            match &outcome {
                Some(o) if o.reason.is_normal() => {
                    e.record.state = State::Stopped;
                    if let ExitReason::PowerOff { status } = o.reason {
                        e.record.exit_status.get_or_insert(i32::from(status));
                    }
                }
                Some(o) => {
                    e.record.state = State::Failed;
                    e.record.failure = Some(o.reason.describe());
                }
                // Killed by its seccomp filter before it could report the call
                // (a violation while SIGSYS was blocked, e.g. inside pthread_kill).
                None if status.flatten().is_some_and(supervisor::killed_by_seccomp) => {
                    e.record.state = State::Failed;
                    e.record.failure = Some(
                        "seccomp violation: the VMM was killed by SIGSYS (the kernel log names the system call)".into(),
                    );
                }
                None if stopping => e.record.state = State::Stopped,
                None => {
                    e.record.state = State::Failed;
                    e.record.failure = Some(match status {
                        Some(s) => format!("the VMM process died ({})", supervisor::describe_status(s)),
                        None => "the VMM process ended while the daemon was not running and left no outcome".into(),
                    });
                }
            }
        });
        match result {
            Ok(r) => {
                let reason = r.failure.as_deref().map_or_else(|| r.state.as_str().to_owned(), |f| format!("failed: {f}"));
                self.record_stop(&r, &reason);
                tracing::info!(zone = %name, state = r.state.as_str(), failure = ?r.failure, "zone ended");
            }
            Err(e) => tracing::error!(zone = %name, error = %e, "cannot record the end of the zone"),
        }
    }

    /// On a CNI network: creates the zone's namespace, runs the plugins'
    /// ADD, creates the zone's TAP beside their `eth0` and joins the two;
    /// fills `spec.net` in from what they gave (address, gateway, MAC, MTU,
    /// nameservers). The record says `attached` before the first plugin runs,
    /// so a launch that fails or a daemon that crashes is cleaned up by
    /// [`Self::detach_cni`].
    fn attach_cni(&self, name: &str, spec: &mut Spec) -> Result<Option<zone_vmm::devices::virtio::net::Tap>, DaemonError> {
        let (Some(list), Some(net)) = (&self.cni, spec.net.as_mut()) else { return Ok(None) };
        let Some(link) = net.cni.as_mut() else { return Ok(None) };
        let failed = |e: &dyn std::fmt::Display| DaemonError::FailedPrecondition(format!("cannot connect zone {name} to the CNI network {}: {e}", list.name));
        // The record learns each step before the next side effect.
        let save = |link: &crate::network::CniLink| {
            let link = link.clone();
            self.update(name, |e| {
                if let Some(n) = e.record.spec.net.as_mut() {
                    n.cni = Some(link);
                }
            })
        };
        link.attached = true;
        link.conflist = Some(list.to_value());
        save(link)?;
        let started = Instant::now();
        let netns = crate::sandbox::create(name).map_err(|e| failed(&e))?;
        let result = list.add(&link.container_id, &netns).map_err(|e| failed(&e))?;
        link.result = Some(result.clone());
        save(link)?;
        let addr = crate::cni::address(&list.name, &result).map_err(|e| failed(&e))?;
        let (tap, eth) = crate::sandbox::open_tap(name).map_err(|e| failed(&e))?;
        crate::sandbox::redirect(name, &eth.mac, addr.address).map_err(|e| failed(&e))?;
        net.address = addr.address;
        net.prefix = addr.prefix;
        net.gateway = addr.gateway;
        if !addr.nameservers.is_empty() {
            net.nameservers = addr.nameservers;
        }
        net.mac = eth.mac;
        net.mtu = eth.mtu;
        let filled = net.clone();
        self.update(name, |e| e.record.spec.net = Some(filled))?;
        tracing::info!(zone = %name, network = %list.name, address = %net.address, ms = started.elapsed().as_millis() as u64, "connected to the CNI network");
        Ok(Some(tap))
    }

    /// Undoes [`Self::attach_cni`] if the plugins may still hold something
    /// of the zone's: their DEL (given the cached result), then the
    /// namespace. A no-op for zones not on a CNI network.
    fn detach_cni(&self, name: &str) -> Result<(), crate::cni::CniError> {
        let Some(config) = &self.config.cni else { return Ok(()) };
        let Ok(record) = self.get(name) else { return Ok(()) };
        let Some(link) = record.spec.net.as_ref().and_then(|n| n.cni.as_ref()).filter(|c| c.attached) else { return Ok(()) };
        // DEL with the configuration ADD ran with (as libcni caches it), not
        // the conflist as it may have been edited since.
        let list = match &link.conflist {
            Some(v) => crate::cni::NetworkList::parse(v.to_string().as_bytes(), &config.bin_dir)
                .map_err(|detail| crate::cni::CniError::Conflist { path: "(the zone's record)".into(), detail })?,
            None => match &self.cni {
                Some(l) => l.clone(),
                None => return Ok(()),
            },
        };
        let netns = std::path::PathBuf::from(&link.netns);
        if let Err(e) = list.del(&link.container_id, &netns, link.result.as_ref()) {
            // The namespace goes anyway; what the plugins keep outside it
            // (an address lease) stays until a later DEL succeeds.
            tracing::error!(zone = %name, error = %e, "CNI DEL failed; the zone stays marked attached: DEL runs again at destroy and at the next daemon start");
            let _ = crate::sandbox::remove(name);
            return Err(e);
        }
        if let Err(e) = crate::sandbox::remove(name) {
            tracing::warn!(zone = %name, error = %e, "cannot remove the zone's network namespace");
        }
        let _ = self.update(name, |e| {
            if let Some(c) = e.record.spec.net.as_mut().and_then(|n| n.cni.as_mut()) {
                c.attached = false;
                c.result = None;
            }
        });
        tracing::info!(zone = %name, network = %list.name, "disconnected from the CNI network");
        Ok(())
    }

    /// Called by the host channel: zone-guest said hello.
    pub fn mark_ready(&self, name: &str, ready_uptime_ms: u64) {
        // The first hello counts; a guest repeating it changes nothing.
        self.update_deferred(name, |e| {
            if e.record.state == State::Booting {
                e.record.ready_uptime_ms = Some(ready_uptime_ms);
                e.record.launch_to_ready_ms = Some(e.launched.elapsed().as_millis() as u64);
                e.record.state = State::Running;
            }
        });
    }

    /// Called by the host channel: the workload exited.
    pub fn mark_exited(&self, name: &str, status: i32) {
        self.update_deferred(name, |e| {
            if e.record.state.is_live() {
                e.record.exit_status = Some(status);
            }
        });
    }

    /// Waits until the zone has left `creating`/`booting`, or `timeout` passes.
    pub async fn wait(&self, name: &str, timeout: Duration) -> Result<ZoneRecord, DaemonError> {
        let mut rx = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let r = self.get(name)?;
            if !matches!(r.state, State::Creating | State::Booting) {
                return Ok(r);
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return Ok(r);
            }
        }
    }

    /// Stops a zone's VMM (SIGTERM, then SIGKILL after a grace period).
    pub async fn stop(&self, name: &str) -> Result<ZoneRecord, DaemonError> {
        let record = self.get(name)?;
        let Some(handle) = record.vmm.filter(|_| record.state.is_live()) else {
            return Ok(record);
        };
        self.update(name, |e| e.record.state = State::Stopping)?;
        supervisor::signal(handle, libc::SIGTERM);
        let mut rx = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        loop {
            let r = self.get(name)?;
            if !r.state.is_live() {
                return Ok(r);
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                tracing::warn!(zone = %name, "the VMM ignored SIGTERM; killing it");
                supervisor::signal(handle, libc::SIGKILL);
                let _ = tokio::time::timeout(Duration::from_secs(5), rx.changed()).await;
                return self.get(name);
            }
        }
    }

    /// Stops the zone if needed, then deletes it.
    pub async fn destroy(&self, name: &str) -> Result<(), DaemonError> {
        let r = self.stop(name).await?;
        if r.state.is_live() {
            return Err(DaemonError::FailedPrecondition(format!(
                "zone {name} is still {} after stopping it; retry `zonectl destroy {name}`",
                r.state.as_str()
            )));
        }
        // A no-op unless a DEL failed when the zone stopped: one more try.
        // The record stays while the plugins may hold its address.
        if let Err(e) = self.detach_cni(name) {
            return Err(DaemonError::FailedPrecondition(format!(
                "zone {name}'s CNI network could not be released ({e}); fix the plugins or their configuration, then retry `zonectl destroy {name}`"
            )));
        }
        let had_link = self.lock().remove(name).is_some_and(|e| e.record.spec.net.is_some());
        self.store.remove(name)?;
        self.changes.send_modify(|n| *n += 1);
        if had_link && let Err(e) = self.sync_firewall() {
            // Its link's rules stay until the next change; they name a TAP that is gone.
            tracing::warn!(zone = %name, error = %e, "cannot remove the zone's network rules");
        }
        Ok(())
    }

    /// Rewrites the zone network's nftables table for every zone that holds a
    /// link (a no-op without `[network]`).
    fn sync_firewall(&self) -> Result<(), DaemonError> {
        let Some(fw) = &self.firewall else { return Ok(()) };
        fw.sync(|| {
            self.lock()
                .values()
                .filter_map(|e| e.record.spec.net.as_ref().map(|a| crate::firewall::ZoneLink::of(&e.record.name, a)))
                .collect()
        })
        .map_err(|e| DaemonError::FailedPrecondition(e.to_string()))
    }

    /// Path of a zone's log file for `source`.
    pub fn log_path(&self, name: &str, workload: bool) -> Result<PathBuf, DaemonError> {
        let dir = self.dir_of(name)?;
        Ok(if workload { dir.workload_log() } else { dir.console_log() })
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }
}

impl channel::ZoneHost for Daemon {
    fn launch_id(&self, zone: &str) -> Option<String> {
        Daemon::launch_id(self, zone)
    }

    fn mark_ready(&self, zone: &str, ready_uptime_ms: u64) {
        Daemon::mark_ready(self, zone, ready_uptime_ms);
    }

    fn mark_exited(&self, zone: &str, status: i32) {
        Daemon::mark_exited(self, zone, status);
    }

    async fn evidence(
        &self,
        zone: &str,
        launch_id: Option<&str>,
        nonce: &[u8],
        activation: Option<attestation_proto::guest::Activation>,
    ) -> Result<(Vec<u8>, Vec<u8>), String> {
        // The activation first: evidence goes out only with its secret.
        let secret = match activation {
            Some(a) => self.ledger.activate(&a.id_object, &a.encrypted_secret).await.map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        let evidence = self.launch_evidence(zone, launch_id, nonce).await.map_err(|e| e.to_string())?;
        Ok((evidence, secret))
    }

    fn keys(&self) -> attestation_proto::guest::HostKeys {
        let k = self.ledger.keys();
        attestation_proto::guest::HostKeys {
            ak_public: k.ak_public.clone(),
            ek_public: k.ek_public.clone(),
            ek_certificate: k.ek_certificate.clone().unwrap_or_default(),
            ek_chain: k.ek_chain.clone(),
        }
    }
}

/// The VMM test hooks the environment asks for (test builds only).
#[cfg(feature = "test-hooks")]
fn test_hooks() -> vmm_launch::TestHooks {
    vmm_launch::TestHooks {
        probe_paths: std::env::var(VMM_PROBE_ENV)
            .map(|v| v.split(',').filter(|p| !p.is_empty()).map(PathBuf::from).collect())
            .unwrap_or_default(),
        forbidden_syscall_on_vcpu: std::env::var(VMM_FORBIDDEN_SYSCALL_ENV).is_ok_and(|v| v == "1"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_names_are_checked() {
        for ok in ["a", "web-1", "0", &"x".repeat(MAX_NAME)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "A", "a_b", "a/b", "..", &"x".repeat(MAX_NAME + 1), "zoné"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
