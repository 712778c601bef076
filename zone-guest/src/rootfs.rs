//! An image zone's root: the verity device the kernel set up from the
//! measured command line (`/dev/dm-0`), mounted read-only under a tmpfs
//! overlay, with `/proc`, `/sys` and `/dev` inside; the command runs in it
//! (chroot) as the image's user, in its working directory, with its
//! environment. zone-guest itself stays in the initramfs, keeping the host
//! channel.
//!
//! The parts here that are plain logic (users from the image's `passwd` and
//! `group`, the program search along the image's `PATH`) are unit-tested;
//! [`prepare`] does the mounts.

use std::ffi::CString;
use std::path::Path;

use attestation_proto::zone::{ImageProcess, ROOT_DEVICE};

/// Where the read-only image is mounted.
const LOWER: &str = "/run/zone/lower";
/// The overlay's writable tmpfs.
const RW: &str = "/run/zone/rw";
/// The workload's root.
pub const ROOT: &str = "/run/zone/root";
/// `PATH` when the image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The image's process, resolved against its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// The program, as a path inside the root.
    pub program: String,
    /// uid, gid and supplementary groups.
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    /// Supplementary groups (from the image's `/etc/group`).
    pub groups: Vec<u32>,
    /// Working directory inside the root.
    pub workdir: String,
    /// The environment (`NAME=value`).
    pub env: Vec<(String, String)>,
}

fn mount(src: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: Option<&str>) -> Result<(), String> {
    let (s, t, f) = (cstr(src)?, cstr(target)?, cstr(fstype)?);
    let d = data.map(cstr).transpose()?;
    let dp = d.as_ref().map_or(std::ptr::null(), |d| d.as_ptr().cast());
    // SAFETY: valid NUL-terminated strings that outlive the call.
    if unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, dp) } != 0 {
        return Err(format!("mounting {fstype} {src} on {target}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn cstr(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} holds a NUL"))
}

fn mkdir(p: &str) -> Result<(), String> {
    std::fs::create_dir_all(p).map_err(|e| format!("creating {p}: {e}"))
}

/// Mounts the root and resolves the process; `command` is the zone's command.
pub fn prepare(img: &ImageProcess, command: &[String]) -> Result<Process, String> {
    if !Path::new(ROOT_DEVICE).exists() {
        return Err(format!(
            "{ROOT_DEVICE} does not exist: the kernel did not set up the verity root (see the console for dm-verity errors)"
        ));
    }
    for d in [LOWER, RW, ROOT] {
        mkdir(d)?;
    }
    mount(ROOT_DEVICE, LOWER, &img.fstype, libc::MS_RDONLY, None)?;
    mount("tmpfs", RW, "tmpfs", libc::MS_NOSUID, Some("mode=755"))?;
    mkdir(&format!("{RW}/upper"))?;
    mkdir(&format!("{RW}/work"))?;
    mount("overlay", ROOT, "overlay", 0, Some(&format!("lowerdir={LOWER},upperdir={RW}/upper,workdir={RW}/work")))?;
    for (src, dir, fstype, flags) in [
        ("proc", "proc", "proc", libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC),
        ("sysfs", "sys", "sysfs", libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY),
        ("devtmpfs", "dev", "devtmpfs", libc::MS_NOSUID),
    ] {
        let target = format!("{ROOT}/{dir}");
        mkdir(&target)?;
        mount(src, &target, fstype, flags, None)?;
    }
    let root = Path::new(ROOT);
    let read = |rel: &str| std::fs::read_to_string(root.join(rel)).unwrap_or_default();
    resolve(img, command, &read("etc/passwd"), &read("etc/group"), |p| is_executable(&root.join(p.trim_start_matches('/'))))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    // Symlinks inside the root may be absolute: resolve them within it.
    let mut p = p.to_path_buf();
    for _ in 0..16 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let Ok(t) = std::fs::read_link(&p) else { return false };
                p = if t.is_absolute() {
                    Path::new(ROOT).join(t.strip_prefix("/").unwrap_or(&t))
                } else {
                    p.parent().map(|d| d.join(&t)).unwrap_or(t)
                };
            }
            Ok(m) => return m.is_file() && m.permissions().mode() & 0o111 != 0,
            Err(_) => return false,
        }
    }
    false
}

