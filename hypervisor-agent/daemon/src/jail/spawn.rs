//! Starting a zone VMM in new namespaces with exactly the descriptors of its
//! contract (`zone_vmm::launch`).
//!
//! `clone(2)` with `CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS |
//! CLONE_NEWNET` (and no new stack: fork semantics) makes the child PID 1 of
//! its own PID namespace, with its own mount, IPC, host name and an empty
//! network namespace. The child waits until the parent has moved it into its
//! cgroup(s), then, with async-signal-safe system calls only (the daemon is
//! multi-threaded): starts a new session, moves each descriptor to its
//! contract number, closes every other one, and `execve`s the VMM with an
//! environment of one variable. An exec failure is reported back through a
//! close-on-exec pipe.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use zone_vmm::launch::FIRST_FREE_FD;

/// `clone3(2)`'s argument (`struct clone_args`, up to `cgroup`: version 2, 88 bytes).
#[repr(C)]
#[derive(Debug, Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Start the child directly in the cgroup (v2) whose directory fd is `clone_args.cgroup`.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Where the VMM's cgroup membership comes from.
pub enum Placement<'a> {
    /// Born in the cgroup v2 group whose directory this is (`CLONE_INTO_CGROUP`):
    /// no migration afterwards.
    Into(BorrowedFd<'a>),
    /// Moved into its groups after `clone`, before it may run (cgroup v1).
    Migrate(&'a dyn Fn(u32) -> Result<(), String>),
    /// No cgroup (`jail.allow_unconfined`).
    None,
}

/// How long each step of a spawn took (µs).
#[derive(Debug, Clone, Copy, Default)]
pub struct SpawnTimes {
    /// clone with the new namespaces (in the parent).
    pub clone_us: u128,
    /// Moving the child into its cgroup(s) (cgroup v1 only).
    pub place_us: u128,
    /// From releasing the child to its execve having succeeded.
    pub exec_us: u128,
}

/// The namespaces a zone VMM gets.
pub const NAMESPACES: libc::c_int =
    libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWNET;

/// Why a VMM could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// A system call in the parent failed.
    #[error("cannot start the VMM: {op}: {source}")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The child could not exec the VMM binary.
    #[error("cannot start the VMM {path}: {source}")]
    Exec {
        /// The binary.
        path: PathBuf,
        /// The OS error the child saw.
        #[source]
        source: std::io::Error,
    },
    /// Placing the child in its cgroup failed.
    #[error("cannot place the VMM in its cgroup: {0}")]
    Cgroup(String),
}

fn os(op: &'static str) -> impl FnOnce(std::io::Error) -> SpawnError {
    move |source| SpawnError::Os { op, source }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 returns.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(os("pipe2")(std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// What to start.
pub struct VmmCommand<'a> {
    /// The `zone-vmm` binary.
    pub program: &'a Path,
    /// `(contract fd number, descriptor)`: the VMM's descriptors 3 and up.
    pub fds: Vec<(RawFd, BorrowedFd<'a>)>,
    /// stdout and stderr (`vmm.log`).
    pub log: BorrowedFd<'a>,
    /// stdin (`/dev/null`).
    pub null: BorrowedFd<'a>,
    /// Its cgroup.
    pub place: Placement<'a>,
}

impl std::fmt::Debug for Placement<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Into(_) => "Into",
            Self::Migrate(_) => "Migrate",
            Self::None => "None",
        })
    }
}

impl std::fmt::Debug for VmmCommand<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmmCommand").field("program", &self.program).field("fds", &self.fds).finish_non_exhaustive()
    }
}

