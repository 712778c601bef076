//! The virtio-mmio transport: virtio 1.1 §4.2, the version 2 ("modern")
//! register layout.
//!
//! One [`MmioTransport`] is a 4 KiB window in the zone's MMIO gap (see
//! `vstate::layout`) in front of one [`VirtioDevice`]. The guest finds it on
//! the kernel command line (`virtio_mmio.device=4K@<base>:<irq>`, §4.2.3 is
//! the register map; Linux `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`).
//!
//! | offset | register | access |
//! |---|---|---|
//! | 0x000 | MagicValue `0x74726976` ("virt") | R |
//! | 0x004 | Version (2) | R |
//! | 0x008 / 0x00c | DeviceID / VendorID | R |
//! | 0x010 / 0x014 | DeviceFeatures / DeviceFeaturesSel | R / W |
//! | 0x020 / 0x024 | DriverFeatures / DriverFeaturesSel | W |
//! | 0x030 / 0x034 / 0x038 | QueueSel / QueueNumMax / QueueNum | W / R / W |
//! | 0x044 | QueueReady | RW |
//! | 0x050 | QueueNotify | W |
//! | 0x060 / 0x064 | InterruptStatus / InterruptACK | R / W |
//! | 0x070 | Status | RW |
//! | 0x080–0x0a4 | QueueDesc, QueueDriver (avail), QueueDevice (used), Low/High | W |
//! | 0x0fc | ConfigGeneration | R |
//! | 0x100– | device configuration space | RW |
//!
//! The driver-facing state machine follows §3.1.1 (device initialization):
//! `Status` bits may only be added in order (ACKNOWLEDGE → DRIVER →
//! FEATURES_OK → DRIVER_OK) and only cleared all at once by writing 0 (device
//! reset, §2.1.1 / §4.2.3.1). Feature negotiation (§2.2): `FEATURES_OK` is
//! refused (left clear, for the driver to read back) unless the driver accepted
//! a subset of the offered features that includes `VIRTIO_F_VERSION_1`. Queue
//! registers are only writable between `FEATURES_OK` and `DRIVER_OK` (§4.2.3.2).
//!
//! Nothing the guest writes can panic the VMM: bad accesses (wrong width,
//! unknown offsets, out-of-order status, invalid queue sizes or addresses) are
//! ignored or recorded, and a queue configuration that cannot work makes
//! `DRIVER_OK` fail with `DEVICE_NEEDS_RESET` and a configuration-change
//! interrupt (§2.1.2): the guest breaks only its own device. Queues are
//! `virtio-queue` [`Queue`]s, validated against guest memory before the
//! device gets them.

use std::sync::Arc;

use tracing::{debug, warn};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::{Interrupt, VIRTIO_F_VERSION_1, VirtioDevice, status};

/// `MagicValue`: "virt" in little-endian.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// `Version` of the modern register layout.
pub const MMIO_VERSION: u32 = 2;
/// `VendorID` reported by our devices.
pub const VENDOR_ID: u32 = 0;

/// Register offsets (§4.2.2).
mod reg {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// Offset of `QueueNotify` (for registering ioeventfds on it).
pub const QUEUE_NOTIFY_OFFSET: u64 = reg::QUEUE_NOTIFY;
/// Size of one virtio-mmio window.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;

/// What the driver wrote for one queue. Kept as raw register values and turned
/// into a validated [`Queue`] only at `DRIVER_OK`.
#[derive(Debug, Clone)]
struct QueueConfig {
    max_size: u16,
    size: u32,
    ready: bool,
    desc: u64,
    driver: u64,
    device: u64,
}

impl QueueConfig {
    fn new(max_size: u16) -> Self {
        Self { max_size, size: u32::from(max_size), ready: false, desc: 0, driver: 0, device: 0 }
    }