/// Resolves the image's user, environment, directory and program against
/// the image's `passwd` and `group` contents; `exists` says whether a path
/// inside the root is an executable file.
pub fn resolve(
    img: &ImageProcess,
    command: &[String],
    passwd: &str,
    group: &str,
    exists: impl Fn(&str) -> bool,
) -> Result<Process, String> {
    let (user, grp) = match img.user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (img.user.as_str(), None),
    };
    let entry = |name: &str| passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.len() >= 7 && f[0] == name);
    let (uid, mut gid, home) = if user.is_empty() {
        (0, 0, "/root".to_owned())
    } else if let Ok(uid) = user.parse::<u32>() {
        let by_uid = passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.len() >= 7 && f[2] == user);
        (uid, by_uid.as_ref().and_then(|f| f[3].parse().ok()).unwrap_or(uid), by_uid.map_or("/".into(), |f| f[5].to_owned()))
    } else {
        let f = entry(user).ok_or_else(|| format!("user {user} is not in the image's /etc/passwd"))?;
        let uid = f[2].parse().map_err(|_| format!("user {user} has a bad uid in /etc/passwd"))?;
        let gid = f[3].parse().map_err(|_| format!("user {user} has a bad gid in /etc/passwd"))?;
        (uid, gid, f[5].to_owned())
    };
    if let Some(g) = grp {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("group {g} is not in the image's /etc/group"))?,
        };
    }
    let name = entry(user).map(|f| f[0].to_owned()).unwrap_or_else(|| user.to_owned());
    let groups: Vec<u32> = if user.is_empty() || grp.is_some() {
        vec![gid]
    } else {
        let mut g: Vec<u32> = group
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == name))
            .filter_map(|f| f[2].parse().ok())
            .collect();
        g.insert(0, gid);
        g.dedup();
        g
    };
    let mut env: Vec<(String, String)> = Vec::new();
    for e in &img.env {
        if let Some((k, v)) = e.split_once('=') {
            env.retain(|(ek, _)| ek != k);
            env.push((k.to_owned(), v.to_owned()));
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), if home.is_empty() { "/".into() } else { home }));
    }
    let first = command.first().ok_or("the zone has no command")?;
    let program = if first.contains('/') {
        first.clone()
    } else {
        let path = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone()).unwrap_or_default();
        path.split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| format!("{}/{first}", d.trim_end_matches('/')))
            .find(|p| exists(p))
            .ok_or_else(|| format!("{first} is not found on the image's PATH ({path})"))?
    };
    let workdir = if img.workdir.is_empty() { "/".to_owned() } else { img.workdir.clone() };
    Ok(Process { program, uid, gid, groups, workdir, env })
}

/// What a child needs to enter the root, prepared before `fork` so the
/// child only makes system calls.
#[derive(Debug)]
pub struct Entry {
    root: CString,
    workdir: CString,
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
}

impl Entry {
    /// For `p`.
    pub fn new(p: &Process) -> Result<Self, String> {
        Ok(Self { root: cstr(ROOT)?, workdir: cstr(&p.workdir)?, uid: p.uid, gid: p.gid, groups: p.groups.clone() })
    }

    /// In the child, between fork and exec: chroot, chdir, drop to the user.
    pub fn enter(&self) -> std::io::Result<()> {
        let check = |rc: libc::c_int| if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
        // SAFETY: system calls with valid NUL-terminated strings and a valid
        // group list, in the child after fork (no allocation).
        unsafe {
            check(libc::chroot(self.root.as_ptr()))?;
            check(libc::chdir(self.workdir.as_ptr()))?;
            check(libc::setgroups(self.groups.len(), self.groups.as_ptr()))?;
            check(libc::setgid(self.gid))?;
            check(libc::setuid(self.uid))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1001:\nextra:x:2000:app,other\nstaff:x:50:\n";

    fn img(user: &str, env: &[&str]) -> ImageProcess {
        ImageProcess { fstype: "squashfs".into(), env: env.iter().map(|s| s.to_string()).collect(), workdir: "/app".into(), user: user.into() }
    }

    #[test]
    fn users_groups_env_and_program() {
        let exists = |p: &str| p == "/bin/sh" || p == "/usr/bin/env";
        let p = resolve(&img("app", &["PATH=/usr/bin:/bin", "A=1", "A=2"]), &["sh".into()], PASSWD, GROUP, exists).unwrap();
        assert_eq!((p.uid, p.gid), (1000, 1001));
        assert_eq!(p.groups, vec![1001, 2000]);
        assert_eq!(p.program, "/bin/sh");
        assert_eq!(p.workdir, "/app");
        assert!(p.env.contains(&("A".into(), "2".into())) && !p.env.contains(&("A".into(), "1".into())), "the last one wins");
        assert!(p.env.contains(&("HOME".into(), "/home/app".into())));
        let p = resolve(&img("1000:staff", &[]), &["/bin/sh".into()], PASSWD, GROUP, exists).unwrap();
        assert_eq!((p.uid, p.gid, p.groups.clone()), (1000, 50, vec![50]));
        assert!(p.env.iter().any(|(k, _)| k == "PATH"), "a default PATH");
        let p = resolve(&img("", &[]), &["env".into()], PASSWD, GROUP, exists).unwrap();
        assert_eq!((p.uid, p.gid, p.program.as_str()), (0, 0, "/usr/bin/env"));
        let p = resolve(&img("4242", &[]), &["/x".into()], PASSWD, GROUP, exists).unwrap();
        assert_eq!((p.uid, p.gid), (4242, 4242), "a uid the image does not list");
        assert!(resolve(&img("nobody", &[]), &["sh".into()], PASSWD, GROUP, exists).unwrap_err().contains("passwd"));
        assert!(resolve(&img("app:nogroup", &[]), &["sh".into()], PASSWD, GROUP, exists).unwrap_err().contains("group"));
        assert!(resolve(&img("", &["PATH=/bin"]), &["nope".into()], PASSWD, GROUP, exists).unwrap_err().contains("PATH"));
    }
}
