//! `zone-guest`: PID 1 inside every zone.
//!
//! At boot it mounts `/proc`, `/sys`, `/dev` (devtmpfs), `/tmp` and `/run`,
//! prints the readiness marker [`READY_MARKER`] with its uptime, runs the
//! zone's command (the words after ` -- ` on the kernel command line), prints
//! [`EXIT_MARKER`] with the command's exit status and powers the zone off
//! through the zone power port, reporting that status. The device contract
//! with the VMM is in `zone-guest/README.md`.
//!
//! This library holds the parts that are plain logic (command-line parsing,
//! status encoding) so they are unit-tested on the build machine; `main.rs`
//! does the system calls.
//!
//! Run by anything other than the kernel (PID != 1), `zone-guest evidence`
//! asks the host for evidence about this zone ([`evidence`]) and
//! `zone-guest forward` reaches a host service the daemon forwards ([`forward`]).

pub mod channel;
pub mod evidence;
pub mod forward;
pub mod net;
pub mod rootfs;

// The boot contract with the host (command on the kernel command line,
// markers, power port) has one home, shared with the host side.
pub use attestation_proto::zone::{
    BootRequest, EXIT_MARKER, NetParams, ONESHOT_PARAM, POWER_PORT, READY_MARKER, parse_cmdline, split_words,
};

/// The status byte reported for a `waitpid` status: the exit code, or
/// 128 + the signal number for a command killed by a signal.
pub fn status_byte(wait_status: i32) -> u8 {
    if libc::WIFEXITED(wait_status) {
        u8::try_from(libc::WEXITSTATUS(wait_status)).unwrap_or(255)
    } else if libc::WIFSIGNALED(wait_status) {
        u8::try_from(128 + libc::WTERMSIG(wait_status)).unwrap_or(255)
    } else {
        255
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_encoded() {
        assert_eq!(status_byte(0), 0);
        assert_eq!(status_byte(3 << 8), 3);
        assert_eq!(status_byte(9), 137); // SIGKILL
        assert_eq!(status_byte(15), 143); // SIGTERM
    }
}
