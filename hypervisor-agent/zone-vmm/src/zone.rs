//! The VMM: one zone, from its boot artifacts to its outcome.
//!
//! [`Zone::create`] validates the configuration, opens KVM, allocates guest
//! memory, loads the kernel, initramfs and command line, sets up the devices
//! (console UART; with `vsock` configured, a virtio-vsock device in the first
//! virtio-mmio window, then one virtio-blk device per disk, all announced on
//! the kernel command line and each served by its own thread) and creates the vCPUs; [`Zone::run`] runs them, one thread each, until the guest powers
//! off, resets, panics, triple-faults or the optional deadline passes.
//! The library is what `zonectl run` drives in the foreground and what the
//! jailed per-zone VMM process ([`crate::process`]) drives.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::IoEventAddress;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use crate::boot::{self, BootError};
use crate::config::{ConfigError, KvmSource, VsockHost, ZoneConfig};
use crate::devices::virtio::vsock::backend::Backend;
use crate::jail::seccomp::{self, SeccompError, ThreadClass};
use crate::outcome::{ExitReason, Outcome};
use crate::devices::serial::COM1_IRQ;
use crate::devices::virtio::mmio::{MmioTransport, QUEUE_NOTIFY_OFFSET};
use crate::devices::virtio::block::device::BlockError;
use crate::devices::virtio::block::{Block, Disk, DiskError};
use crate::devices::virtio::vsock::{Vsock, VsockError};
use crate::devices::virtio::{Interrupt, VirtioDevice};
use crate::devices::{ConsoleSink, Devices, SerialDevice};
use crate::vstate::kvm::{self, KvmError};
use crate::vstate::layout;
use crate::vstate::vcpu::{Vcpu, VcpuError};
use crate::vstate::vm::{Vm, VmError};

