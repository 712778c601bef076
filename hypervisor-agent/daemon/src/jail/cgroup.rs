//! One control group per zone VMM: memory, process count and CPU weight.
//!
//! - **cgroup v2** (the unified hierarchy at `/sys/fs/cgroup`, or the
//!   `unified` mount of a hybrid host when it has the controllers): the zones'
//!   parent group (`jail.cgroup_parent`: absolute, or relative to the mount;
//!   default `<mount>/zone-attestor`) gets
//!   `+memory +pids +cpu` in its parent's and its own `cgroup.subtree_control`;
//!   each zone gets `<parent>/<zone>` with `memory.max`, `memory.swap.max = 0`,
//!   `pids.max` and `cpu.weight`.
//! - **cgroup v1** (hosts whose memory, pids and cpu controllers are still on
//!   the legacy hierarchies, as Firecracker's jailer also supports): in each
//!   hierarchy, `<the daemon's own group>/<jail.cgroup_parent or
//!   zone-attestor>/<zone>` with `memory.limit_in_bytes`, `pids.max` and
//!   `cpu.shares`.
//!
//! The daemon writes the VMM's PID into the group(s) before the VMM may run,
//! and removes the group(s) when the zone ends.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Which cgroup hierarchy to use (`jail.cgroup`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupMode {
    /// v2 when it has the memory, pids and cpu controllers, else v1.
    #[default]
    Auto,
    /// The unified hierarchy only.
    V2,
    /// The legacy hierarchies only.
    V1,
}

/// A zone's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory (guest memory + the VMM's overhead).
    pub memory_max: u64,
    /// Processes and threads.
    pub pids_max: u32,
    /// CPU weight (1-10000, 100 is the default share).
    pub cpu_weight: u32,
}

/// The cgroup set-up could not be used; the message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CgroupError(pub String);

fn err(what: String) -> impl FnOnce(std::io::Error) -> CgroupError {
    move |e| CgroupError(format!("{what}: {e}"))
}

/// The hierarchy in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// cgroup v2: the zones' parent group.
    V2 {
        /// The parent group's directory.
        parent: PathBuf,
    },
    /// cgroup v1: the zones' parent group in each hierarchy.
    V1 {
        /// `(controller, parent directory)` for memory, pids and cpu.
        parents: Vec<(&'static str, PathBuf)>,
    },
}

/// A mounted cgroup file system.
#[derive(Debug, Clone)]
struct Mount {
    point: PathBuf,
    fstype: String,
    options: Vec<String>,
}

fn mounts() -> Vec<Mount> {
    parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            // `id parent major:minor root mountpoint options ... - fstype source superoptions`
            let (left, right) = l.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?.to_owned();
            let _source = r.next()?;
            let options = r.next().unwrap_or("").split(',').map(str::to_owned).collect();
            Some(Mount { point: PathBuf::from(point.replace("\\040", " ")), fstype, options })
        })
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .collect()
}

/// The daemon's own group in the v1 hierarchy of `controller` (from /proc/self/cgroup).
fn own_v1_group(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let _id = f.next()?;
        let controllers = f.next()?;
        let path = f.next()?;
        controllers.split(',').any(|c| c == controller).then(|| path.to_owned())
    })
}

const V2_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

fn v2_mount() -> Option<PathBuf> {
    let m = mounts().into_iter().find(|m| m.fstype == "cgroup2")?;
    let available = std::fs::read_to_string(m.point.join("cgroup.controllers")).unwrap_or_default();
    let has = |c: &str| available.split_whitespace().any(|a| a == c);
    V2_CONTROLLERS.iter().all(|c| has(c)).then_some(m.point)
}

fn v1_hierarchies() -> Option<Vec<(&'static str, PathBuf)>> {
    let all = mounts();
    let mut out = Vec::new();
    for c in ["memory", "pids", "cpu"] {
        let m = all.iter().find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == c))?;
        let own = own_v1_group(c)?;
        out.push((c, m.point.join(own.trim_start_matches('/'))));
    }
    Some(out)
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(err(format!("cannot write {value:?} to {}", path.display())))
}

