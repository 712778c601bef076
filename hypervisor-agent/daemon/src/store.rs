//! Persisted zone records: one directory per zone under
//! `<state_dir>/zones/<name>/` (laid out by [`ZoneDir`]), its record in
//! `zone.json`, written atomically, so a crash leaves either the old or the
//! new record, never a torn one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::jail::JailRecord;
use crate::zone_dir::ZoneDir;

/// Zone lifecycle states (the API's `ZoneState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Being prepared.
    Creating,
    /// VMM running, zone-guest not ready yet.
    Booting,
    /// zone-guest ready.
    Running,
    /// Stop requested.
    Stopping,
    /// Ended normally.
    Stopped,
    /// Ended abnormally; see `failure`.
    Failed,
}

impl State {
    /// Whether the zone holds resources (a VMM process, memory).
    pub fn is_live(self) -> bool {
        matches!(self, Self::Creating | Self::Booting | Self::Running | Self::Stopping)
    }

    /// Lower-case name, as shown by `zonectl`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Booting => "booting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }
}

/// What a zone boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// Kernel path.
    pub kernel: PathBuf,
    /// Initramfs path.
    pub initrd: Option<PathBuf>,
    /// Kernel command line (without the devices the VMM adds).
    pub cmdline: String,
    /// vCPUs.
    pub vcpus: u8,
    /// Memory (MiB).
    pub memory_mib: u64,
    /// The zone's command.
    pub command: Vec<String>,
    /// Size of the zone's writable scratch disk (MiB; 0: none).
    #[serde(default)]
    pub scratch_mib: u64,
    /// The image root the command runs in, if any.
    #[serde(default)]
    pub image: Option<ImageSpec>,
    /// The network interface, with the addresses assigned to it (kept until
    /// the zone is destroyed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<crate::network::NetAssignment>,
}

/// An image root: the verity-protected disk zonectl's store holds, and how
/// the image's process runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    /// `rootfs.img` on the host.
    pub path: PathBuf,
    /// What is measured: image digest, file system, verity parameters.
    pub rootfs: attestation_proto::launch::Rootfs,
    /// The image's environment, directory and user.
    pub env: Vec<String>,
    /// Working directory.
    pub workdir: String,
    /// User.
    pub user: String,
}

impl Spec {
    /// The zone's virtio-mmio devices: the vsock, the image root's disk if
    /// any, the scratch disk if any, then the network interface if any.
    pub fn virtio_devices(&self) -> u32 {
        1 + u32::from(self.image.is_some()) + u32::from(self.scratch_mib > 0) + u32::from(self.net.is_some())
    }

    /// The kernel command line before the devices and the command: the
    /// configured one, the network interface's addresses (`zone.net=`), and
    /// for an image zone the verity root's table (`dm-mod.create=`) and the
    /// image's process (`zone.root=` …).
    pub fn kernel_params(&self) -> Result<String, attestation_proto::zone::CommandError> {
        let base = match &self.net {
            Some(n) => format!("{} {}", self.cmdline, n.params().param()),
            None => self.cmdline.clone(),
        };
        let Some(img) = &self.image else { return Ok(base) };
        let process = attestation_proto::zone::ImageProcess {
            fstype: img.rootfs.format.clone(),
            env: img.env.clone(),
            workdir: img.workdir.clone(),
            user: img.user.clone(),
        };
        zone_vmm::boot::cmdline::with_image(&base, &img.rootfs.verity, &process)
    }
}

/// The VMM process of a zone, identified so that a recycled PID is never
/// mistaken for it: the PID plus its start time (field 22 of /proc/PID/stat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmHandle {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot.
    pub start_ticks: u64,
}

/// Everything the daemon keeps about a zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneRecord {
    /// Unique name.
    pub name: String,
    /// Lifecycle state.
    pub state: State,
    /// What it boots.
    pub spec: Spec,
    /// Why it failed.
    pub failure: Option<String>,
    /// Creation time (Unix ms).
    pub created_unix_ms: u64,
    /// Guest uptime at readiness.
    pub ready_uptime_ms: Option<u64>,
    /// Launch → ready wall time.
    pub launch_to_ready_ms: Option<u64>,
    /// The running VMM, if any.
    pub vmm: Option<VmmHandle>,
    /// The workload's exit status.
    pub exit_status: Option<i32>,
    /// vsock context id of the guest.
    pub guest_cid: u32,
    /// What was measured (set before the launch event is logged).
    #[serde(default)]
    pub launch: Option<attestation_proto::launch::LaunchRecord>,
    /// The VMM's jail (uid, jail directory, cgroups) while the zone holds one.
    #[serde(default)]
    pub jail: Option<JailRecord>,
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk is full: nothing was changed.
    #[error(
        "the state directory {dir} is full (no space left on device); free space there, the existing zones are unaffected"
    )]
    Full {
        /// The directory.
        dir: PathBuf,
    },
    /// Any other I/O failure.
    #[error("state directory {path}: {source}")]
    Io {
        /// What was being accessed.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A record that cannot be parsed.
    #[error("zone record {path} is corrupt: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// What [`Store::load_all`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Readable records, sorted by name.
    pub records: Vec<ZoneRecord>,
    /// Zone directories without a record.
    pub incomplete: Vec<String>,
    /// Zone directories whose record is unreadable: (name, what is wrong).
    pub corrupt: Vec<(String, String)>,
}

/// The zone directories.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| {
        if host_attest::durable::is_disk_full(&source) {
            StoreError::Full { dir: path.parent().unwrap_or(path).to_owned() }
        } else {
            StoreError::Io { path: path.to_owned(), source }
        }
    }
}