    /// The `virtio-queue` queue this configuration describes, checked against
    /// the queue rules (power-of-two size within the maximum, ring alignment)
    /// and, when ready, against guest memory.
    fn build(&self, mem: &GuestMemoryMmap) -> Result<Queue, String> {
        let mut q = Queue::new(self.max_size).map_err(|e| format!("maximum size {}: {e}", self.max_size))?;
        let size = u16::try_from(self.size).map_err(|_| format!("size {} is out of range", self.size))?;
        q.try_set_size(size).map_err(|e| format!("size {size}: {e}"))?;
        q.try_set_desc_table_address(GuestAddress(self.desc))
            .map_err(|e| format!("descriptor table {:#x}: {e}", self.desc))?;
        q.try_set_avail_ring_address(GuestAddress(self.driver))
            .map_err(|e| format!("driver area {:#x}: {e}", self.driver))?;
        q.try_set_used_ring_address(GuestAddress(self.device))
            .map_err(|e| format!("device area {:#x}: {e}", self.device))?;
        q.set_ready(self.ready);
        if self.ready && !q.is_valid(mem) {
            return Err("its rings are not inside guest memory".into());
        }
        Ok(q)
    }
}

/// The low and high halves of a 64-bit value.
fn halves(value: u64) -> (u32, u32) {
    let b = value.to_le_bytes();
    (u32::from_le_bytes([b[0], b[1], b[2], b[3]]), u32::from_le_bytes([b[4], b[5], b[6], b[7]]))
}

/// Sets the low or high half of a 64-bit register pair.
fn set_half(value: &mut u64, high: bool, half: u32) {
    *value =
        if high { (*value & 0xffff_ffff) | (u64::from(half) << 32) } else { (*value & !0xffff_ffff) | u64::from(half) };
}

/// One virtio-mmio device window.
#[derive(Debug)]
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    driver_features_beyond_64: bool,
    queue_sel: u32,
    queues: Vec<QueueConfig>,
    status: u32,
    config_generation: u32,
    active: bool,
}

impl MmioTransport {
    /// A window in front of `device`, whose queues live in `mem` and whose
    /// interrupts go through `interrupt`.
    pub fn new(device: Box<dyn VirtioDevice>, mem: GuestMemoryMmap, interrupt: Arc<Interrupt>) -> Self {
        let queues = device.queue_max_sizes().iter().map(|&m| QueueConfig::new(m)).collect();
        Self {
            device,
            mem,
            interrupt,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            driver_features_beyond_64: false,
            queue_sel: 0,
            queues,
            status: 0,
            config_generation: 0,
            active: false,
        }
    }

    /// The queue notification events, index = queue index; the VMM registers
    /// them as ioeventfds on `QueueNotify` (datamatch: the queue index).
    pub fn queue_events(&self) -> &[EventFd] {
        self.device.queue_events()
    }

    /// Whether the device has been activated (`DRIVER_OK` accepted).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The `Status` register as the guest reads it.
    pub fn status(&self) -> u32 {
        let mut s = self.status;
        if self.interrupt.device_needs_reset() {
            s |= status::DEVICE_NEEDS_RESET;
        }
        s
    }

    fn selected_queue(&mut self) -> Option<&mut QueueConfig> {
        let sel = usize::try_from(self.queue_sel).ok()?;
        self.queues.get_mut(sel)
    }

    /// Queue registers are writable after FEATURES_OK and before DRIVER_OK (§4.2.3.2).
    fn queue_config_writable(&self) -> bool {
        self.status & status::FEATURES_OK != 0 && self.status & (status::DRIVER_OK | status::FAILED) == 0
    }

