//! Seccomp filters, one per thread class, compiled at build time from
//! `seccomp/x86_64.json` by rust-vmm's `seccompiler` (see `build.rs`).
//!
//! | class | threads |
//! |---|---|
//! | `vmm` | the main thread once the zone runs, the signal and console-input threads |
//! | `vcpu` | one per vCPU: `KVM_RUN` and device emulation |
//! | `vsock` | the vsock device's worker: the guest's queues and the host sockets |
//! | `block` | a disk's worker: its queue, positioned reads and writes of its file |
//! | `net` | a network device's worker: its queues, vectored reads and writes of its TAP, `TUNSETOFFLOAD`, rate-limit timers |
//!
//! A jailed VMM [`enable`]s the filters before it creates the zone; from then
//! on every thread calls [`apply`] for its class first thing (a thread
//! inherits the filter of the thread that spawned it, so the main thread
//! installs its own only after spawning the vCPUs). In the default mode a
//! call outside the list traps: the `SIGSYS` handler writes the outcome
//! `seccomp violation: syscall N (name)` to the outcome descriptor and ends
//! the process at once (the kernel kills it anyway if the signal is blocked).
//! In [`SeccompMode::Log`] the call is allowed and logged by the kernel.
//!
//! `zonectl run` does not enable them: it runs unjailed, and says so.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

use seccompiler::sock_filter;

use crate::launch::SeccompMode;

include!(concat!(env!("OUT_DIR"), "/seccomp_filters.rs"));

/// A kind of thread with its own filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadClass {
    /// Main thread, signal and console-input threads.
    Vmm,
    /// A vCPU thread.
    Vcpu,
    /// The vsock worker.
    Vsock,
    /// A disk's worker.
    Block,
    /// A network device's worker.
    Net,
}

impl ThreadClass {
    fn name(self) -> &'static str {
        match self {
            Self::Vmm => "vmm",
            Self::Vcpu => "vcpu",
            Self::Vsock => "vsock",
            Self::Block => "block",
            Self::Net => "net",
        }
    }
}

/// A filter could not be installed; the thread must not run unfiltered.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The build produced no filter of this class.
    #[error("no seccomp filter for thread class {0}")]
    Missing(&'static str),
    /// The kernel refused it.
    #[error("cannot install the {class} seccomp filter: {detail}")]
    Install {
        /// The class.
        class: &'static str,
        /// What failed.
        detail: String,
    },
}

static MODE: OnceLock<SeccompMode> = OnceLock::new();
static OUTCOME_FD: AtomicI32 = AtomicI32::new(-1);

/// The compiled filter of `class` in `mode`.
pub fn program(class: ThreadClass, mode: SeccompMode) -> Result<Vec<sock_filter>, SeccompError> {
    let table = match mode {
        SeccompMode::Kill => FILTERS_TRAP,
        SeccompMode::Log => FILTERS_LOG,
    };
    let (_, ins) = table.iter().find(|(name, _)| *name == class.name()).ok_or(SeccompError::Missing(class.name()))?;
    Ok(ins.iter().map(|&(code, jt, jf, k)| sock_filter { code, jt, jf, k }).collect())
}

/// Turns the filters on for this process (once): every later [`apply`]
/// installs one. Also installs the `SIGSYS` handler that reports a violation
/// on `outcome_fd`.
pub fn enable(mode: SeccompMode, outcome_fd: i32) -> Result<(), SeccompError> {
    OUTCOME_FD.store(outcome_fd, Ordering::SeqCst);
    install_sigsys_handler()?;
    let _ = MODE.set(mode);
    Ok(())
}

/// Whether filters are on (a jailed VMM).
pub fn enabled() -> bool {
    MODE.get().is_some()
}

/// Installs `class`'s filter on the calling thread if filters are enabled.
pub fn apply(class: ThreadClass) -> Result<(), SeccompError> {
    let Some(&mode) = MODE.get() else { return Ok(()) };
    let prog = program(class, mode)?;
    seccompiler::apply_filter(&prog)
        .map_err(|e| SeccompError::Install { class: class.name(), detail: e.to_string() })
}

fn install_sigsys_handler() -> Result<(), SeccompError> {
    // SAFETY: an all-zero sigaction is a valid value to fill in.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = sigsys_handler as *const () as usize;
    sa.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `sa` is initialised; the handler only makes async-signal-safe system calls.
    let rc = unsafe { libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) };
    if rc < 0 {
        return Err(SeccompError::Install { class: "sigsys", detail: std::io::Error::last_os_error().to_string() });
    }
    Ok(())
}

/// Offset of `si_syscall` in `siginfo_t` on x86_64 (`_sigsys { _call_addr, _syscall, _arch }`
/// after the 16-byte header).
const SI_SYSCALL_OFFSET: usize = 24;
/// Exit status of a VMM ended by a seccomp violation (128 + SIGSYS).
pub const SECCOMP_EXIT_STATUS: i32 = 128 + libc::SIGSYS;

