//! The `zone-vmm` program: one zone's VMM process, started by the daemon
//! with the descriptors of [`crate::launch`] (it is not meant to be run by
//! hand; `zonectl run` boots a zone in the foreground without a daemon).
//!
//! In order: read the launch configuration, install the `SIGSYS` reporter,
//! enter the jail ([`crate::jail::enter`]), map the sealed kernel and
//! initramfs, create the zone (each device thread under its seccomp filter),
//! run it (vCPU threads under theirs, then the main thread under its own),
//! and write the outcome. SIGTERM or SIGINT stops the zone (outcome
//! `stopped`). A VMM killed outright writes nothing: the daemon sees the
//! process gone without an outcome and marks the zone failed.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::artifact::Artifact;
use crate::config::{DiskConfig, KvmSource, VsockConfig, VsockHost, ZoneConfig};
use crate::devices::virtio::net::{NetConfig, Tap};
use crate::devices::ConsoleSink;
use crate::jail::seccomp::{self, ThreadClass};
use crate::launch::{self, LaunchConfig, take_fd};
use crate::outcome::{ExitReason, Outcome};
use crate::zone::{ConsoleInput, Stopper, Zone};

/// Largest console log kept per zone run.
pub const MAX_CONSOLE_LOG: u64 = 64 * 1024 * 1024;

/// Why the VMM process could not run its zone.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The launch configuration is unusable.
    #[error(transparent)]
    Launch(#[from] launch::LaunchError),
    /// The jail could not be entered.
    #[error(transparent)]
    Jail(#[from] crate::jail::JailError),
    /// Seccomp could not be set up.
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    /// A boot artifact is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The zone could not be created or run.
    #[error(transparent)]
    Vmm(#[from] crate::zone::VmmError),
    /// The TAP handed over cannot back the network device.
    #[error(transparent)]
    Tap(#[from] crate::devices::virtio::net::TapError),
    /// A system call the process needs failed.
    #[error("{op}: {source}")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn os(op: &'static str) -> impl FnOnce(std::io::Error) -> ProcessError {
    move |source| ProcessError::Os { op, source }
}

/// SIGTERM and SIGINT.
fn stop_signals() -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is a valid value for sigemptyset to initialise.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
    }
    set
}

/// Blocks SIGTERM and SIGINT in the calling thread and every thread it
/// spawns afterwards (all of them: this runs first). The VMM is PID 1 of its
/// namespace, where a signal with its default action is dropped: they must be
/// waited for ([`stop_on_signals`]), never left to a thread that does not block them.
fn block_stop_signals() -> Result<(), ProcessError> {
    let set = stop_signals();
    // SAFETY: `set` is initialised; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(ProcessError::Os { op: "pthread_sigmask", source: std::io::Error::from_raw_os_error(rc) });
    }
    Ok(())
}

/// Starts the thread that waits for SIGTERM or SIGINT and stops the zone.
fn stop_on_signals(stopper: Stopper) -> Result<(), ProcessError> {
    let set = stop_signals();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Err(e) = seccomp::apply(ThreadClass::Vmm) {
                tracing::error!("{e}; SIGTERM will not stop the zone");
                return;
            }
            let mut sig = 0;
            // SAFETY: `set` holds the blocked signals; `sig` is a valid out-pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                tracing::info!(signal = sig, "stopping the zone");
                stopper.stop();
            }
        })
        .map_err(os("spawning the signal thread"))?;
    Ok(())
}

/// Accepts console clients on `listener` and feeds what they write to the UART.
fn serve_console_input(listener: UnixListener, input: ConsoleInput) -> Result<(), ProcessError> {
    use std::io::Read;
    std::thread::Builder::new()
        .name("console-input".into())
        .spawn(move || {
            if let Err(e) = seccomp::apply(ThreadClass::Vmm) {
                tracing::error!("{e}; console input is off");
                return;
            }
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut buf = [0u8; 256];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    input.write(&buf[..n]);
                }
            }
        })
        .map_err(os("spawning the console input thread"))?;
    Ok(())
}

/// Writes the outcome at the start of `file` (the SIGSYS reporter writes
/// there too, with the same calls).
fn write_outcome(file: &File, outcome: &Outcome) -> Result<(), ProcessError> {
    let json = serde_json::to_vec(outcome).unwrap_or_default();
    file.set_len(0).map_err(os("truncating outcome.json"))?;
    file.write_all_at(&json, 0).map_err(os("writing outcome.json"))
}

