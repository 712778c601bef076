//! How a zone ended: the outcome the VMM reports (to `zonectl run`'s exit
//! status, or as `outcome.json` to the daemon).

/// How a zone ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum ExitReason {
    /// The guest powered off through the zone power port, reporting `status`
    /// (the exit status of the zone's command).
    PowerOff {
        /// Status byte written by the guest.
        status: u8,
    },
    /// The guest reset the machine (i8042 reset line, `reboot=k`). Zones are
    /// not rebooted: a reset ends them.
    Reset,
    /// The guest kernel panicked (its panic line, then a reset).
    Panic {
        /// The kernel's panic line.
        message: String,
    },
    /// A vCPU triple-faulted (`KVM_EXIT_SHUTDOWN`).
    TripleFault,
    /// A vCPU halted with interrupts off (only seen without a kernel to wake it).
    Halted,
    /// The deadline given to [`crate::zone::Zone::run`] passed first.
    Timeout,
    /// Stopped from the host through a [`crate::zone::Stopper`].
    Stopped,
    /// KVM could not run a vCPU.
    VcpuError {
        /// vCPU index.
        vcpu: u8,
        /// What KVM reported.
        detail: String,
    },
    /// A thread of the VMM made a system call its seccomp filter does not
    /// allow; the VMM ended at once (see [`crate::jail::seccomp`]).
    SeccompViolation {
        /// The system call number (x86_64).
        syscall: i64,
    },
    /// The VMM could not start the zone (jail, devices, artifacts).
    StartFailed {
        /// Why.
        detail: String,
    },
}

impl ExitReason {
    /// Whether the zone ended the way zones are meant to end (its command
    /// finished, it was stopped, or it rebooted), as opposed to a failure.
    pub fn is_normal(&self) -> bool {
        matches!(self, Self::PowerOff { .. } | Self::Reset | Self::Stopped)
    }

    /// One line for humans.
    pub fn describe(&self) -> String {
        match self {
            Self::PowerOff { status } => format!("powered off (status {status})"),
            Self::Reset => "reset by the guest".into(),
            Self::Panic { message } => format!("guest kernel panic: {message}"),
            Self::TripleFault => "triple fault (vCPU shut down)".into(),
            Self::Halted => "vCPU halted".into(),
            Self::Timeout => "timed out".into(),
            Self::Stopped => "stopped by the host".into(),
            Self::VcpuError { vcpu, detail } => format!("vCPU {vcpu} failed: {detail}"),
            Self::SeccompViolation { syscall } => {
                format!("seccomp violation: syscall {syscall} ({})", syscall_name(*syscall).unwrap_or("unknown"))
            }
            Self::StartFailed { detail } => format!("the VMM could not start the zone: {detail}"),
        }
    }
}

/// The result of running a zone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    /// Why it ended.
    #[serde(flatten)]
    pub reason: ExitReason,
    /// Wall time from the first vCPU entry to the end.
    pub run_time_ms: u128,
}

/// Largest `outcome.json` a daemon reads (a VMM is not trusted to keep it small).
pub const MAX_OUTCOME_LEN: usize = 64 * 1024;

impl Outcome {
    /// Parses an outcome written by a VMM, refusing oversized input.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_OUTCOME_LEN {
            return None;
        }
        serde_json::from_slice(bytes).ok()
    }
}

include!(concat!(env!("OUT_DIR"), "/syscall_names.rs"));

/// The name of x86_64 system call `nr`, if it has one.
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    SYSCALL_NAMES.binary_search_by_key(&nr, |(n, _)| *n).ok().map(|i| SYSCALL_NAMES[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_numbers_have_their_names() {
        assert_eq!(syscall_name(0), Some("read"));
        assert_eq!(syscall_name(41), Some("socket"));
        assert_eq!(syscall_name(231), Some("exit_group"));
        assert_eq!(syscall_name(-1), None);
        assert_eq!(
            ExitReason::SeccompViolation { syscall: 41 }.describe(),
            "seccomp violation: syscall 41 (socket)"
        );
    }

    #[test]
    fn outcomes_round_trip_and_hostile_ones_are_refused() {
        let o = Outcome { reason: ExitReason::SeccompViolation { syscall: 59 }, run_time_ms: 3 };
        let json = serde_json::to_vec(&o).unwrap();
        assert_eq!(Outcome::parse(&json), Some(o));
        assert_eq!(Outcome::parse(b"{not json"), None);
        assert_eq!(Outcome::parse(&vec![b' '; MAX_OUTCOME_LEN + 1]), None);
    }
}
