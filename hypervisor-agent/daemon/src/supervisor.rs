//! Identifying, watching and stopping VMM processes (the jail module starts them).
//!
//! A VMM runs in its own session so it outlives the daemon. It is
//! identified by PID *and* start time (`/proc/PID/stat` field 22), so after
//! a daemon restart a recycled PID is never mistaken for a zone's VMM. Exit
//! is observed through a pidfd, which works for processes that are not our
//! children (re-adopted VMMs).

use std::os::fd::{FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

use super::store::VmmHandle;

/// A supervisor failure.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// pidfd_open failed.
    #[error("cannot watch process {pid}: {source}")]
    Watch {
        /// The process.
        pid: u32,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The handle of a just-started VMM: its PID and start time.
pub fn handle_of(pid: u32) -> VmmHandle {
    VmmHandle { pid, start_ticks: start_ticks(pid).unwrap_or(0) }
}

/// Field 22 (starttime) of /proc/PID/stat.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `handle` still names the same live process.
pub fn is_alive(handle: VmmHandle) -> bool {
    start_ticks(handle.pid) == Some(handle.start_ticks)
}

/// A pidfd to wait on.
#[derive(Debug)]
pub struct Watch {
    fd: AsyncFd<OwnedFd>,
    pid: u32,
}

impl Watch {
    /// Opens a pidfd for `pid`.
    pub fn new(pid: u32) -> Result<Self, SupervisorError> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if raw < 0 {
            return Err(SupervisorError::Watch { pid, source: std::io::Error::last_os_error() });
        }
        // SAFETY: `raw` is a fresh file descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
        // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, so it stays open and
        // refers to the same pidfd for the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| SupervisorError::Watch { pid, source: e.into_parts().1 })?;
        Ok(Self { fd, pid })
    }

    /// Waits until the process exits; returns its wait status if it was our
    /// child (a re-adopted VMM's status is not ours to collect).
    pub async fn exited(self) -> Option<i32> {
        // A pidfd becomes readable once, when the process exits.
        if self.fd.readable().await.is_err() {
            return None;
        }
        let mut status = 0;
        // SAFETY: waitpid on a specific pid with WNOHANG; `status` is a valid out-pointer.
        let got = unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, libc::WNOHANG) };
        (got == self.pid as libc::pid_t).then_some(status)
    }
}

/// Sends `signal` to the process if `handle` still names it.
pub fn signal(handle: VmmHandle, signal: i32) {
    if is_alive(handle) {
        // SAFETY: kill(2) on a pid verified (by start time) to be the zone's VMM.
        unsafe { libc::kill(handle.pid as libc::pid_t, signal) };
    }
}

/// Whether a wait status is that of a VMM ended by its seccomp filter: killed
/// by SIGSYS, or exited with the status its SIGSYS reporter uses.
pub fn killed_by_seccomp(status: i32) -> bool {
    (libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS)
        || (libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == zone_vmm::jail::seccomp::SECCOMP_EXIT_STATUS)
}

/// Describes a wait status for a failure message.
pub fn describe_status(status: Option<i32>) -> String {
    match status {
        Some(s) if libc::WIFSIGNALED(s) => format!("killed by signal {}", libc::WTERMSIG(s)),
        Some(s) if libc::WIFEXITED(s) => format!("exited with status {}", libc::WEXITSTATUS(s)),
        Some(s) => format!("wait status {s:#x}"),
        None => "exit status unknown (re-adopted process)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_identified_by_start_time() {
        let me = std::process::id();
        let ticks = start_ticks(me).unwrap();
        assert!(is_alive(VmmHandle { pid: me, start_ticks: ticks }));
        assert!(!is_alive(VmmHandle { pid: me, start_ticks: ticks + 1 }), "a recycled pid must not match");
    }

    #[tokio::test]
    async fn a_child_exit_is_seen_with_its_status() {
        let child = std::process::Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let pid = child.id();
        std::mem::forget(child);
        let status = Watch::new(pid).unwrap().exited().await;
        assert_eq!(describe_status(status), "exited with status 3");
    }
}