fn enable_controllers(group: &Path) -> Result<(), CgroupError> {
    let control = group.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&control).unwrap_or_default();
    let missing: Vec<String> =
        V2_CONTROLLERS.iter().filter(|c| !enabled.split_whitespace().any(|e| e == **c)).map(|c| format!("+{c}")).collect();
    if missing.is_empty() {
        return Ok(());
    }
    write(&control, &missing.join(" ")).map_err(|e| {
        CgroupError(format!(
            "{e}: the memory, pids and cpu controllers cannot be enabled below {} (a group with processes of its own \
             cannot delegate them; point jail.cgroup_parent at a group the daemon may manage, e.g. with systemd \
             Delegate=yes)",
            group.display()
        ))
    })
}

impl Backend {
    /// Finds the hierarchy, creates the zones' parent group and checks it is
    /// usable. `None`: no usable cgroups (the caller decides whether that is allowed).
    pub fn detect(mode: CgroupMode, parent: Option<&Path>) -> Result<Option<Self>, CgroupError> {
        let v2 = || -> Result<Option<Self>, CgroupError> {
            let Some(mount) = v2_mount() else { return Ok(None) };
            // A relative parent is below the hierarchy's root.
            let parent = mount.join(parent.unwrap_or(Path::new("zone-attestor")));
            if !parent.starts_with(&mount) || parent == mount {
                return Err(CgroupError(format!(
                    "jail.cgroup_parent = {}: it must be a group below the cgroup v2 mount {}",
                    parent.display(),
                    mount.display()
                )));
            }
            if let Some(up) = parent.parent() {
                enable_controllers(up)?;
            }
            std::fs::create_dir_all(&parent).map_err(err(format!("jail.cgroup_parent: cannot create {}", parent.display())))?;
            enable_controllers(&parent)?;
            Ok(Some(Self::V2 { parent }))
        };
        let v1 = || -> Result<Option<Self>, CgroupError> {
            let Some(hierarchies) = v1_hierarchies() else { return Ok(None) };
            let name = parent.map_or_else(|| PathBuf::from("zone-attestor"), Path::to_owned);
            if name.is_absolute() || name.components().count() != 1 {
                return Err(CgroupError(format!(
                    "jail.cgroup_parent = {}: with cgroup v1 it is the name of the zones' group under the daemon's own \
                     group in each hierarchy (one path component, e.g. \"zone-attestor\")",
                    name.display()
                )));
            }
            let mut parents = Vec::new();
            for (c, base) in hierarchies {
                let p = base.join(&name);
                std::fs::create_dir_all(&p).map_err(err(format!("jail.cgroup_parent: cannot create {}", p.display())))?;
                parents.push((c, p));
            }
            Ok(Some(Self::V1 { parents }))
        };
        match mode {
            CgroupMode::V2 => v2(),
            CgroupMode::V1 => v1(),
            CgroupMode::Auto => match v2()? {
                Some(b) => Ok(Some(b)),
                None => v1(),
            },
        }
    }

    /// Whether a child can be born in a group of this hierarchy (v2's `CLONE_INTO_CGROUP`).
    pub fn clone_into(&self) -> bool {
        matches!(self, Self::V2 { .. })
    }

