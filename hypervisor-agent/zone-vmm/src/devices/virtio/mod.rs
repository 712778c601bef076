//! Virtio devices (virtio 1.1) and the virtio-mmio transport that exposes
//! them to a zone.
//!
//! | module | concept |
//! |---|---|
//! | [`mmio`] | the virtio-mmio register window (§4.2, version 2 "modern" layout) |
//! | [`vsock`] | the virtio-vsock device (§5.10), host side a Unix socket (Firecracker's hybrid scheme) |
//! | [`block`] | the virtio-blk device (§5.2), backed by a file descriptor |
//! | [`net`] | the virtio-net device (§5.1), backed by a TAP descriptor |
//! | [`guest_io`] | a request's buffers in guest memory as `iovec`s for one vectored system call |
//! | [`device_worker`] | a device's worker thread seen from the vCPUs: start under its seccomp class, activate, reset, stop |
//!
//! A device implements [`VirtioDevice`]: what it is (type, queues, feature
//! bits, configuration space) and what happens when the driver sets
//! `DRIVER_OK` ([`VirtioDevice::activate`]) or writes 0 to `Status`
//! ([`VirtioDevice::reset`]). The transport owns the driver-facing state
//! machine (§3.1 device initialization, §2.2 feature negotiation) and hands the
//! device ready [`Queue`]s of the `virtio-queue` crate. Interrupts go to KVM
//! through an irqfd ([`Interrupt`]).

pub mod block;
pub mod device_worker;
pub mod guest_io;
pub mod mmio;
pub mod net;
pub mod vsock;

use std::fmt;
use std::io;
use std::num::Wrapping;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Feature bit: the device complies with virtio 1.0 or later (§6). Our
/// devices are modern-only; a driver that does not accept it is refused.
pub const VIRTIO_F_VERSION_1: u32 = 32;

/// Device status bits (§2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest knows how to drive it.
    pub const DRIVER: u32 = 2;
    /// The driver is set up and ready to drive the device.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The guest gave up on the device.
    pub const FAILED: u32 = 0x80;
}

/// `InterruptStatus` bit: a used buffer was added to a queue (§4.2.2).
pub const INT_USED_RING: u32 = 1;
/// `InterruptStatus` bit: the configuration (or device status) changed.
pub const INT_CONFIG: u32 = 2;

/// The interrupt line of one virtio-mmio device, shared by the transport (on
/// vCPU threads) and the device's worker thread.
///
/// Raising sets bits in `InterruptStatus` and signals an irqfd registered with
/// KVM on the device's GSI; the guest reads the status and acknowledges bits
/// through `InterruptACK`. It also carries the device's "needs reset" flag,
/// which the worker sets when the driver broke the device (for example a
/// corrupt available ring) and the transport reports in `Status`.
pub struct Interrupt {
    status: AtomicU32,
    needs_reset: AtomicBool,
    irqfd: EventFd,
}

impl fmt::Debug for Interrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interrupt")
            .field("status", &self.status.load(Ordering::Relaxed))
            .field("needs_reset", &self.needs_reset.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Interrupt {
    /// An interrupt raised through `irqfd`.
    pub fn new(irqfd: EventFd) -> Self {
        Self { status: AtomicU32::new(0), needs_reset: AtomicBool::new(false), irqfd }
    }

    /// Sets `bits` in `InterruptStatus` and raises the line.
    pub fn raise(&self, bits: u32) -> io::Result<()> {
        self.status.fetch_or(bits, Ordering::SeqCst);
        self.irqfd.write(1)
    }

    /// The current `InterruptStatus`.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// `InterruptACK`: clears `bits`.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Marks the device as needing a reset and notifies the driver with a
    /// configuration-change interrupt (§2.1.2).
    pub fn fail_device(&self) {
        if !self.needs_reset.swap(true, Ordering::SeqCst) {
            let _ = self.raise(INT_CONFIG);
        }
    }

    /// Whether the device needs a reset.
    pub fn device_needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
    }

    /// Back to the power-on state (device reset).
    pub fn reset(&self) {
        self.status.store(0, Ordering::SeqCst);
        self.needs_reset.store(false, Ordering::SeqCst);
    }
}

/// Why a device refused to start.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver did not set up a queue the device needs.
    #[error("queue {0} is not ready")]
    QueueNotReady(usize),
    /// The device's worker is gone.
    #[error("the device worker is not running")]
    WorkerGone,
}

/// A virtio device behind a transport.
pub trait VirtioDevice: Send + fmt::Debug {
    /// Virtio device ID (§5: 19 is vsock).
    fn device_type(&self) -> u32;
    /// Largest size of each queue (a power of two); the count is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered to the driver.
    fn features(&self) -> u64;
    /// Reads the device configuration space at `offset`; bytes beyond it read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space (ignored where it is read-only).
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// One notification event per queue: signalled when the driver notifies
    /// that queue (by KVM through an ioeventfd, or by the transport).
    fn queue_events(&self) -> &[EventFd];
    /// Starts the device with the driver's queues (all validated against guest
    /// memory by the transport) and the accepted features.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: std::sync::Arc<Interrupt>,
        acked_features: u64,
    ) -> Result<(), ActivateError>;
    /// Stops using the queues and guest memory and drops device state, before
    /// the transport reports the reset as complete.
    fn reset(&mut self);
}

/// Copies `config[offset..]` into `data` for a driver's configuration-space
/// read; bytes past the end (or at an offset that overflows) read as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        let at = usize::try_from(offset).ok().and_then(|o| o.checked_add(i));
        *b = at.and_then(|at| config.get(at)).copied().unwrap_or(0);
    }
}

/// The next available chain of `q`, checking the available index first: the
/// crate's iterator would only log a corrupt one (an index running more than
/// the queue's size ahead of the device), and the device must stop instead.
pub fn next_chain<'m>(
    q: &mut Queue,
    mem: &'m GuestMemoryMmap,
) -> Result<Option<DescriptorChain<&'m GuestMemoryMmap>>, virtio_queue::Error> {
    let avail = q.avail_idx(mem, std::sync::atomic::Ordering::Acquire)?;
    let pending = (avail - Wrapping(q.next_avail())).0;
    if pending == 0 {
        return Ok(None);
    }
    if pending > q.size() {
        return Err(virtio_queue::Error::InvalidAvailRingIndex);
    }
    Ok(q.pop_descriptor_chain(mem))
}
