//! The daemon's half of each zone VMM's jail (the VMM does the rest:
//! `zone_vmm::jail`).
//!
//! For every zone the daemon:
//! - picks the zone's own unprivileged user and group: `jail.first_uid` plus
//!   the zone's slot (one uid/gid pair per live zone, never an account's);
//! - creates its jail directory `<jail.root>/<zone>` (an empty mount point
//!   the VMM mounts its tmpfs root on) and its cgroup ([`cgroup`]);
//! - starts `zone-vmm` as root in new mount, PID, IPC, UTS and network
//!   namespaces with only the contract's descriptors ([`spawn`]); the VMM
//!   pivots into the jail and drops to the zone's user before it reads a
//!   byte of the guest;
//! - when the zone ends, removes the cgroup and the jail directory.
//!
//! Without a usable cgroup hierarchy the daemon refuses to start unless
//! `jail.allow_unconfined = true` (VMMs then run without memory, pids and CPU
//! limits, and the daemon says so at start).

pub mod cgroup;
pub mod spawn;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zone_vmm::launch::{JailSpec, SeccompMode};

use cgroup::{Backend, CgroupMode, Limits};

/// The `[jail]` settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JailConfig {
    /// The `zone-vmm` binary (default: `zone-vmm` next to `hypervisor-agent`).
    /// It starts as root, so it must be owned by root and writable by nobody else.
    pub vmm: Option<PathBuf>,
    /// Where the zones' jail directories are made (default `<state_dir>/jail`).
    pub root: Option<PathBuf>,
    /// The first uid (and gid) of the zones' range: a zone's VMM runs as
    /// `first_uid + slot`.
    pub first_uid: u32,
    /// How many uids the range has (at least `limits.max_zones`).
    pub uid_count: u32,
    /// Which cgroup hierarchy to use.
    pub cgroup: CgroupMode,
    /// The zones' parent group: with v2 an absolute path below the cgroup2
    /// mount, or one relative to it; with v1 a name under the daemon's own
    /// group in each hierarchy. Default `zone-attestor`.
    pub cgroup_parent: Option<PathBuf>,
    /// Memory a VMM may use beyond its guest's (MiB): its own heap, thread
    /// stacks, the page tables of guest memory and device buffers.
    pub memory_overhead_mib: u64,
    /// CPU weight of each zone (cgroup v2 `cpu.weight`, 1-10000).
    pub cpu_weight: u32,
    /// Processes and threads per VMM beyond one per vCPU.
    pub extra_pids: u32,
    /// `RLIMIT_NOFILE` of a VMM.
    pub max_open_files: u64,
    /// What a seccomp violation does: `kill` (the zone fails, naming the
    /// call) or `log` (allowed and logged by the kernel; for debugging filters).
    pub seccomp: SeccompMode,
    /// Start even without a usable cgroup hierarchy.
    pub allow_unconfined: bool,
}

impl Default for JailConfig {
    fn default() -> Self {
        Self {
            vmm: None,
            root: None,
            first_uid: 3_000_000,
            uid_count: 65_536,
            cgroup: CgroupMode::Auto,
            cgroup_parent: None,
            memory_overhead_mib: 64,
            cpu_weight: 100,
            extra_pids: 16,
            max_open_files: 256,
            seccomp: SeccompMode::Kill,
            allow_unconfined: false,
        }
    }
}

/// Why the jail cannot be set up at daemon start; the message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JailSetupError(pub String);

/// What a live zone's jail holds (kept in its record, to release it after a daemon restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailRecord {
    /// The VMM's uid.
    pub uid: u32,
    /// The VMM's gid.
    pub gid: u32,
    /// The jail directory.
    pub root: PathBuf,
    /// The zone's cgroup directories.
    pub cgroups: Vec<PathBuf>,
}

/// The validated jail set-up of this daemon.
#[derive(Debug)]
pub struct Jailer {
    config: JailConfig,
    vmm: PathBuf,
    root: PathBuf,
    cgroups: Option<Backend>,
    _lock: std::fs::File,
}

fn setup(what: String) -> impl FnOnce(std::io::Error) -> JailSetupError {
    move |e| JailSetupError(format!("{what}: {e}"))
}

