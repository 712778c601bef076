//! `zonectl run`: boot one zone in the foreground, console on stdout.
//!
//! Exit status: the status the zone powered off with (the exit status of its
//! command), 0 after a guest reset, and for failures: 101 kernel panic,
//! 102 triple fault or vCPU failure, 124 timeout, 143 stopped (SIGTERM), 1 when the zone could not
//! be started (the message says why).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use super::format::{OutputFormat, print_json};
use zone_vmm::boot::cmdline::{DEFAULT_RUN_CMDLINE, boot_cmdline};
use zone_vmm::devices::ConsoleSink;
use zone_vmm::{Artifact, ExitReason, KvmSource, VsockConfig, VsockHost, Zone, ZoneConfig};

/// Arguments of `zonectl run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The zone kernel: an ELF vmlinux with a PVH note.
    #[arg(long)]
    pub kernel: PathBuf,
    /// The initramfs (cpio).
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = DEFAULT_RUN_CMDLINE)]
    pub cmdline: String,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    pub vcpus: u8,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 128)]
    pub memory: u64,
    /// Stop the zone after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Also write the console to this file.
    #[arg(long, value_name = "FILE")]
    pub console_log: Option<PathBuf>,
    /// KVM device.
    #[arg(long, default_value = zone_vmm::vstate::kvm::KVM_PATH)]
    pub kvm: PathBuf,
    /// Give the zone a virtio-vsock device whose host side is this Unix
    /// socket: guest connections to host (CID 2) port P reach a listener on
    /// PATH_P; host processes connect to PATH and send `CONNECT <port>\n`.
    #[arg(long, value_name = "PATH")]
    pub vsock_uds: Option<PathBuf>,
    /// The zone's vsock CID (3 or more, unique per host).
    #[arg(long, value_name = "N", default_value_t = 3, requires = "vsock_uds")]
    pub vsock_cid: u32,
    /// The zone's command, run by zone-guest (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// Writes every byte to two writers.
struct Tee(Box<dyn Write + Send>, Option<BufWriter<File>>);

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.write(buf)?;
        if let Some(f) = &mut self.1 {
            f.write_all(&buf[..n])?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()?;
        if let Some(f) = &mut self.1 {
            f.flush()?;
        }
        Ok(())
    }
}

/// Runs `zonectl run`.
pub fn run(g: &super::GlobalArgs, args: RunArgs) -> anyhow::Result<i32> {
    let started = Instant::now();
    let kernel = Artifact::read("kernel", &args.kernel)?;
    let initrd = args.initrd.as_deref().map(|p| Artifact::read("initramfs", p)).transpose()?;
    tracing::debug!(read_us = started.elapsed().as_micros(), "kernel and initramfs read");
    let devices = u32::from(args.vsock_uds.is_some());
    let mut config = ZoneConfig::new(kernel, initrd, boot_cmdline(&args.cmdline, &args.command, devices)?);
    config.vcpus = args.vcpus;
    config.memory_mib = args.memory;
    config.kvm = KvmSource::Path(args.kvm.clone());
    config.vsock = args.vsock_uds.clone().map(|p| VsockConfig { guest_cid: args.vsock_cid, host: VsockHost::Bind(p) });
    eprintln!(
        "zonectl: the zone runs unjailed in this process (no seccomp filters, namespaces or cgroup); \
         zones launched through hypervisor-agent run jailed"
    );

    let term: Box<dyn Write + Send> = match g.output {
        OutputFormat::Table => Box::new(BufWriter::new(io::stdout())),
        OutputFormat::Json => Box::new(BufWriter::new(io::stderr())),
    };
    let log = match &args.console_log {
        Some(p) => Some(BufWriter::new(File::create(p).map_err(|e| {
            anyhow::anyhow!("cannot create the console log {}: {e}; check the directory exists and is writable", p.display())
        })?)),
        None => None,
    };
    // The configuration (with its artifacts) is consumed: freed once loaded into guest memory.
    let zone = Zone::create(config, ConsoleSink::new(Box::new(Tee(term, log))))?;
    let outcome = zone.run(args.timeout.map(Duration::from_secs))?;
    let code = match &outcome.reason {
        ExitReason::PowerOff { status } => i32::from(*status),
        ExitReason::Reset => 0,
        ExitReason::Panic { .. } => 101,
        ExitReason::TripleFault | ExitReason::Halted | ExitReason::VcpuError { .. } => 102,
        // Only a jailed VMM has seccomp filters or a start phase of its own.
        ExitReason::SeccompViolation { .. } | ExitReason::StartFailed { .. } => 1,
        ExitReason::Timeout => 124,
        ExitReason::Stopped => 143,
    };
    match g.output {
        OutputFormat::Json => {
            #[derive(serde::Serialize)]
            struct Report<'a> {
                #[serde(flatten)]
                outcome: &'a zone_vmm::Outcome,
                total_ms: u128,
                exit_code: i32,
            }
            print_json(&Report { outcome: &outcome, total_ms: started.elapsed().as_millis(), exit_code: code })?;
        }
        OutputFormat::Table => eprintln!(
            "zonectl: zone {} after {} ms",
            outcome.reason.describe(),
            outcome.run_time_ms
        ),
    }
    Ok(code)
}

