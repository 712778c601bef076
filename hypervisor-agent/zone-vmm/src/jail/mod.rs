//! The VMM's half of its jail.
//!
//! The daemon does the other half (`hypervisor-agent`'s `jail` module): it
//! creates the zone's cgroup and jail directory and starts `zone-vmm` as root
//! in new mount, PID, IPC, UTS and network namespaces, inside that cgroup,
//! with only the descriptors of [`crate::launch`]. Here, before the VMM reads
//! a single guest-controlled byte (the kernel ELF included), [`enter`]:
//!
//! 1. makes every mount private to its namespace, mounts a small tmpfs on the
//!    jail directory, binds `/dev/null`, `/dev/urandom` and the zone's socket
//!    directory (read-only) into it, makes it read-only and pivots into it
//!    (the host's file system is then out of reach; on a host whose root is
//!    the initial ramfs, which cannot be pivoted away, it moves the jail's
//!    root over `/` and chroots, as `switch_root` does);
//! 2. sets rlimits: open files, file size, no core dumps, few processes;
//! 3. drops every capability from the bounding set and becomes the zone's
//!    unprivileged user and group (no supplementary groups), so permitted,
//!    effective and ambient capabilities are cleared; sets `no_new_privs` and
//!    makes itself non-dumpable.
//!
//! After that, each thread installs its seccomp filter ([`seccomp`]).

pub mod seccomp;

use std::ffi::CString;
use std::path::Path;

use crate::launch::{JAIL_SOCK_DIR, JailSpec};

/// Size of the jail's tmpfs root (it only holds mount points).
const ROOT_TMPFS_OPTIONS: &str = "size=64k,nr_inodes=16,mode=755";
/// Processes (threads) the zone's user may have: vCPUs and a few helpers
/// (the cgroup's `pids.max` bounds them too).
const MAX_PROCESSES: u64 = 64;

/// A step of the jail that failed; the VMM exits before running the zone.
#[derive(Debug, thiserror::Error)]
#[error("cannot enter the jail: {step}: {source}")]
pub struct JailError {
    /// What was being done.
    pub step: String,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

fn check(rc: libc::c_int, step: impl FnOnce() -> String) -> Result<(), JailError> {
    if rc < 0 { Err(JailError { step: step(), source: std::io::Error::last_os_error() }) } else { Ok(()) }
}

fn cstr(p: &Path) -> Result<CString, JailError> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| JailError { step: format!("path {}", p.display()), source: std::io::ErrorKind::InvalidInput.into() })
}

fn mount(
    source: Option<&CString>,
    target: &CString,
    fstype: Option<&CString>,
    flags: libc::c_ulong,
    data: Option<&CString>,
) -> Result<(), JailError> {
    let p = |c: Option<&CString>| c.map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is a valid NUL-terminated string or null, as mount(2) allows.
    let rc = unsafe { libc::mount(p(source), target.as_ptr(), p(fstype), flags, p(data).cast()) };
    check(rc, || format!("mount {:?} on {target:?}", source.map(|s| s.to_string_lossy().into_owned())))
}

/// A bind mount of `source` (a file or directory of the host) at `target`
/// inside the new root, optionally read-only.
fn bind(source: &str, target: &CString, read_only: bool) -> Result<(), JailError> {
    let src = CString::new(source).map_err(|_| JailError { step: source.into(), source: std::io::ErrorKind::InvalidInput.into() })?;
    mount(Some(&src), target, None, libc::MS_BIND, None)?;
    if read_only {
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV;
        mount(None, target, None, flags, None)?;
    }
    Ok(())
}

fn mkdir(path: &CString) -> Result<(), JailError> {
    // SAFETY: `path` is a valid NUL-terminated string.
    check(unsafe { libc::mkdir(path.as_ptr(), 0o755) }, || format!("mkdir {path:?}"))
}

fn touch(path: &CString) -> Result<(), JailError> {
    // SAFETY: `path` is a valid NUL-terminated string; the returned fd is closed at once.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC, 0o644) };
    check(fd, || format!("create {path:?}"))?;
    // SAFETY: `fd` was just opened by us.
    unsafe { libc::close(fd) };
    Ok(())
}