/// Accounts whose id falls in `[first, first + count)` (`/etc/passwd`, `/etc/group`).
fn accounts_in_range(first: u32, count: u32) -> Option<String> {
    for (file, kind) in [("/etc/passwd", "user"), ("/etc/group", "group")] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines() {
            let mut f = line.split(':');
            let (Some(name), Some(_), Some(id)) = (f.next(), f.next(), f.next()) else { continue };
            if let Ok(id) = id.parse::<u32>() {
                if id >= first && u64::from(id) < u64::from(first) + u64::from(count) {
                    return Some(format!("{kind} {name} has id {id}"));
                }
            }
        }
    }
    None
}

fn default_vmm() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("zone-vmm")))
        .unwrap_or_else(|| PathBuf::from("/usr/lib/zone-attestor/zone-vmm"))
}

impl Jailer {
    /// Checks the settings and prepares the jail root and the cgroup parent.
    /// `max_zones` is the daemon's `limits.max_zones`.
    pub fn new(config: &JailConfig, state_dir: &Path, max_zones: usize) -> Result<Self, JailSetupError> {
        let vmm = config.vmm.clone().unwrap_or_else(default_vmm);
        let meta = std::fs::metadata(&vmm).map_err(|e| {
            JailSetupError(format!(
                "jail.vmm = {}: {e}; install zone-vmm there (scripts/build.sh builds it) or set jail.vmm",
                vmm.display()
            ))
        })?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(JailSetupError(format!("jail.vmm = {}: not an executable file", vmm.display())));
        }
        if meta.uid() != 0 || meta.permissions().mode() & 0o022 != 0 {
            return Err(JailSetupError(format!(
                "jail.vmm = {}: it starts as root, so it must be owned by root and writable by nobody else \
                 (chown root {0}; chmod go-w {0})",
                vmm.display()
            )));
        }
        let c = config;
        let end = u64::from(c.first_uid) + u64::from(c.uid_count);
        if c.first_uid < 1000 || end > u64::from(u32::MAX - 1) || u64::from(c.uid_count) < max_zones as u64 {
            return Err(JailSetupError(format!(
                "jail.first_uid = {}, jail.uid_count = {}: the range must start at 1000 or above, end below 4294967294 \
                 and hold at least limits.max_zones = {max_zones} ids",
                c.first_uid, c.uid_count
            )));
        }
        if let Some(clash) = accounts_in_range(c.first_uid, c.uid_count) {
            return Err(JailSetupError(format!(
                "jail.first_uid = {}, jail.uid_count = {}: the range is already in use ({clash}); choose ids no account uses",
                c.first_uid, c.uid_count
            )));
        }
        if c.cpu_weight == 0 || c.cpu_weight > 10_000 || c.max_open_files < 64 || c.memory_overhead_mib == 0 {
            return Err(JailSetupError(
                "jail.cpu_weight must be 1-10000, jail.max_open_files at least 64, jail.memory_overhead_mib at least 1".into(),
            ));
        }
        let root = c.root.clone().unwrap_or_else(|| state_dir.join("jail"));
        std::fs::create_dir_all(&root).map_err(setup(format!("jail.root = {}: cannot create it", root.display())))?;
        let rmeta = std::fs::symlink_metadata(&root).map_err(setup(format!("jail.root = {}", root.display())))?;
        if !rmeta.is_dir() || rmeta.uid() != 0 {
            return Err(JailSetupError(format!("jail.root = {}: must be a directory owned by root", root.display())));
        }
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
            .map_err(setup(format!("jail.root = {}: cannot set its mode", root.display())))?;
        let lock = lock_root(&root)?;
        let cgroups = Backend::detect(c.cgroup, c.cgroup_parent.as_deref()).map_err(|e| JailSetupError(e.to_string()))?;
        match &cgroups {
            Some(b) => tracing::info!(cgroup = b.version(), "zone VMMs are confined by cgroups"),
            None if c.allow_unconfined => tracing::warn!(
                "no usable cgroup hierarchy (memory, pids, cpu): zone VMMs run WITHOUT memory, process and CPU limits \
                 (jail.allow_unconfined = true)"
            ),
            None => {
                return Err(JailSetupError(
                    "no usable cgroup hierarchy with the memory, pids and cpu controllers: zone VMMs would run without \
                     limits. Mount cgroup v2 (or the v1 memory, pids and cpu hierarchies), or set \
                     jail.allow_unconfined = true to run them unconfined"
                        .into(),
                ));
            }
        }
        Ok(Self { config: c.clone(), vmm, root, cgroups, _lock: lock })
    }

    /// The VMM binary.
    pub fn vmm(&self) -> &Path {
        &self.vmm
    }

    /// Whether VMMs are confined by cgroups.
    pub fn has_cgroups(&self) -> bool {
        self.cgroups.is_some()
    }

    /// Whether a VMM can be born in its cgroup (v2), rather than moved there (v1).
    pub fn clone_into_cgroup(&self) -> bool {
        self.cgroups.as_ref().is_some_and(Backend::clone_into)
    }

    /// The uid (= gid) of slot `slot`.
    pub fn uid_of(&self, slot: u32) -> Result<u32, JailSetupError> {
        if slot >= self.config.uid_count {
            return Err(JailSetupError(format!("no uid left in the jail range (jail.uid_count = {})", self.config.uid_count)));
        }
        Ok(self.config.first_uid + slot)
    }

    /// Creates the jail directory and cgroup of zone `name` (`slot`, `vcpus`,
    /// `memory_mib` of guest memory); returns what to record.
    pub fn prepare(&self, name: &str, slot: u32, vcpus: u8, memory_mib: u64) -> Result<JailRecord, JailSetupError> {
        let uid = self.uid_of(slot)?;
        let root = self.root.join(name);
        let _ = std::fs::remove_dir(&root);
        std::fs::create_dir(&root).map_err(setup(format!("cannot create the jail directory {}", root.display())))?;
        let limits = Limits {
            memory_max: (memory_mib + self.config.memory_overhead_mib) << 20,
            pids_max: u32::from(vcpus) + self.config.extra_pids,
            cpu_weight: self.config.cpu_weight,
        };
        let cgroups = match &self.cgroups {
            Some(b) => match b.create(name, limits) {
                Ok(dirs) => dirs,
                Err(e) => {
                    let _ = std::fs::remove_dir(&root);
                    return Err(JailSetupError(e.to_string()));
                }
            },
            None => Vec::new(),
        };
        Ok(JailRecord { uid, gid: uid, root, cgroups })
    }

    /// The VMM's view of its jail.
    pub fn spec(&self, record: &JailRecord, sock_dir: &Path) -> JailSpec {
        JailSpec {
            root: record.root.clone(),
            sock_dir: sock_dir.to_owned(),
            uid: record.uid,
            gid: record.gid,
            max_open_files: self.config.max_open_files,
            max_file_size: zone_vmm::process::MAX_CONSOLE_LOG + (1 << 20),
            seccomp: self.config.seccomp,
        }
    }
}

