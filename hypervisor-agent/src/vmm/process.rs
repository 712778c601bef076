//! The per-zone VMM process: `hypervisor-agent vmm --zone-dir DIR`.
//!
//! The daemon writes `launch.json` into the zone's directory and starts this
//! process in its own session, so the zone keeps running when the daemon
//! exits or restarts. The process boots the zone with its console appended
//! to `console.log`, ends it on SIGTERM or SIGINT (outcome `stopped`), and
//! writes `outcome.json` before it exits. A VMM killed outright writes
//! nothing: the daemon sees the process gone without an outcome and marks
//! the zone failed.

use std::fs::OpenOptions;
use std::io::BufWriter;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ExitReason, Outcome, Zone, ZoneConfig, read_artifact};
use crate::devices::ConsoleSink;

/// Largest console log kept per zone run.
pub const MAX_CONSOLE_LOG: u64 = 64 * 1024 * 1024;

/// The descriptor the daemon hands the VMM the measured kernel on.
pub const KERNEL_FD: i32 = 3;
/// The descriptor the daemon hands the VMM the measured initramfs on.
pub const INITRD_FD: i32 = 4;

/// What the VMM process boots (written by the daemon).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchFile {
    /// Kernel path (informational when `measured` is set: the bytes come from
    /// the sealed memfd on [`KERNEL_FD`]).
    pub kernel: PathBuf,
    /// Initramfs path (its bytes on [`INITRD_FD`] when `measured` is set).
    pub initrd: Option<PathBuf>,
    /// Full kernel command line (the zone's command included).
    pub cmdline: String,
    /// vCPUs.
    pub vcpus: u8,
    /// Memory (MiB).
    pub memory_mib: u64,
    /// Guest vsock context id.
    pub guest_cid: u32,
    /// The kernel command line the daemon measured: the VMM refuses to boot
    /// if the one it would load differs. `None`: read the files, measure nothing
    /// (`zonectl run`-style use without a daemon).
    #[serde(default)]
    pub measured: Option<String>,
}

/// `launch.json` in a zone directory.
pub fn launch_path(zone_dir: &Path) -> PathBuf {
    zone_dir.join("launch.json")
}

/// `outcome.json` in a zone directory.
pub fn outcome_path(zone_dir: &Path) -> PathBuf {
    zone_dir.join("outcome.json")
}

/// The zone's hybrid-vsock socket `U` (guest connections to host port P reach `U_P`).
pub fn vsock_path(zone_dir: &Path) -> PathBuf {
    zone_dir.join("vsock.sock")
}

/// `console.sock` in a zone directory: bytes written there are typed into
/// the zone's serial console (one client at a time; root only, like the directory).
pub fn console_socket_path(zone_dir: &Path) -> PathBuf {
    zone_dir.join("console.sock")
}

/// `console.log` in a zone directory.
pub fn console_path(zone_dir: &Path) -> PathBuf {
    zone_dir.join("console.log")
}

/// Blocks SIGTERM and SIGINT in the calling thread (and the threads it
/// spawns afterwards) and returns a thread that waits for them and stops the
/// zone.
fn stop_on_signals(stopper: super::Stopper) -> anyhow::Result<()> {
    // SAFETY: an all-zero sigset_t is a valid value for sigemptyset to initialise.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
    }
    // SAFETY: `set` is initialised; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    anyhow::ensure!(rc == 0, "pthread_sigmask failed: {rc}");
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        let mut sig = 0;
        // SAFETY: `set` holds the blocked signals; `sig` is a valid out-pointer.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            tracing::info!(signal = sig, "stopping the zone");
            stopper.stop();
        }
    })?;
    Ok(())
}

/// Accepts console clients on `path` and feeds what they write to the UART.
fn serve_console_input(path: &Path, input: super::ConsoleInput) -> anyhow::Result<()> {
    use std::io::Read;
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", path.display()))?;
    std::thread::Builder::new().name("console-input".into()).spawn(move || {
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
    })?;
    Ok(())
}

/// Runs the zone described in `zone_dir/launch.json`; returns the process
/// exit code.
pub fn run(zone_dir: &Path) -> anyhow::Result<i32> {
    let launch: LaunchFile = serde_json::from_slice(
        &std::fs::read(launch_path(zone_dir))
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", launch_path(zone_dir).display()))?,
    )?;
    let (kernel, initrd) = if launch.measured.is_some() {
        // SAFETY: the daemon placed the sealed kernel memfd on this descriptor
        // for this process; nothing else in it uses the descriptor.
        let kernel = crate::measure::read_sealed("kernel", unsafe { OwnedFd::from_raw_fd(KERNEL_FD) })?;
        let initrd = match launch.initrd {
            // SAFETY: as above; the daemon passes the initramfs only when there is one.
            Some(_) => Some(crate::measure::read_sealed("initramfs", unsafe { OwnedFd::from_raw_fd(INITRD_FD) })?),
            None => None,
        };
        (kernel, initrd)
    } else {
        let kernel = read_artifact("kernel", &launch.kernel)?;
        (kernel, launch.initrd.as_deref().map(|p| read_artifact("initramfs", p)).transpose()?)
    };
    let mut config = ZoneConfig::new(kernel, initrd, launch.cmdline.clone());
    config.vcpus = launch.vcpus;
    config.memory_mib = launch.memory_mib;
    config.vsock = Some(super::config::VsockConfig { guest_cid: launch.guest_cid, uds_path: vsock_path(zone_dir) });
    if let Some(measured) = &launch.measured {
        anyhow::ensure!(
            &config.kernel_cmdline() == measured,
            "the command line to load differs from the measured one; refusing to boot"
        );
    }

    let console = OpenOptions::new()
        .create(true)
        .append(true)
        .open(console_path(zone_dir))
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", console_path(zone_dir).display()))?;
    let zone = Zone::create(&config, ConsoleSink::with_limit(Box::new(BufWriter::new(console)), MAX_CONSOLE_LOG))?;
    // The artifacts are in guest memory now; keeping a second copy would only add to the VMM's RSS.
    drop(config);
    stop_on_signals(zone.stopper())?;
    serve_console_input(&console_socket_path(zone_dir), zone.console_input())?;
    let outcome: Outcome = zone.run(None)?;
    tracing::info!(outcome = %outcome.reason.describe(), "zone ended");
    let _ = std::fs::remove_file(console_socket_path(zone_dir));
    crate::daemon::store::write_atomic(&outcome_path(zone_dir), &serde_json::to_vec_pretty(&outcome)?)?;
    Ok(match outcome.reason {
        ExitReason::PowerOff { status } => i32::from(status),
        ExitReason::Reset | ExitReason::Stopped => 0,
        _ => 1,
    })
}