/// Mounts the jail's root and pivots into it.
fn pivot(spec: &JailSpec) -> Result<(), JailError> {
    let root = cstr(&spec.root)?;
    let slash = CString::from(c"/");
    // Nothing this namespace mounts propagates back to the host.
    mount(None, &slash, None, libc::MS_REC | libc::MS_PRIVATE, None)?;
    let tmpfs = CString::from(c"tmpfs");
    let opts = CString::new(ROOT_TMPFS_OPTIONS).unwrap_or_default();
    mount(Some(&tmpfs), &root, Some(&tmpfs), libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, Some(&opts))?;
    let inside = |rel: &str| cstr(&spec.root.join(rel));
    mkdir(&inside("dev")?)?;
    for dev in ["null", "urandom"] {
        let target = inside(&format!("dev/{dev}"))?;
        touch(&target)?;
        bind(&format!("/dev/{dev}"), &target, false)?;
    }
    let sock = inside(JAIL_SOCK_DIR.trim_start_matches('/'))?;
    mkdir(&sock)?;
    bind(&spec.sock_dir.display().to_string(), &sock, true)?;
    let ro = libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount(None, &root, None, ro, Some(&opts))?;

    // SAFETY: `root` is a valid NUL-terminated string.
    check(unsafe { libc::chdir(root.as_ptr()) }, || "chdir into the jail".into())?;
    let dot = CString::from(c".");
    // pivot_root(".", "."): the old root ends up stacked on the new one and
    // is detached right after, so nothing of the host stays reachable.
    // SAFETY: both arguments are valid NUL-terminated strings.
    let pivoted = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    if pivoted == 0 {
        // SAFETY: as above.
        check(unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) }, || "detaching the host's root".into())?;
    } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // The host's root is the initial ramfs, which cannot be pivoted away
        // (hosts booted from an initramfs, like the test host): move the
        // jail's root over "/" and chroot into it, as switch_root does. The
        // old root is covered, and without CAP_SYS_ADMIN and CAP_SYS_CHROOT
        // (dropped next) nothing can uncover or escape to it.
        // SAFETY: valid NUL-terminated strings.
        check(unsafe { libc::mount(dot.as_ptr(), slash.as_ptr(), std::ptr::null(), libc::MS_MOVE, std::ptr::null()) }, || {
            "moving the jail's root over / (initramfs host)".into()
        })?;
        // SAFETY: as above.
        check(unsafe { libc::chroot(dot.as_ptr()) }, || "chroot into the jail (initramfs host)".into())?;
    } else {
        return Err(JailError { step: "pivot_root".into(), source: std::io::Error::last_os_error() });
    }
    // SAFETY: as above.
    check(unsafe { libc::chdir(slash.as_ptr()) }, || "chdir /".into())
}

fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64, name: &str) -> Result<(), JailError> {
    let lim = libc::rlimit { rlim_cur: value, rlim_max: value };
    // SAFETY: `lim` is a valid rlimit.
    check(unsafe { libc::setrlimit(resource, &lim) }, || format!("setrlimit {name}"))
}

fn drop_privileges(spec: &JailSpec) -> Result<(), JailError> {
    // Empty the bounding set while CAP_SETPCAP is still held.
    for cap in 0..=63 {
        // SAFETY: PR_CAPBSET_DROP takes a capability number; unknown ones fail with EINVAL.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if rc < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(JailError { step: format!("dropping capability {cap}"), source: std::io::Error::last_os_error() });
        }
    }
    // SAFETY: setgroups with an empty list.
    check(unsafe { libc::setgroups(0, std::ptr::null()) }, || "setgroups".into())?;
    // SAFETY: plain id arguments.
    check(unsafe { libc::setresgid(spec.gid, spec.gid, spec.gid) }, || format!("setresgid {}", spec.gid))?;
    // Leaving uid 0 for good clears the permitted, effective and ambient capabilities.
    // SAFETY: plain id arguments.
    check(unsafe { libc::setresuid(spec.uid, spec.uid, spec.uid) }, || format!("setresuid {}", spec.uid))?;
    // SAFETY: prctl with constant arguments.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }, || "no_new_privs".into())?;
    // SAFETY: prctl with constant arguments.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) }, || "dumpable".into())?;
    if effective_capabilities()? != 0 {
        return Err(JailError { step: "checking capabilities".into(), source: std::io::Error::other("some remain") });
    }
    Ok(())
}

/// The calling thread's effective capability set (both 32-bit halves).
pub fn effective_capabilities() -> Result<u64, JailError> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: capget with a version-3 header and room for two data structs.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    check(rc as libc::c_int, || "capget".into())?;
    Ok(u64::from(data[0].effective) | (u64::from(data[1].effective) << 32))
}

/// Enters the jail described by `spec` (see the module documentation).
/// Must run as root, in the new namespaces, before anything else of the zone.
pub fn enter(spec: &JailSpec) -> Result<(), JailError> {
    pivot(spec)?;
    set_rlimit(libc::RLIMIT_NOFILE, spec.max_open_files, "RLIMIT_NOFILE")?;
    set_rlimit(libc::RLIMIT_FSIZE, spec.max_file_size, "RLIMIT_FSIZE")?;
    set_rlimit(libc::RLIMIT_CORE, 0, "RLIMIT_CORE")?;
    set_rlimit(libc::RLIMIT_NPROC, MAX_PROCESSES, "RLIMIT_NPROC")?;
    // Writing past RLIMIT_FSIZE then fails with EFBIG instead of killing the VMM.
    // SAFETY: setting a signal's disposition to SIG_IGN.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    drop_privileges(spec)
}
