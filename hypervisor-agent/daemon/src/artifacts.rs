//! Opening a launch's boot artifacts with the caller's rights.
//!
//! The daemon runs as root, but a member of `socket_group` must not be able
//! to make it read a file that member could not read (`--initrd /etc/shadow`
//! with a kernel that prints its initramfs would leak it). A kernel or
//! initramfs named in a request is therefore opened **as the caller**: on a
//! thread of its own whose file-system uid and gid are the caller's (the
//! peer credentials of the control connection) and whose supplementary groups
//! are the caller's groups in the user database, so the kernel checks every
//! directory and the file itself as it would for the caller (capabilities
//! that bypass those checks are dropped from that thread by the fsuid change).
//! The thread ends right after the open. Root callers, and the daemon's own
//! configured defaults, are opened as the daemon.
//!
//! Every open is non-blocking and refuses what is not a regular file (no
//! FIFO, device, socket or directory): `host_attest::measure::seal` checks
//! the opened descriptor, so no path can be swapped in between.

use std::ffi::CString;
use std::fs::File;
use std::path::Path;

/// Who asked, from the control connection's peer credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The caller's uid.
    pub uid: u32,
    /// The caller's primary gid.
    pub gid: u32,
}

/// Longest artifact path accepted.
pub const MAX_PATH: usize = 4096;

fn open_flags() -> libc::c_int {
    libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC
}

fn open_here(path: &CString) -> std::io::Result<File> {
    // SAFETY: `path` is a valid NUL-terminated string; the fd is owned below.
    let fd = unsafe { libc::open(path.as_ptr(), open_flags()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// The groups `uid` belongs to in the user database (its primary `gid` included).
fn groups_of(uid: u32, gid: u32) -> Vec<libc::gid_t> {
    let mut groups = vec![gid];
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid out-value for getpwuid_r.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r with valid buffers; `result` tells whether `pw` was filled.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return groups;
    }
    let mut n: libc::c_int = 64;
    let mut list = vec![0 as libc::gid_t; 64];
    for _ in 0..2 {
        // SAFETY: `pw.pw_name` is a valid C string filled by getpwuid_r; `list` has room for `n`.
        let got = unsafe { libc::getgrouplist(pw.pw_name, gid, list.as_mut_ptr(), &mut n) };
        if got >= 0 {
            list.truncate(usize::try_from(n).unwrap_or(0));
            groups = list;
            break;
        }
        list.resize(usize::try_from(n).unwrap_or(64).max(64), 0);
    }
    groups
}

/// Opens `path` with `caller`'s rights (`None` or root: the daemon's own).
pub fn open_as(caller: Option<Caller>, path: &Path) -> std::io::Result<File> {
    if path.as_os_str().len() > MAX_PATH {
        return Err(std::io::Error::other(format!("the path is longer than {MAX_PATH} bytes")));
    }
    let cpath = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let caller = match caller {
        Some(c) if c.uid != 0 => c,
        _ => return open_here(&cpath),
    };
    let groups = groups_of(caller.uid, caller.gid);
    std::thread::Builder::new()
        .name("open-as-caller".into())
        .spawn(move || -> std::io::Result<File> {
            // Raw system calls: they change this thread only (glibc's setgroups
            // would change every thread of the daemon). The thread ends after
            // the open, with its credentials.
            // SAFETY: setgroups with a valid list of `groups.len()` ids.
            if unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: plain id arguments; setfsuid/setfsgid are per-thread.
            unsafe {
                libc::syscall(libc::SYS_setfsgid, caller.gid);
                libc::syscall(libc::SYS_setfsuid, caller.uid);
            }
            // setfsuid reports the previous value, never an error: check it took.
            // SAFETY: setfsuid(-1) only queries.
            let now = unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX) };
            if now != i64::from(caller.uid) {
                return Err(std::io::Error::other("cannot take the caller's file-system uid"));
            }
            open_here(&cpath)
        })?
        .join()
        .map_err(|_| std::io::Error::other("the opening thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlong_paths_are_refused() {
        let e = open_as(None, &Path::new("/").join("x".repeat(MAX_PATH))).unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
    }
}