    /// Short name for logs.
    pub fn version(&self) -> &'static str {
        match self {
            Self::V2 { .. } => "v2",
            Self::V1 { .. } => "v1",
        }
    }

    /// The group directories zone `name` has (or would have).
    pub fn dirs_of(&self, name: &str) -> Vec<PathBuf> {
        match self {
            Self::V2 { parent } => vec![parent.join(name)],
            Self::V1 { parents } => parents.iter().map(|(_, p)| p.join(name)).collect(),
        }
    }

    /// Creates the group(s) of zone `name` with `limits`; returns their
    /// directories (a leftover group of the same name is replaced).
    pub fn create(&self, name: &str, limits: Limits) -> Result<Vec<PathBuf>, CgroupError> {
        let mk = |dir: &Path| -> Result<(), CgroupError> {
            let _ = std::fs::remove_dir(dir);
            std::fs::create_dir(dir).map_err(err(format!("cannot create the zone's cgroup {}", dir.display())))
        };
        match self {
            Self::V2 { parent } => {
                let dir = parent.join(name);
                mk(&dir)?;
                let result = (|| {
                    write(&dir.join("memory.max"), &limits.memory_max.to_string())?;
                    if dir.join("memory.swap.max").exists() {
                        write(&dir.join("memory.swap.max"), "0")?;
                    }
                    write(&dir.join("pids.max"), &limits.pids_max.to_string())?;
                    write(&dir.join("cpu.weight"), &limits.cpu_weight.to_string())
                })();
                if let Err(e) = result {
                    let _ = std::fs::remove_dir(&dir);
                    return Err(e);
                }
                Ok(vec![dir])
            }
            Self::V1 { parents } => {
                let mut made = Vec::new();
                let result = (|| {
                    for (c, parent) in parents {
                        let dir = parent.join(name);
                        mk(&dir)?;
                        made.push(dir.clone());
                        match *c {
                            "memory" => write(&dir.join("memory.limit_in_bytes"), &limits.memory_max.to_string())?,
                            "pids" => write(&dir.join("pids.max"), &limits.pids_max.to_string())?,
                            // v1 shares: 1024 is the default weight of 100.
                            _ => write(&dir.join("cpu.shares"), &(u64::from(limits.cpu_weight) * 1024 / 100).max(2).to_string())?,
                        }
                    }
                    Ok(())
                })();
                if let Err(e) = result {
                    remove(&made);
                    return Err(e);
                }
                Ok(made)
            }
        }
    }
}

/// Moves process `pid` into the groups `dirs`.
pub fn enter(dirs: &[PathBuf], pid: u32) -> Result<(), CgroupError> {
    for d in dirs {
        write(&d.join("cgroup.procs"), &pid.to_string())?;
    }
    Ok(())
}

/// Kills (SIGKILL) every process in the groups `dirs`; returns how many.
pub fn kill_all(dirs: &[PathBuf]) -> usize {
    let mut killed = 0;
    for d in dirs {
        for pid in std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default().lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) of a process inside a zone's own cgroup.
            if pid > 1 && unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
    }
    killed
}

/// Removes the groups `dirs` (once their processes are gone; a group that
/// still has processes is retried briefly, then left with a warning).
pub fn remove(dirs: &[PathBuf]) {
    for d in dirs {
        for attempt in 0..50 {
            match std::fs::remove_dir(d) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if attempt == 49 => tracing::warn!(group = %d.display(), error = %e, "cannot remove a zone's cgroup"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_mounts_are_found_in_mountinfo() {
        let text = "24 30 0:21 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755\n\
                    25 24 0:22 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw\n\
                    28 24 0:25 / /sys/fs/cgroup/cpu,cpuacct rw shared:13 - cgroup cgroup rw,cpu,cpuacct\n\
                    29 24 0:26 / /sys/fs/cgroup/memory rw shared:14 - cgroup cgroup rw,memory\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(m[0].fstype, "cgroup2");
        assert!(m[1].options.iter().any(|o| o == "cpu") && m[1].options.iter().any(|o| o == "cpuacct"));
        assert_eq!(m[2].point, PathBuf::from("/sys/fs/cgroup/memory"));
    }

    #[test]
    fn a_v1_parent_must_be_one_name() {
        if v1_hierarchies().is_some() {
            let e = Backend::detect(CgroupMode::V1, Some(Path::new("/abs/path"))).unwrap_err();
            assert!(e.to_string().contains("jail.cgroup_parent"), "{e}");
        }
    }
}