/// Any reason a zone could not be created or run.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// KVM is unusable.
    #[error(transparent)]
    Kvm(#[from] KvmError),
    /// The VM could not be created.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// Boot artifacts could not be loaded.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// A vCPU could not be created.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// The vsock device could not be set up.
    #[error(transparent)]
    Vsock(#[from] VsockError),
    /// A disk cannot be used.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// A disk's device could not be set up.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// The network device could not be set up.
    #[error(transparent)]
    Net(#[from] crate::devices::virtio::net::NetError),
    /// A seccomp filter could not be installed.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// The host refused an operation the VMM needs.
    #[error("{op} failed: {source}")]
    Host {
        /// The operation.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// How long the VMM kicks its vCPUs out of `KVM_RUN` at the end of a zone
/// before it ends without the ones that did not come out.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// A zone ready to run.
#[derive(Debug)]
pub struct Zone {
    vm: Vm,
    vcpus: Vec<Vcpu>,
    devices: Arc<Devices>,
    outcomes: (mpsc::Sender<Option<ExitReason>>, mpsc::Receiver<Option<ExitReason>>),
}

/// Types into a zone's serial console from another thread.
#[derive(Debug, Clone)]
pub struct ConsoleInput(Arc<Devices>);

impl ConsoleInput {
    /// Feeds `bytes` to the UART, waiting while its 64-byte receive FIFO is
    /// full (the guest drains it); gives up once the zone has ended.
    pub fn write(&self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.0.stopping() {
            let n = self.0.console_input(&bytes[..bytes.len().min(64)]);
            if n == 0 {
                thread::sleep(Duration::from_millis(2));
            }
            bytes = &bytes[n..];
        }
    }
}

/// Ends a running zone from another thread (e.g. on SIGTERM).
#[derive(Debug, Clone)]
pub struct Stopper(mpsc::Sender<Option<ExitReason>>);

impl Stopper {
    /// Ends the zone with [`ExitReason::Stopped`] (no effect once it has ended).
    pub fn stop(&self) {
        let _ = self.0.send(Some(ExitReason::Stopped));
    }
}

/// An eventfd registered with KVM as the interrupt line `gsi`.
fn new_irqfd(vm: &Vm, gsi: u32) -> Result<EventFd, VmmError> {
    let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| VmmError::Host { op: "eventfd", source })?;
    vm.fd
        .register_irqfd(&irq, gsi)
        .map_err(|e| VmmError::Host { op: "KVM_IRQFD", source: std::io::Error::from_raw_os_error(e.errno()) })?;
    Ok(irq)
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

impl Zone {
    /// Builds the zone described by `config`, with its console going to `console`.
    /// The configuration is consumed: its artifacts are unmapped (or freed)
    /// once they are in guest memory.
    pub fn create(config: ZoneConfig, console: ConsoleSink) -> Result<Self, VmmError> {
        config.validate()?;
        let t0 = Instant::now();
        let (vcpu_count, mem_bytes) = (config.vcpus, config.memory_bytes());
        let kvm = match config.kvm {
            KvmSource::Path(ref p) => kvm::open(p)?,
            KvmSource::Fd(fd) => kvm::from_fd(fd)?,
        };
        let max_vcpus = kvm.get_max_vcpus();
        if usize::from(vcpu_count) > max_vcpus {
            return Err(ConfigError::TooManyVcpus { requested: vcpu_count, max: max_vcpus.min(255) as u8 }.into());
        }
        let vm = Vm::new(&kvm, mem_bytes)?;
        let vm_us = t0.elapsed().as_micros();
        let entry = boot::load(
            &vm.memory,
            vm.mem_size,
            vcpu_count,
            config.kernel.as_bytes(),
            config.initrd.as_ref().map(|i| i.as_bytes()),
            &config.cmdline,
        )?;
        drop((config.kernel, config.initrd));
        let load_us = t0.elapsed().as_micros();

        let irq = new_irqfd(&vm, COM1_IRQ)?;
        let mut devices = Devices::new(SerialDevice::new(irq, console));
        let mut virtio: Vec<Box<dyn VirtioDevice>> = Vec::new();
        if let Some(v) = config.vsock {
            let backend = match v.host {
                VsockHost::Bind(path) => Backend::bind(&path)?,
                VsockHost::Listener { listener, path } => Backend::from_listener(listener, &path)?,
            };
            virtio.push(Box::new(Vsock::new(v.guest_cid, backend)?));
        }
        for d in config.disks {
            let disk = Disk::new(&d.name, d.file, d.read_only)?;
            virtio.push(Box::new(Block::new(disk)?));
        }
        if let Some(n) = config.net {
            virtio.push(Box::new(crate::devices::virtio::net::Net::new(n)?));
        }
        for (index, device) in (0u32..).zip(virtio) {
            // The command line declares the same windows, in the same order (checked by `validate`).
            let Some((base, gsi)) = layout::virtio_mmio_slot(index) else { break };
            let interrupt = Arc::new(Interrupt::new(new_irqfd(&vm, gsi)?));
            let transport = MmioTransport::new(device, vm.memory.clone(), interrupt);
            let notify = IoEventAddress::Mmio(base + QUEUE_NOTIFY_OFFSET);
            for (queue, evt) in (0u32..).zip(transport.queue_events()) {
                vm.fd.register_ioevent(evt, &notify, queue).map_err(|e| VmmError::Host {
                    op: "KVM_IOEVENTFD",
                    source: std::io::Error::from_raw_os_error(e.errno()),
                })?;
            }
            devices.add_virtio_mmio(base, transport);
        }
        let devices = Arc::new(devices);
        let devices_us = t0.elapsed().as_micros();

        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| KvmError::Ioctl { op: "GET_SUPPORTED_CPUID", source: e })?;
        let supported = crate::vstate::cpuid::with_kvm_extras(
            supported,
            kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer),
        );
        let vcpus = (0..vcpu_count)
            .map(|i| Vcpu::new(&vm.fd, &supported, i, vcpu_count, entry))
            .collect::<Result<Vec<_>, _>>()?;
        tracing::debug!(vm_us, load_us, devices_us, vcpus_us = t0.elapsed().as_micros(), "zone created (times since the start of create)");
        Ok(Self { vm, vcpus, devices, outcomes: mpsc::channel() })
    }

    /// A handle that types into this zone's console.
    pub fn console_input(&self) -> ConsoleInput {
        ConsoleInput(Arc::clone(&self.devices))
    }

    /// A handle that stops this zone once it runs.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.outcomes.0.clone())
    }

    /// Runs the zone until it ends or `deadline` passes.
    pub fn run(self, deadline: Option<Duration>) -> Result<Outcome, VmmError> {
        register_signal_handler(SIGRTMIN(), kick_handler)
            .map_err(|e| VmmError::Host { op: "installing the vCPU kick signal handler", source: e.into() })?;
        let (tx, rx) = self.outcomes;
        let started = Instant::now();
        let mut threads = Vec::with_capacity(self.vcpus.len());
        for vcpu in self.vcpus {
            let devices = Arc::clone(&self.devices);
            let tx = tx.clone();
            let name = format!("vcpu{}", vcpu.index);
            let handle = thread::Builder::new()
                .name(name)
                .spawn(move || {
                    let index = vcpu.index;
                    // Every vCPU thread reports exactly once, even if it panics;
                    // none runs the guest without its filter.
                    let outcome = match seccomp::apply(ThreadClass::Vcpu) {
                        Ok(()) => {
                            #[cfg(feature = "test-hooks")]
                            if index == 0 {
                                crate::process::test_hooks::on_vcpu_start();
                            }
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| vcpu.run(devices)))
                                .unwrap_or_else(|_| {
                                    Some(ExitReason::VcpuError { vcpu: index, detail: "vCPU thread panicked".into() })
                                })
                        }
                        Err(e) => Some(ExitReason::VcpuError { vcpu: index, detail: e.to_string() }),
                    };
                    let _ = tx.send(outcome);
                })
                .map_err(|source| VmmError::Host { op: "spawning a vCPU thread", source })?;
            threads.push(handle);
        }
        drop(tx);
        // The vCPU threads have their own filters; the main thread takes its
        // own only now (a thread inherits its creator's filter).
        // The first outcome any vCPU (or a Stopper) reports ends the zone.
        // `None` comes only from a vCPU that saw the stop flag, which is never
        // set before this; every vCPU thread sends exactly one message.
        let mut reason = if let Err(e) = seccomp::apply(ThreadClass::Vmm) {
            ExitReason::StartFailed { detail: e.to_string() }
        } else {
            loop {
            // Wake at least every FLUSH_EVERY to flush a partial console line.
            let left = deadline.map(|d| d.saturating_sub(started.elapsed()));
            let next = rx.recv_timeout(left.map_or(crate::devices::serial::FLUSH_EVERY, |l| l.min(crate::devices::serial::FLUSH_EVERY)));
            match next {
                Ok(Some(reason)) => break reason,
                Ok(None) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) if left.is_none_or(|l| l > crate::devices::serial::FLUSH_EVERY) => {
                    self.devices.flush_console();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break ExitReason::Timeout,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break ExitReason::VcpuError { vcpu: 0, detail: "every vCPU thread ended without an outcome".into() };
                }
            }
            }
        };
        let run_time_ms = started.elapsed().as_millis();

        self.devices.request_stop();
        // Kick each vCPU out of KVM_RUN until it sees the stop flag; one that
        // does not come out within STOP_WAIT is left behind (the process ends
        // after reporting the outcome, which takes it down).
        let stop_started = Instant::now();
        for (index, t) in threads.into_iter().enumerate() {
            while !t.is_finished() && stop_started.elapsed() < STOP_WAIT {
                let _ = t.kill(SIGRTMIN());
                thread::sleep(Duration::from_millis(1));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::error!(vcpu = index, wait_ms = STOP_WAIT.as_millis(), "a vCPU did not leave KVM_RUN when kicked; ending without it");
            }
        }
        // A panic line can arrive on the console just before a triple fault or timeout.
        if let (ExitReason::Reset | ExitReason::TripleFault, Some(message)) = (&reason, self.devices.finish()) {
            reason = ExitReason::Panic { message };
        }
        drop(self.vm);
        Ok(Outcome { reason, run_time_ms })
    }
}