/// Runs the zone the daemon launched; returns the process exit code.
pub fn run() -> Result<i32, ProcessError> {
    let started = std::time::Instant::now();
    block_stop_signals()?;
    // SAFETY (for every `take_fd` below): these are the descriptors the daemon
    // hands over by the contract in `launch`, each taken exactly once.
    let config = LaunchConfig::read(unsafe { take_fd(launch::CONFIG_FD) })?;
    // SAFETY: see above.
    let outcome_file = File::from(unsafe { take_fd(launch::OUTCOME_FD) });
    seccomp::enable(config.jail.seccomp, outcome_file.as_raw_fd())?;
    crate::jail::enter(&config.jail)?;
    tracing::info!(
        zone = %config.zone,
        uid = config.jail.uid,
        seccomp = ?config.jail.seccomp,
        jail_us = started.elapsed().as_micros(),
        "entered the jail"
    );
    #[cfg(feature = "test-hooks")]
    test_hooks::after_jail(&config.test_hooks);

    // Guest-controlled bytes from here on: the kernel ELF first.
    // SAFETY: see above.
    let kernel = Artifact::from_sealed_memfd("kernel", unsafe { take_fd(launch::KERNEL_FD) })?;
    let initrd = if config.initrd {
        // SAFETY: see above; the daemon passes the initramfs only when there is one.
        Some(Artifact::from_sealed_memfd("initramfs", unsafe { take_fd(launch::INITRD_FD) })?)
    } else {
        None
    };
    // SAFETY: see above.
    let kvm: OwnedFd = unsafe { take_fd(launch::KVM_FD) };
    // SAFETY: see above.
    let vsock = UnixListener::from(unsafe { take_fd(launch::VSOCK_LISTENER_FD) });
    // SAFETY: see above.
    let console_listener = UnixListener::from(unsafe { take_fd(launch::CONSOLE_LISTENER_FD) });
    // SAFETY: see above.
    let console = File::from(unsafe { take_fd(launch::CONSOLE_LOG_FD) });

    if config.disks.len() > launch::MAX_DISKS {
        return Err(launch::LaunchError::Parse(format!("{} disks, at most {} are allowed", config.disks.len(), launch::MAX_DISKS)).into());
    }
    let disks = (launch::FIRST_DISK_FD..)
        .zip(&config.disks)
        .map(|(fd, d)| DiskConfig {
            name: d.name.clone(),
            // SAFETY: see above; the daemon passes disk i on FIRST_DISK_FD + i.
            file: File::from(unsafe { take_fd(fd) }),
            read_only: d.read_only,
        })
        .collect();

    let net = match &config.net {
        Some(n) => {
            let mac = launch::parse_mac(&n.mac)
                .ok_or_else(|| launch::LaunchError::Parse(format!("net.mac {:?} is not a MAC address (aa:bb:cc:dd:ee:ff)", n.mac)))?;
            // SAFETY: see above; the daemon passes the TAP on NET_FD when there is a network interface.
            let tap = Tap::from_fd(unsafe { take_fd(launch::NET_FD) })?;
            Some(NetConfig { tap, mac, mtu: n.mtu, rx_rate: n.rx_rate, tx_rate: n.tx_rate })
        }
        None => None,
    };
    let mut zone_config = ZoneConfig::new(kernel, initrd, config.cmdline.clone());
    zone_config.disks = disks;
    zone_config.net = net;
    zone_config.vcpus = config.vcpus;
    zone_config.memory_mib = config.memory_mib;
    zone_config.kvm = KvmSource::Fd(kvm);
    zone_config.vsock = Some(VsockConfig {
        guest_cid: config.guest_cid,
        host: VsockHost::Listener { listener: vsock, path: PathBuf::from(launch::JAIL_VSOCK_PATH) },
    });
    let sink = ConsoleSink::with_limit(Box::new(BufWriter::new(console)), MAX_CONSOLE_LOG);
    let zone = match Zone::create(zone_config, sink) {
        Ok(z) => z,
        Err(e) => {
            let _ = write_outcome(&outcome_file, &Outcome { reason: ExitReason::StartFailed { detail: e.to_string() }, run_time_ms: 0 });
            return Err(e.into());
        }
    };
    stop_on_signals(zone.stopper())?;
    serve_console_input(console_listener, zone.console_input())?;
    tracing::info!(start_us = started.elapsed().as_micros(), "starting the vCPUs");
    let outcome = zone.run(None)?;
    tracing::info!(outcome = %outcome.reason.describe(), "zone ended");
    write_outcome(&outcome_file, &outcome)?;
    let _ = std::io::stderr().flush();
    Ok(match outcome.reason {
        ExitReason::PowerOff { status } => i32::from(status),
        ExitReason::Reset | ExitReason::Stopped => 0,
        _ => 1,
    })
}

/// The `zone-vmm` program: logs to stderr (the zone's `vmm.log`), runs, exits.
pub fn main() -> ! {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        // vmm.log lives in the state directory: when that disk is full a log
        // line is lost, and the zone must not die of it (the default reports
        // the failed write with eprintln!, which panics when stderr fails).
        .log_internal_errors(false)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("ZONE_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    if std::env::args_os().len() > 1 {
        let _ = writeln!(
            std::io::stderr(),
            "zone-vmm: takes no arguments; it is started by hypervisor-agent with its launch descriptors \
             (to boot a zone by hand, use `zonectl run`)"
        );
        std::process::exit(2);
    }
    let code = match run() {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "zone-vmm: error: {e}");
            1
        }
    };
    std::process::exit(code)
}

/// Hooks for the jail tests (compiled only with the `test-hooks` feature).
#[cfg(feature = "test-hooks")]
pub mod test_hooks {
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::launch::TestHooks;

    static FORBIDDEN_ON_VCPU: AtomicBool = AtomicBool::new(false);

    /// Tries to open each probe path from inside the jail and logs the result.
    pub fn after_jail(hooks: &TestHooks) {
        for p in &hooks.probe_paths {
            match std::fs::File::open(p) {
                Ok(_) => tracing::warn!("test hook: open {}: opened", p.display()),
                Err(e) => tracing::warn!("test hook: open {}: denied ({e})", p.display()),
            }
        }
        FORBIDDEN_ON_VCPU.store(hooks.forbidden_syscall_on_vcpu, Ordering::SeqCst);
    }

    /// On vCPU 0 once its filter is on: a system call no vCPU may make.
    pub fn on_vcpu_start() {
        if FORBIDDEN_ON_VCPU.load(Ordering::SeqCst) {
            tracing::warn!("test hook: making a forbidden system call (socket) on vCPU 0");
            // SAFETY: a plain socket(2) call; it is expected to be trapped.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        }
    }
}
