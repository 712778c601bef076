//! The virtio-mmio register window as a guest drives it, in front of a
//! vsock-shaped device whose activation hands the guest-programmed queues to
//! the real vsock queue handling: any sequence of register reads and writes
//! (any offset, width and value), guest memory writes and host activity, and
//! the transport and device never panic, never touch memory outside the
//! guest's, and keep their state machine (status only grows in order, queues
//! only change before DRIVER_OK).
#![no_main]

use std::sync::{Arc, Mutex};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;
use zone_vmm_fuzz::{GUEST_CID, LISTENING_PORT, MEM_SIZE, interrupt, memory, process, with_host};
use zone_vmm::devices::virtio::mmio::MmioTransport;
use zone_vmm::devices::virtio::vsock::queues::{QUEUE_SIZES, Queues};
use zone_vmm::devices::virtio::{ActivateError, Interrupt, VIRTIO_F_VERSION_1, VirtioDevice, status};

#[derive(Debug, Arbitrary)]
enum Op {
    Read { offset: u16, width: u8 },
    Write { offset: u16, value: u64, width: u8 },
    /// The guest writes its memory (rings, buffers, packets).
    Memory { addr: u32, bytes: Vec<u8> },
    /// The device's worker runs.
    Process,
    /// A host process connects to the guest's port.
    HostConnect { port: u32, data: Vec<u8> },
}

#[derive(Debug)]
struct Device {
    events: Vec<EventFd>,
    active: Arc<Mutex<Option<Queues>>>,
}

impl VirtioDevice for Device {
    fn device_type(&self) -> u32 {
        19
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }
    fn features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let cfg = GUEST_CID.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset).ok().and_then(|o| o.checked_add(i)).and_then(|at| cfg.get(at)).copied().unwrap_or(0);
        }
    }
    fn write_config(&mut self, _: u64, _: &[u8]) {}
    fn queue_events(&self) -> &[EventFd] {
        &self.events
    }
    fn activate(&mut self, mem: GuestMemoryMmap, queues: Vec<Queue>, irq: Arc<Interrupt>, _: u64) -> Result<(), ActivateError> {
        *self.active.lock().unwrap() = Some(Queues::new(mem, queues, irq)?);
        Ok(())
    }
    fn reset(&mut self) {
        *self.active.lock().unwrap() = None;
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mem = memory(&[]);
    let active = Arc::new(Mutex::new(None));
    let events = (0..3).map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap()).collect();
    let mut t = MmioTransport::new(Box::new(Device { events, active: Arc::clone(&active) }), mem.clone(), interrupt());
    with_host(|host| {
        let mut last_status = 0;
        for op in ops.into_iter().take(512) {
            match op {
                Op::Read { offset, width } => {
                    let mut b = vec![0u8; usize::from(width % 9)];
                    t.read(u64::from(offset), &mut b);
                }
                Op::Write { offset, value, width } => {
                    let b = value.to_le_bytes();
                    t.write(u64::from(offset), &b[..usize::from(width % 9)]);
                }
                Op::Memory { addr, bytes } => {
                    let addr = u64::from(addr) % MEM_SIZE as u64;
                    let n = bytes.len().min(MEM_SIZE - addr as usize);
                    mem.write_slice(&bytes[..n], GuestAddress(addr)).unwrap();
                }
                Op::Process => {
                    let mut active = active.lock().unwrap();
                    if let Some(q) = active.as_mut() {
                        if !process(q, host) {
                            // A broken ring: the worker drops the queues until the guest resets the device.
                            *active = None;
                        }
                    }
                }
                Op::HostConnect { port, data } => host.connect_to_guest(port % (LISTENING_PORT * 2), &data),
            }
            // Status bits only appear in order, and only vanish all at once (a reset).
            let s = t.status() & !status::DEVICE_NEEDS_RESET;
            assert!(s == 0 || s & last_status == last_status, "status {last_status:#x} -> {s:#x}");
            // The device only ever has queues while the transport says it is active.
            assert!(t.is_active() || active.lock().unwrap().is_none());
            last_status = s;
        }
    });
});