/// Creates the state directory (mode 0700) if it is missing; an existing
/// one that other users can read or enter is tightened to 0700 with a
/// warning (it holds the zones' records, logs and the TPM's key contexts).
pub fn ensure_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err(dir))?;
        return Ok(());
    }
    let mode = std::fs::metadata(dir).map_err(io_err(dir))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "the state directory is open to other users; setting it to 0700");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
    }
    Ok(())
}

impl Store {
    /// Opens (creating) `<state_dir>/zones`.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let root = state_dir.join("zones");
        std::fs::create_dir_all(&root).map_err(io_err(&root))?;
        Ok(Self { root })
    }

    /// The directory of zone `name`.
    pub fn zone_dir(&self, name: &str) -> ZoneDir {
        ZoneDir::new(self.root.join(name))
    }

    /// Creates the directory of a new zone.
    pub fn create_dir(&self, name: &str) -> Result<ZoneDir, StoreError> {
        let dir = self.zone_dir(name);
        dir.create().map_err(io_err(dir.path()))?;
        Ok(dir)
    }

    /// Writes `record` atomically.
    pub fn save(&self, record: &ZoneRecord) -> Result<(), StoreError> {
        let dir = self.zone_dir(&record.name);
        let json = serde_json::to_vec_pretty(record)
            .map_err(|e| StoreError::Corrupt { path: dir.record(), detail: e.to_string() })?;
        dir.save_record(&json).map_err(io_err(&dir.record()))
    }

    /// Every zone record, sorted by name. Directories without a record (a
    /// crash during creation) are reported in `incomplete`; records that do
    /// not parse (or name another zone) in `corrupt`, with what is wrong.
    pub fn load_all(&self) -> Result<Loaded, StoreError> {
        let mut records = Vec::new();
        let mut incomplete = Vec::new();
        let mut corrupt = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io_err(&self.root))? {
            let entry = entry.map_err(io_err(&self.root))?;
            let path = entry.path().join("zone.json");
            let dir_name = entry.file_name().to_string_lossy().into_owned();
            match std::fs::read(&path) {
                Ok(bytes) => match serde_json::from_slice::<ZoneRecord>(&bytes) {
                    Ok(r) if r.name == dir_name => records.push(r),
                    Ok(r) => corrupt.push((dir_name, format!("it names zone {:?}", r.name))),
                    Err(e) => corrupt.push((dir_name, e.to_string())),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    incomplete.push(entry.file_name().to_string_lossy().into_owned())
                }
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        records.sort_by(|a: &ZoneRecord, b| a.name.cmp(&b.name));
        corrupt.sort();
        Ok(Loaded { records, incomplete, corrupt })
    }

    /// Keeps a corrupt record's bytes as `zone.json.corrupt` (nothing is
    /// deleted) so a new record can take its place.
    pub fn set_aside(&self, name: &str) -> Result<PathBuf, StoreError> {
        let dir = self.zone_dir(name);
        let kept = dir.path().join("zone.json.corrupt");
        std::fs::rename(dir.record(), &kept).map_err(io_err(&dir.record()))?;
        Ok(kept)
    }

    /// Deletes a zone's directory.
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        let dir = self.zone_dir(name);
        match std::fs::remove_dir_all(dir.path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(dir.path())(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> ZoneRecord {
        ZoneRecord {
            name: name.into(),
            state: State::Booting,
            spec: Spec {
                kernel: "/k".into(),
                initrd: None,
                cmdline: "console=ttyS0".into(),
                vcpus: 1,
                memory_mib: 64,
                command: vec![],
                scratch_mib: 0,
                image: None,
                net: None,
            },
            failure: None,
            created_unix_ms: 1,
            ready_uptime_ms: None,
            launch_to_ready_ms: None,
            vmm: Some(VmmHandle { pid: 7, start_ticks: 9 }),
            launch: None,
            jail: None,
            exit_status: None,
            guest_cid: 3,
        }
    }

    #[test]
    fn records_round_trip_and_incomplete_dirs_are_reported() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.create_dir("b").unwrap();
        s.save(&record("b")).unwrap();
        s.create_dir("a").unwrap();
        s.save(&record("a")).unwrap();
        s.create_dir("half").unwrap();
        let Loaded { records: all, incomplete, corrupt } = s.load_all().unwrap();
        assert!(corrupt.is_empty());
        assert_eq!(all.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(all[0], record("a"));
        assert_eq!(incomplete, ["half"]);
        assert!(s.create_dir("a").is_err(), "a zone directory is created once");
        s.remove("a").unwrap();
        s.remove("a").unwrap();
        assert_eq!(s.load_all().unwrap().records.len(), 1);
    }

    #[test]
    fn a_corrupt_record_is_named_and_set_aside_and_the_others_load() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.create_dir("x").unwrap();
        std::fs::write(s.zone_dir("x").record(), b"{not json").unwrap();
        s.create_dir("y").unwrap();
        s.save(&record("y")).unwrap();
        s.create_dir("z").unwrap();
        std::fs::write(s.zone_dir("z").record(), serde_json::to_vec(&record("y")).unwrap()).unwrap();
        let l = s.load_all().unwrap();
        assert_eq!(l.records, [record("y")]);
        assert_eq!(l.corrupt.len(), 2);
        assert_eq!(l.corrupt[0].0, "x");
        assert!(l.corrupt[1].1.contains("names zone \"y\""), "{:?}", l.corrupt);
        let kept = s.set_aside("x").unwrap();
        assert_eq!(std::fs::read(kept).unwrap(), b"{not json");
        assert!(!s.zone_dir("x").record().exists());
    }
}