    /// A guest read of `data.len()` bytes at `offset` in the window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device.read_config(offset - reg::CONFIG, data);
            return;
        }
        data.fill(0);
        if data.len() != 4 || offset % 4 != 0 {
            debug!(offset, len = data.len(), "virtio-mmio: ignoring a register read that is not 32-bit aligned");
            return;
        }
        let value = match offset {
            reg::MAGIC_VALUE => MMIO_MAGIC,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => halves(self.device.features()).0,
                1 => halves(self.device.features()).1,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size)),
            reg::QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready)),
            reg::QUEUE_DESC_LOW => self.selected_queue().map_or(0, |q| halves(q.desc).0),
            reg::QUEUE_DESC_HIGH => self.selected_queue().map_or(0, |q| halves(q.desc).1),
            reg::QUEUE_DRIVER_LOW => self.selected_queue().map_or(0, |q| halves(q.driver).0),
            reg::QUEUE_DRIVER_HIGH => self.selected_queue().map_or(0, |q| halves(q.driver).1),
            reg::QUEUE_DEVICE_LOW => self.selected_queue().map_or(0, |q| halves(q.device).0),
            reg::QUEUE_DEVICE_HIGH => self.selected_queue().map_or(0, |q| halves(q.device).1),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.status(),
            reg::CONFIG_GENERATION => self.config_generation,
            _ => {
                debug!(offset, "virtio-mmio: read of a write-only or unknown register");
                0
            }
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// A guest write of `data` at `offset` in the window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            self.device.write_config(offset - reg::CONFIG, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            debug!(offset, len = data.len(), "virtio-mmio: ignoring a register write that is not 32 bits wide");
            return;
        };
        if offset % 4 != 0 {
            debug!(offset, "virtio-mmio: ignoring an unaligned register write");
            return;
        }
        let value = u32::from_le_bytes(bytes);
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES => {
                if self.status & status::DRIVER == 0 || self.status & status::FEATURES_OK != 0 {
                    debug!("virtio-mmio: DriverFeatures written outside feature negotiation; ignored");
                    return;
                }
                match self.driver_features_sel {
                    0 => set_half(&mut self.driver_features, false, value),
                    1 => set_half(&mut self.driver_features, true, value),
                    // No feature bits above 63 exist: accepting one is refused at FEATURES_OK.
                    _ => self.driver_features_beyond_64 |= value != 0,
                }
            }
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM
            | reg::QUEUE_READY
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH => self.write_queue_register(offset, value),
            reg::QUEUE_NOTIFY => self.notify(value),
            reg::INTERRUPT_ACK => self.interrupt.ack(value),
            reg::STATUS => self.write_status(value),
            _ => debug!(offset, value, "virtio-mmio: write to a read-only or unknown register; ignored"),
        }
    }

    fn write_queue_register(&mut self, offset: u64, value: u32) {
        if !self.queue_config_writable() {
            debug!(offset, "virtio-mmio: queue register written outside queue set-up; ignored");
            return;
        }
        let sel = self.queue_sel;
        let Some(q) = self.selected_queue() else {
            debug!(sel, "virtio-mmio: queue register written for a queue that does not exist; ignored");
            return;
        };
        match offset {
            reg::QUEUE_NUM => q.size = value,
            reg::QUEUE_READY => q.ready = value & 1 == 1,
            reg::QUEUE_DESC_LOW => set_half(&mut q.desc, false, value),
            reg::QUEUE_DESC_HIGH => set_half(&mut q.desc, true, value),
            reg::QUEUE_DRIVER_LOW => set_half(&mut q.driver, false, value),
            reg::QUEUE_DRIVER_HIGH => set_half(&mut q.driver, true, value),
            reg::QUEUE_DEVICE_LOW => set_half(&mut q.device, false, value),
            reg::QUEUE_DEVICE_HIGH => set_half(&mut q.device, true, value),
            _ => {}
        }
    }

    /// `QueueNotify` reaching the VMM (normally KVM's ioeventfd consumes it first).
    fn notify(&self, queue: u32) {
        if !self.active {
            return;
        }
        let events = self.device.queue_events();
        match usize::try_from(queue).ok().and_then(|i| events.get(i)) {
            Some(evt) => {
                if let Err(e) = evt.write(1) {
                    warn!("virtio-mmio: cannot signal the queue {queue} notification: {e}");
                }
            }
            None => debug!(queue, "virtio-mmio: notification for a queue that does not exist"),
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        if value & old != old {
            debug!(old, value, "virtio-mmio: status bits can only be cleared by a reset (write 0); ignored");
            return;
        }
        let known = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK | status::FAILED;
        let added = value & !old & known;
        if added & status::FAILED != 0 {
            debug!("virtio-mmio: the driver gave up on the device (FAILED)");
            self.status |= status::FAILED;
        }
        if added & status::ACKNOWLEDGE != 0 {
            self.status |= status::ACKNOWLEDGE;
        }
        if added & status::DRIVER != 0 {
            if self.status & status::ACKNOWLEDGE == 0 {
                debug!("virtio-mmio: DRIVER set before ACKNOWLEDGE; ignored");
                return;
            }
            self.status |= status::DRIVER;
        }
        if added & status::FEATURES_OK != 0 {
            if self.status & status::DRIVER == 0 {
                debug!("virtio-mmio: FEATURES_OK set before DRIVER; ignored");
                return;
            }
            let offered = self.device.features();
            if self.driver_features & !offered != 0 || self.driver_features_beyond_64 {
                debug!(
                    driver = self.driver_features,
                    offered, "virtio-mmio: the driver accepted features that were not offered; FEATURES_OK refused"
                );
                return;
            }
            if self.driver_features & (1 << VIRTIO_F_VERSION_1) == 0 {
                debug!("virtio-mmio: a legacy driver (no VIRTIO_F_VERSION_1); FEATURES_OK refused");
                return;
            }
            self.status |= status::FEATURES_OK;
        }
        if added & status::DRIVER_OK != 0 {
            if self.status & status::FEATURES_OK == 0 || self.status & status::FAILED != 0 {
                debug!("virtio-mmio: DRIVER_OK set before FEATURES_OK; ignored");
                return;
            }
            self.status |= status::DRIVER_OK;
            self.activate();
        }
    }

    fn activate(&mut self) {
        let queues: Result<Vec<Queue>, String> = self
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| q.build(&self.mem).map_err(|e| format!("queue {i}: {e}")))
            .collect();
        let result = queues.and_then(|queues| {
            self.device
                .activate(self.mem.clone(), queues, Arc::clone(&self.interrupt), self.driver_features)
                .map_err(|e| e.to_string())
        });
        match result {
            Ok(()) => self.active = true,
            Err(e) => {
                warn!(
                    device = self.device.device_type(),
                    "virtio-mmio: the driver's set-up cannot work ({e}); device needs a reset"
                );
                self.interrupt.fail_device();
            }
        }
    }

    fn reset(&mut self) {
        if self.active || self.status & status::DRIVER_OK != 0 {
            self.device.reset();
        }
        self.active = false;
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.driver_features_beyond_64 = false;
        self.queue_sel = 0;
        for q in &mut self.queues {
            *q = QueueConfig::new(q.max_size);
        }
        self.interrupt.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::{ActivateError, INT_CONFIG, INT_USED_RING};
    use std::sync::Mutex;
    use vm_memory::GuestAddress;

    #[derive(Debug, Default)]
    struct Calls {
        activated: Vec<(usize, u64)>,
        resets: usize,
    }

    #[derive(Debug)]
    struct Dummy {
        calls: Arc<Mutex<Calls>>,
        events: Vec<EventFd>,
    }

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            42
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 8]
        }
        fn features(&self) -> u64 {
            (1 << VIRTIO_F_VERSION_1) | 0b101
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            let cfg = 0x1122_3344_5566_7788u64.to_le_bytes();
            for (i, b) in data.iter_mut().enumerate() {
                *b = usize::try_from(offset).ok().and_then(|o| cfg.get(o + i)).copied().unwrap_or(0);
            }
        }
        fn write_config(&mut self, _: u64, _: &[u8]) {}
        fn queue_events(&self) -> &[EventFd] {
            &self.events
        }
        fn activate(
            &mut self,
            _: GuestMemoryMmap,
            queues: Vec<Queue>,
            _: Arc<Interrupt>,
            f: u64,
        ) -> Result<(), ActivateError> {
            if let Some(i) = queues.iter().position(|q| !q.ready()) {
                return Err(ActivateError::QueueNotReady(i));
            }
            self.calls.lock().unwrap().activated.push((queues.len(), f));
            Ok(())
        }
        fn reset(&mut self) {
            self.calls.lock().unwrap().resets += 1;
        }
    }

    struct Fixture {
        t: MmioTransport,
        calls: Arc<Mutex<Calls>>,
        irq: EventFd,
    }

    fn fixture() -> Fixture {
        let calls = Arc::new(Mutex::new(Calls::default()));
        let events = vec![EventFd::new(libc::EFD_NONBLOCK).unwrap(), EventFd::new(libc::EFD_NONBLOCK).unwrap()];
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let interrupt = Arc::new(Interrupt::new(irq.try_clone().unwrap()));
        let t = MmioTransport::new(Box::new(Dummy { calls: Arc::clone(&calls), events }), mem, interrupt);
        Fixture { t, calls, irq }
    }

    fn r(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn w(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    /// The Linux driver's sequence up to FEATURES_OK, accepting `features`.
    fn negotiate(t: &mut MmioTransport, features: u64) {
        w(t, reg::STATUS, 0);
        w(t, reg::STATUS, status::ACKNOWLEDGE);
        w(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(t, reg::DRIVER_FEATURES_SEL, 0);
        w(t, reg::DRIVER_FEATURES, halves(features).0);
        w(t, reg::DRIVER_FEATURES_SEL, 1);
        w(t, reg::DRIVER_FEATURES, halves(features).1);
        w(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    }

    fn setup_queue(t: &mut MmioTransport, sel: u32, size: u32, base: u64) {
        w(t, reg::QUEUE_SEL, sel);
        w(t, reg::QUEUE_NUM, size);
        w(t, reg::QUEUE_DESC_LOW, halves(base).0);
        w(t, reg::QUEUE_DESC_HIGH, halves(base).1);
        w(t, reg::QUEUE_DRIVER_LOW, halves(base + 0x1000).0);
        w(t, reg::QUEUE_DRIVER_HIGH, halves(base + 0x1000).1);
        w(t, reg::QUEUE_DEVICE_LOW, halves(base + 0x2000).0);
        w(t, reg::QUEUE_DEVICE_HIGH, halves(base + 0x2000).1);
        w(t, reg::QUEUE_READY, 1);
    }

    const ALL_OK: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;

    #[test]
    fn identification_registers() {
        let mut f = fixture();
        let t = &mut f.t;
        assert_eq!(r(t, reg::MAGIC_VALUE), 0x7472_6976);
        assert_eq!(r(t, reg::VERSION), 2);
        assert_eq!(r(t, reg::DEVICE_ID), 42);
        assert_eq!(r(t, reg::VENDOR_ID), VENDOR_ID);
        w(t, reg::DEVICE_FEATURES_SEL, 0);
        assert_eq!(r(t, reg::DEVICE_FEATURES), 0b101);
        w(t, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(r(t, reg::DEVICE_FEATURES), 1, "VIRTIO_F_VERSION_1 is bit 0 of the high bank");
        w(t, reg::DEVICE_FEATURES_SEL, 7);
        assert_eq!(r(t, reg::DEVICE_FEATURES), 0);
        w(t, reg::QUEUE_SEL, 1);
        assert_eq!(r(t, reg::QUEUE_NUM_MAX), 8);
        w(t, reg::QUEUE_SEL, 2);
        assert_eq!(r(t, reg::QUEUE_NUM_MAX), 0, "a queue that does not exist has maximum size 0");
        let mut cfg = [0u8; 8];
        t.read(0x100, &mut cfg);
        assert_eq!(u64::from_le_bytes(cfg), 0x1122_3344_5566_7788);
        let mut one = [0u8; 1];
        t.read(0x101, &mut one);
        assert_eq!(one[0], 0x77, "config space accepts byte accesses");
    }

    #[test]
    fn full_initialization_activates_the_device() {
        let mut f = fixture();
        let t = &mut f.t;
        let features = (1 << VIRTIO_F_VERSION_1) | 0b100;
        negotiate(t, features);
        assert_eq!(r(t, reg::STATUS), status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        setup_queue(t, 0, 16, 0x10000);
        setup_queue(t, 1, 4, 0x20000);
        w(t, reg::QUEUE_SEL, 1);
        assert_eq!(r(t, reg::QUEUE_READY), 1);
        w(t, reg::STATUS, ALL_OK);
        assert_eq!(r(t, reg::STATUS), ALL_OK);
        assert!(t.is_active());
        assert_eq!(f.calls.lock().unwrap().activated, vec![(2, features)]);

        // Queue registers are frozen once the device runs.
        w(t, reg::QUEUE_SEL, 0);
        w(t, reg::QUEUE_DESC_LOW, 0x5000);
        assert_eq!(r(t, reg::QUEUE_DESC_LOW), 0x10000);

        // A notification that reaches the VMM is forwarded to the queue event.
        w(t, reg::QUEUE_NOTIFY, 1);
        assert_eq!(t.queue_events()[1].read().unwrap(), 1);
        w(t, reg::QUEUE_NOTIFY, 99);

        // Interrupt status and acknowledgement.
        t.interrupt.raise(INT_USED_RING | INT_CONFIG).unwrap();
        assert_eq!(f.irq.read().unwrap(), 1);
        assert_eq!(r(t, reg::INTERRUPT_STATUS), 3);
        w(t, reg::INTERRUPT_ACK, INT_USED_RING);
        assert_eq!(r(t, reg::INTERRUPT_STATUS), INT_CONFIG);

        // Reset: everything back to power-on, the device told.
        w(t, reg::STATUS, 0);
        assert_eq!(r(t, reg::STATUS), 0);
        assert_eq!(r(t, reg::INTERRUPT_STATUS), 0);
        assert!(!t.is_active());
        assert_eq!(f.calls.lock().unwrap().resets, 1);
        w(t, reg::QUEUE_SEL, 0);
        assert_eq!(r(t, reg::QUEUE_READY), 0);
        assert_eq!(r(t, reg::QUEUE_DESC_LOW), 0);
    }

    #[test]
    fn feature_negotiation_refuses_legacy_and_unoffered_features() {
        let mut f = fixture();
        let t = &mut f.t;
        negotiate(t, 0b1);
        assert_eq!(r(t, reg::STATUS) & status::FEATURES_OK, 0, "no VIRTIO_F_VERSION_1: refused");
        negotiate(t, (1 << VIRTIO_F_VERSION_1) | 0b10);
        assert_eq!(r(t, reg::STATUS) & status::FEATURES_OK, 0, "bit 1 was not offered: refused");
        negotiate(t, 1 << VIRTIO_F_VERSION_1);
        assert_ne!(r(t, reg::STATUS) & status::FEATURES_OK, 0);
        // Features are frozen after FEATURES_OK.
        w(t, reg::DRIVER_FEATURES_SEL, 0);
        w(t, reg::DRIVER_FEATURES, 0b10);
        assert_eq!(t.driver_features, 1 << VIRTIO_F_VERSION_1);
    }

    #[test]
    fn out_of_order_status_and_bad_accesses_are_ignored() {
        let mut f = fixture();
        let t = &mut f.t;
        w(t, reg::STATUS, status::DRIVER);
        assert_eq!(r(t, reg::STATUS), 0, "DRIVER without ACKNOWLEDGE");
        w(t, reg::STATUS, status::ACKNOWLEDGE);
        w(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER_OK);
        assert_eq!(r(t, reg::STATUS), status::ACKNOWLEDGE, "DRIVER_OK without FEATURES_OK");
        // Queue registers before FEATURES_OK are ignored.
        w(t, reg::QUEUE_SEL, 0);
        w(t, reg::QUEUE_READY, 1);
        assert_eq!(r(t, reg::QUEUE_READY), 0);
        // Narrow and unaligned register accesses do nothing.
        t.write(reg::STATUS, &[0u8]);
        t.write(reg::STATUS + 1, &[0u8; 4]);
        assert_eq!(r(t, reg::STATUS), status::ACKNOWLEDGE);
        let mut two = [0xaau8; 2];
        t.read(reg::MAGIC_VALUE, &mut two);
        assert_eq!(two, [0, 0]);
        let mut big = [0u8; 8];
        t.read(reg::MAGIC_VALUE, &mut big);
        w(t, 0x0f0, 7);
        assert_eq!(r(t, 0x0f0), 0);
        // Clearing a bit without a reset is ignored.
        negotiate(t, 1 << VIRTIO_F_VERSION_1);
        w(t, reg::STATUS, status::ACKNOWLEDGE);
        assert_ne!(r(t, reg::STATUS) & status::FEATURES_OK, 0);
        assert!(f.calls.lock().unwrap().activated.is_empty());
    }

    #[test]
    fn bad_queue_configurations_fail_the_device_not_the_vmm() {
        type Setup = fn(&mut MmioTransport);
        let cases: [(&str, Setup); 6] = [
            ("size not a power of two", |t| setup_queue(t, 0, 12, 0x10000)),
            ("size above the maximum", |t| setup_queue(t, 0, 32, 0x10000)),
            ("size zero", |t| setup_queue(t, 0, 0, 0x10000)),
            ("size above u16", |t| setup_queue(t, 0, 0x1_0000, 0x10000)),
            ("misaligned descriptor table", |t| setup_queue(t, 0, 16, 0x10008)),
            ("rings outside guest memory", |t| setup_queue(t, 0, 16, 0xffff_f000_0000)),
        ];
        for (what, setup) in cases {
            let mut f = fixture();
            let t = &mut f.t;
            negotiate(t, 1 << VIRTIO_F_VERSION_1);
            setup(t);
            setup_queue(t, 1, 8, 0x40000);
            w(t, reg::STATUS, ALL_OK);
            assert!(!t.is_active(), "{what}");
            assert_ne!(r(t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0, "{what}");
            assert_eq!(r(t, reg::INTERRUPT_STATUS) & INT_CONFIG, INT_CONFIG, "{what}: config change notified");
            // A reset recovers the device.
            w(t, reg::STATUS, 0);
            assert_eq!(r(t, reg::STATUS), 0, "{what}");
        }
        // A queue the driver never enabled: the device refuses to start.
        let mut f = fixture();
        let t = &mut f.t;
        negotiate(t, 1 << VIRTIO_F_VERSION_1);
        setup_queue(t, 0, 16, 0x10000);
        w(t, reg::STATUS, ALL_OK);
        assert!(!t.is_active());
        assert_ne!(r(t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    }

    #[test]
    fn garbage_everywhere_never_panics() {
        let mut f = fixture();
        let t = &mut f.t;
        let mut x: u32 = 0x1234_5678;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let off = u64::from(x % 0x140);
            let len = [1usize, 2, 4, 8][(x >> 12) as usize % 4];
            if x & 0x8000_0000 != 0 {
                let mut buf = vec![0u8; len];
                t.read(off, &mut buf);
            } else {
                let v = x.rotate_left(7).to_le_bytes();
                let data: Vec<u8> = v.iter().copied().cycle().take(len).collect();
                t.write(off & !3, &data[..len.min(4)]);
            }
        }
    }
}