impl Jailer {
    /// Reclaims the jail of zone `name` whose record was lost: kills what
    /// still runs in its cgroups (an unmanaged VMM), then removes them and
    /// its jail directory. Returns how many processes were killed.
    pub fn reclaim(&self, name: &str) -> usize {
        let dirs = self.cgroups.as_ref().map(|b| b.dirs_of(name)).unwrap_or_default();
        let killed = cgroup::kill_all(&dirs);
        let record = JailRecord { uid: 0, gid: 0, root: self.root.join(name), cgroups: dirs.into_iter().filter(|d| d.exists()).collect() };
        release(&record);
        killed
    }
}

/// Releases a zone's jail: its cgroup(s) and jail directory.
pub fn release(record: &JailRecord) {
    cgroup::remove(&record.cgroups);
    if let Err(e) = std::fs::remove_dir(&record.root) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %record.root.display(), error = %e, "cannot remove a zone's jail directory");
        }
    }
}

/// Takes `<root>/.lock` exclusively: one daemon per jail root.
fn lock_root(root: &Path) -> Result<std::fs::File, JailSetupError> {
    use std::os::fd::AsRawFd;
    let path = root.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(setup(format!("jail.root = {}: cannot open {}", root.display(), path.display())))?;
    // SAFETY: flock on a descriptor we hold.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } < 0 {
        return Err(JailSetupError(format!(
            "jail.root = {}: already in use by another hypervisor-agent; give each daemon its own state_dir and jail.root",
            root.display()
        )));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_ranges_that_clash_with_accounts_are_found() {
        assert!(accounts_in_range(0, 1).unwrap().contains("root"));
        assert_eq!(accounts_in_range(3_000_000, 65_536), None);
    }
}