/// Starts `cmd`; returns the VMM's PID (in the daemon's namespace) and how
/// long the steps took.
pub fn spawn(cmd: &VmmCommand<'_>) -> Result<(u32, SpawnTimes), SpawnError> {
    // Everything the child needs is prepared here: it must not allocate.
    let program = CString::new(cmd.program.as_os_str().as_encoded_bytes())
        .map_err(|_| os("program path")(std::io::ErrorKind::InvalidInput.into()))?;
    let argv: [*const libc::c_char; 2] = [program.as_ptr(), std::ptr::null()];
    let env_log = CString::new(format!("ZONE_LOG={}", std::env::var("ZONE_LOG").unwrap_or_else(|_| "info".into())))
        .unwrap_or_default();
    let envp: [*const libc::c_char; 2] = [env_log.as_ptr(), std::ptr::null()];
    let mut sources: Vec<(RawFd, RawFd)> = cmd.fds.iter().map(|(target, fd)| (*target, fd.as_raw_fd())).collect();
    sources.push((1, cmd.log.as_raw_fd()));
    sources.push((2, cmd.log.as_raw_fd()));
    sources.push((0, cmd.null.as_raw_fd()));
    let mut moved: Vec<RawFd> = vec![-1; sources.len()];
    let (go_r, go_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (go_r_fd, err_w_fd) = (go_r.as_raw_fd(), err_w.as_raw_fd());

    let mut times = SpawnTimes::default();
    let started = std::time::Instant::now();
    let pid = match &cmd.place {
        Placement::Into(cgroup) => {
            let args = CloneArgs {
                flags: u64::try_from(NAMESPACES).unwrap_or(0) | CLONE_INTO_CGROUP,
                exit_signal: u64::try_from(libc::SIGCHLD).unwrap_or(17),
                cgroup: u64::try_from(cgroup.as_raw_fd()).unwrap_or(u64::MAX),
                ..CloneArgs::default()
            };
            // SAFETY: a fork-like clone3 (no new stack) with a valid clone_args of
            // its size. In the child only async-signal-safe system calls run, on
            // memory prepared above, and it ends in execve or _exit.
            unsafe { libc::syscall(libc::SYS_clone3, &raw const args, std::mem::size_of::<CloneArgs>()) }
        }
        // SAFETY: a fork-like clone (no new stack, SIGCHLD on exit); the child
        // does as above.
        _ => unsafe { libc::syscall(libc::SYS_clone, libc::c_long::from(NAMESPACES | libc::SIGCHLD), 0, 0, 0, 0) },
    };
    if pid == 0 {
        // Child. SAFETY (whole block): raw system calls on descriptors this
        // process holds and on the prepared buffers; no allocation, no locks.
        unsafe {
            let fail = |errno: libc::c_int| -> ! {
                let b = errno.to_ne_bytes();
                libc::write(err_w_fd, b.as_ptr().cast(), b.len());
                libc::_exit(127)
            };
            let mut byte = 0u8;
            if libc::read(go_r_fd, (&raw mut byte).cast(), 1) != 1 {
                libc::_exit(127);
            }
            if libc::setsid() < 0 {
                fail(*libc::__errno_location());
            }
            // Move every source above the targets first, so no dup2 overwrites one.
            for (i, (_, src)) in sources.iter().enumerate() {
                let m = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 100);
                if m < 0 {
                    fail(*libc::__errno_location());
                }
                *moved.as_mut_ptr().add(i) = m;
            }
            let err_hi = libc::fcntl(err_w_fd, libc::F_DUPFD_CLOEXEC, 100);
            if err_hi < 0 {
                fail(*libc::__errno_location());
            }
            for (i, (target, _)) in sources.iter().enumerate() {
                if libc::dup2(*moved.as_ptr().add(i), *target) < 0 {
                    fail(*libc::__errno_location());
                }
            }
            // The error pipe at FIRST_FREE_FD (close-on-exec), nothing above it.
            if libc::dup3(err_hi, FIRST_FREE_FD, libc::O_CLOEXEC) < 0 {
                fail(*libc::__errno_location());
            }
            let first_closed = libc::c_uint::try_from(FIRST_FREE_FD + 1).unwrap_or(12);
            if libc::syscall(libc::SYS_close_range, first_closed, libc::c_uint::MAX, 0) < 0 {
                fail(*libc::__errno_location());
            }
            // Contract descriptors below FIRST_FREE_FD that were not given (no initramfs).
            for fd in 3..FIRST_FREE_FD {
                if !sources.iter().any(|(t, _)| *t == fd) {
                    libc::close(fd);
                }
            }
            libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr());
            let e = *libc::__errno_location();
            let b = e.to_ne_bytes();
            libc::write(FIRST_FREE_FD, b.as_ptr().cast(), b.len());
            libc::_exit(127)
        }
    }
    if pid < 0 {
        return Err(os("clone with new namespaces (is this root?)")(std::io::Error::last_os_error()));
    }
    let pid = u32::try_from(pid).map_err(|_| os("clone")(std::io::ErrorKind::InvalidData.into()))?;
    times.clone_us = started.elapsed().as_micros();
    drop((go_r, err_w));
    let reap = || {
        // SAFETY: kill and waitpid of our own child.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
            libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
        }
    };
    let placing = std::time::Instant::now();
    if let Placement::Migrate(place) = &cmd.place {
        if let Err(e) = place(pid) {
            reap();
            return Err(SpawnError::Cgroup(e));
        }
    }
    times.place_us = placing.elapsed().as_micros();
    let released = std::time::Instant::now();
    let go = [1u8];
    // SAFETY: writing one byte from a valid buffer to our pipe.
    if unsafe { libc::write(go_w.as_raw_fd(), go.as_ptr().cast(), 1) } != 1 {
        let e = std::io::Error::last_os_error();
        reap();
        return Err(os("releasing the VMM")(e));
    }
    drop(go_w);
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into the unfilled part of `buf`.
        let n = unsafe { libc::read(err_r.as_raw_fd(), buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            break;
        }
        got += n as usize;
    }
    if got == 0 {
        times.exec_us = released.elapsed().as_micros();
        return Ok((pid, times));
    }
    reap();
    Err(SpawnError::Exec {
        path: cmd.program.to_owned(),
        source: std::io::Error::from_raw_os_error(i32::from_ne_bytes(buf)),
    })
}
