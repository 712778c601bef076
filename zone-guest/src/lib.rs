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

/// Printed on the console once the zone's userspace is up:
/// `ZONE-GUEST-READY uptime_ms=<ms since boot>`.
pub const READY_MARKER: &str = "ZONE-GUEST-READY";
/// Printed before power-off: `ZONE-GUEST-EXIT status=<0..=255>`.
pub const EXIT_MARKER: &str = "ZONE-GUEST-EXIT";
/// Kernel parameter that makes a zone without a command power off right
/// after it is ready (instead of staying up).
pub const ONESHOT_PARAM: &str = "zone.oneshot";
/// The zone power port (see the VMM's `devices::power`).
pub const POWER_PORT: u16 = 0x501;

/// What the kernel command line asks of zone-guest.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BootRequest {
    /// The zone's command and its arguments (empty: none).
    pub command: Vec<String>,
    /// Power off after readiness when there is no command.
    pub oneshot: bool,
}

/// Splits a kernel command line into words the way the kernel does: on
/// whitespace, with double quotes grouping (and removed).
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Parses `/proc/cmdline`.
pub fn parse_cmdline(line: &str) -> BootRequest {
    let words = split_words(line);
    let (kernel, command) = match words.iter().position(|w| w == "--") {
        Some(i) => (&words[..i], words[i + 1..].to_vec()),
        None => (&words[..], Vec::new()),
    };
    BootRequest { command, oneshot: kernel.iter().any(|w| w == ONESHOT_PARAM) }
}

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
    fn command_follows_double_dash() {
        let r = parse_cmdline("console=ttyS0 reboot=k -- /bin/sh -c \"echo hi there\"\n");
        assert_eq!(r.command, vec!["/bin/sh", "-c", "echo hi there"]);
        assert!(!r.oneshot);
        let r = parse_cmdline("console=ttyS0 zone.oneshot");
        assert!(r.command.is_empty());
        assert!(r.oneshot);
        // zone.oneshot after `--` is an argument of the command, not a flag.
        let r = parse_cmdline("a -- echo zone.oneshot");
        assert!(!r.oneshot);
        assert_eq!(r.command, vec!["echo", "zone.oneshot"]);
    }

    #[test]
    fn empty_quoted_argument_survives() {
        assert_eq!(split_words("a \"\" b"), vec!["a", "", "b"]);
    }

    #[test]
    fn statuses_are_encoded() {
        assert_eq!(status_byte(0), 0);
        assert_eq!(status_byte(3 << 8), 3);
        assert_eq!(status_byte(9), 137); // SIGKILL
        assert_eq!(status_byte(15), 143); // SIGTERM
    }
}