/// Formats `{"reason":"seccomp_violation","syscall":N,"run_time_ms":0}` into
/// `buf` without allocating; returns its length.
fn format_report(buf: &mut [u8; 96], syscall: i64) -> usize {
    const HEAD: &[u8] = b"{\"reason\":\"seccomp_violation\",\"syscall\":";
    const TAIL: &[u8] = b",\"run_time_ms\":0}";
    let mut n = 0;
    for &b in HEAD {
        buf[n] = b;
        n += 1;
    }
    let mut digits = [0u8; 20];
    let mut d = 0;
    let negative = syscall < 0;
    let mut v = syscall.unsigned_abs();
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if negative {
        buf[n] = b'-';
        n += 1;
    }
    while d > 0 {
        d -= 1;
        buf[n] = digits[d];
        n += 1;
    }
    for &b in TAIL {
        buf[n] = b;
        n += 1;
    }
    n
}

extern "C" fn sigsys_handler(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for SIGSYS from seccomp, whose
    // `_sigsys._syscall` member (an int) sits at SI_SYSCALL_OFFSET.
    let syscall = unsafe { info.cast::<u8>().add(SI_SYSCALL_OFFSET).cast::<libc::c_int>().read_unaligned() };
    let mut buf = [0u8; 96];
    let len = format_report(&mut buf, i64::from(syscall));
    let fd = OUTCOME_FD.load(Ordering::SeqCst);
    // SAFETY: raw system calls on a descriptor this process owns, with a
    // buffer on this stack; all three are allowed by every filter.
    unsafe {
        if fd >= 0 {
            libc::ftruncate(fd, 0);
            libc::pwrite(fd, buf.as_ptr().cast(), len, 0);
        }
        libc::syscall(libc::SYS_exit_group, SECCOMP_EXIT_STATUS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{ExitReason, Outcome};

    #[test]
    fn every_class_has_both_filters() {
        for class in [ThreadClass::Vmm, ThreadClass::Vcpu, ThreadClass::Vsock, ThreadClass::Block, ThreadClass::Net] {
            for mode in [SeccompMode::Kill, SeccompMode::Log] {
                assert!(program(class, mode).unwrap().len() > 10, "{class:?} {mode:?}");
            }
        }
    }

    #[test]
    fn the_violation_report_is_an_outcome() {
        for nr in [0i64, 41, 335, -1] {
            let mut buf = [0u8; 96];
            let n = format_report(&mut buf, nr);
            let o = Outcome::parse(&buf[..n]).unwrap();
            assert_eq!(o.reason, ExitReason::SeccompViolation { syscall: nr });
        }
    }

    /// Set in the child process of the test below: the thread class to filter.
    const CHILD_CLASS: &str = "ZONE_VMM_SECCOMP_TEST_CLASS";

    /// What glibc does when it trims a thread's malloc arena: the first
    /// shrink of a non-main heap opens `/proc/sys/vm/overcommit_memory`
    /// (`check_may_shrink_heap`). It happens on whichever thread frees the
    /// memory, whenever that is: a zone's vsock worker did it after a guest's
    /// flood of frames, and its filter killed the VMM.
    fn trim_a_thread_arena() {
        let blocks: Vec<Vec<u8>> = (0..128).map(|i| vec![i as u8; 64 * 1024]).collect();
        std::hint::black_box(&blocks);
        for b in blocks.into_iter().rev() {
            drop(std::hint::black_box(b));
        }
    }

    #[test]
    fn every_filter_survives_glibc_trimming_a_thread_arena() {
        if let Ok(class) = std::env::var(CHILD_CLASS) {
            let class = match class.as_str() {
                "vmm" => ThreadClass::Vmm,
                "vcpu" => ThreadClass::Vcpu,
                "block" => ThreadClass::Block,
                "net" => ThreadClass::Net,
                _ => ThreadClass::Vsock,
            };
            // A new thread gets an arena of its own; the filter (trap, with
            // no SIGSYS handler: the kernel kills the process) covers it alone.
            std::thread::spawn(move || {
                let prog = program(class, SeccompMode::Kill).unwrap();
                seccompiler::apply_filter(&prog).unwrap();
                trim_a_thread_arena();
            })
            .join()
            .unwrap();
            return;
        }
        let exe = std::env::current_exe().unwrap();
        for class in [ThreadClass::Vmm, ThreadClass::Vcpu, ThreadClass::Vsock, ThreadClass::Block, ThreadClass::Net] {
            let out = std::process::Command::new(&exe)
                .args(["--exact", "jail::seccomp::tests::every_filter_survives_glibc_trimming_a_thread_arena", "--test-threads=1"])
                .env(CHILD_CLASS, class.name())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "the {} filter killed a thread that freed memory: {:?}\n{}",
                class.name(),
                out.status,
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}
