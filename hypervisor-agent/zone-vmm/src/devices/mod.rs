//! The devices of a zone and the port-I/O bus that reaches them.
//!
//! | port | device | module |
//! |---|---|---|
//! | 0x3f8–0x3ff | 8250 UART (COM1), IRQ 4: the zone console | [`serial`] |
//! | 0x60, 0x64 | i8042 controller, reset line only | [`i8042`] |
//! | 0x501 | zone power port: a byte written = power off with that status | [`power`] |
//!
//! Reads of any other port return zeroes (no device); writes are ignored.
//!
//! | MMIO window | device | module |
//! |---|---|---|
//! | 4 KiB each from `layout::VIRTIO_MMIO_BASE`, IRQ 5, 6, … | virtio-mmio devices (vsock) | [`virtio`] |
//!
//! Reads of unmapped MMIO addresses float high (all ones); writes are ignored.

pub mod i8042;
pub mod power;
pub mod serial;
pub mod virtio;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::outcome::ExitReason;
pub use serial::{ConsoleSink, SerialDevice};
use virtio::mmio::{MMIO_WINDOW_SIZE, MmioTransport};

/// A virtio-mmio window mapped in the MMIO gap.
#[derive(Debug)]
struct MmioSlot {
    base: u64,
    transport: Mutex<MmioTransport>,
}

/// What the vCPU does after a port write.
#[derive(Debug)]
pub enum PioAction {
    /// Resume the guest.
    Continue,
    /// The zone ends with this outcome.
    Exit(ExitReason),
}

/// All port-I/O devices of one zone, shared by its vCPU threads.
#[derive(Debug)]
pub struct Devices {
    serial: Mutex<SerialDevice>,
    mmio: Vec<MmioSlot>,
    stop: AtomicBool,
}

impl Devices {
    /// Wraps the zone's console UART.
    pub fn new(serial: SerialDevice) -> Self {
        Self { serial: Mutex::new(serial), mmio: Vec::new(), stop: AtomicBool::new(false) }
    }

    /// Maps a virtio-mmio window at `base` (4 KiB, in the MMIO gap).
    pub fn add_virtio_mmio(&mut self, base: u64, transport: MmioTransport) {
        self.mmio.push(MmioSlot { base, transport: Mutex::new(transport) });
    }

    fn mmio_slot(&self, addr: u64) -> Option<(&MmioSlot, u64)> {
        self.mmio.iter().find(|s| addr >= s.base && addr - s.base < MMIO_WINDOW_SIZE).map(|s| (s, addr - s.base))
    }

    /// A guest MMIO read (an access KVM did not handle itself).
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        match self.mmio_slot(addr) {
            // A poisoned lock only means another vCPU thread panicked mid-access.
            Some((slot, offset)) => slot.transport.lock().unwrap_or_else(|p| p.into_inner()).read(offset, data),
            None => data.fill(0xff),
        }
    }

    /// A guest MMIO write.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) {
        if let Some((slot, offset)) = self.mmio_slot(addr) {
            slot.transport.lock().unwrap_or_else(|p| p.into_inner()).write(offset, data);
        }
    }

    /// Asks every vCPU to leave its run loop.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Whether the zone is stopping.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn serial(&self) -> std::sync::MutexGuard<'_, SerialDevice> {
        // A poisoned lock only means another vCPU thread panicked mid-access;
        // the UART state is still usable for the remaining output.
        self.serial.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A guest `out` to `port`.
    pub fn pio_write(&self, port: u16, data: &[u8]) -> PioAction {
        match port {
            serial::COM1_BASE..=serial::COM1_LAST => {
                let offset = (port - serial::COM1_BASE) as u8;
                if let Some(&byte) = data.first() {
                    self.serial().write(offset, byte);
                }
                PioAction::Continue
            }
            i8042::DATA_PORT | i8042::COMMAND_PORT => match i8042::write(port, data) {
                Some(()) => {
                    // A kernel panic printed just before the reset turns the reset into a panic.
                    let reason = match self.serial().panic_message() {
                        Some(message) => ExitReason::Panic { message },
                        None => ExitReason::Reset,
                    };
                    PioAction::Exit(reason)
                }
                None => PioAction::Continue,
            },
            power::PORT => match data.first() {
                Some(&status) => PioAction::Exit(ExitReason::PowerOff { status }),
                None => PioAction::Continue,
            },
            _ => PioAction::Continue,
        }
    }

    /// A guest `in` from `port`.
    pub fn pio_read(&self, port: u16, data: &mut [u8]) {
        match port {
            serial::COM1_BASE..=serial::COM1_LAST => {
                let offset = (port - serial::COM1_BASE) as u8;
                let value = self.serial().read(offset);
                data.fill(0);
                if let Some(first) = data.first_mut() {
                    *first = value;
                }
            }
            i8042::DATA_PORT | i8042::COMMAND_PORT => data.fill(i8042::read(port)),
            _ => data.fill(0),
        }
    }

    /// Queues console input for the guest; returns how many bytes the UART
    /// accepted (0 while its receive FIFO is full).
    pub fn console_input(&self, bytes: &[u8]) -> usize {
        self.serial().enqueue_input(bytes)
    }

    /// Flushes a partial console line (the VMM's main thread calls this
    /// every [`serial::FLUSH_EVERY`]).
    pub fn flush_console(&self) {
        self.serial().flush();
    }

    /// Flushes the console and returns what it captured about a panic.
    pub fn finish(&self) -> Option<String> {
        let mut serial = self.serial();
        serial.flush();
        serial.panic_message()
    }
}
