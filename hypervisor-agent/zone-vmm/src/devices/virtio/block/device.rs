//! The virtio-blk device: type 2, one request queue, configuration space
//! `capacity` (le64, sectors), `size_max` (le32), `seg_max` (le32) (§5.2.4).
//!
//! Creating a [`Block`] starts the disk's worker thread (its own seccomp
//! class: epoll, positioned reads and writes, `fdatasync`). The vCPU threads
//! only hand it the queue at `DRIVER_OK` and wait for it on reset; requests
//! are served on the worker, woken by the queue's ioeventfd.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::mpsc;

use virtio_bindings::virtio_blk::{VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::disk::Disk;
use crate::devices::virtio::guest_io::Segments;
use super::request;
use super::{QUEUE_SIZE, SEG_MAX, SIZE_MAX};
use crate::devices::virtio::device_worker::{Control, DeviceWorker};
use crate::devices::virtio::{
    ActivateError, INT_USED_RING, Interrupt, VIRTIO_F_VERSION_1, VirtioDevice, next_chain, read_config_bytes,
};

/// Virtio device ID of a block device.
pub const DEVICE_TYPE: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
const STOP_TOKEN: u64 = 0;
const CONTROL_TOKEN: u64 = 1;
const QUEUE_TOKEN: u64 = 2;

/// The worker could not be started.
#[derive(Debug, thiserror::Error)]
#[error("virtio-blk {disk}: {op}: {source}")]
pub struct BlockError {
    disk: String,
    op: &'static str,
    #[source]
    source: std::io::Error,
}

/// The queue of a running device, with the memory it lives in.
#[derive(Debug)]
pub struct Active {
    mem: GuestMemoryMmap,
    queue: Queue,
    interrupt: Arc<Interrupt>,
}

impl Active {
    /// Serves every available request; a corrupt ring is an error.
    fn process(&mut self, disk: &Disk, segs: &mut Segments) -> Result<(), virtio_queue::Error> {
        if serve_queue(&mut self.queue, &self.mem, disk, segs)? && self.queue.needs_notification(&self.mem)? {
            if let Err(e) = self.interrupt.raise(INT_USED_RING) {
                tracing::warn!("virtio-blk {}: cannot raise the interrupt: {e}", disk.name());
            }
        }
        Ok(())
    }
}

/// Serves every request available on `queue` against `disk`, putting each
/// on the used ring; returns whether any was. A corrupt ring (an available
/// index too far ahead, a used ring outside guest memory) is an error: the
/// device must then stop until the driver resets it.
pub fn serve_queue(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    disk: &Disk,
    segs: &mut Segments,
) -> Result<bool, virtio_queue::Error> {
    let mut used = false;
    // The driver need not kick while the worker drains the ring; after
    // re-enabling its kicks, a request it added in between is served too.
    loop {
        queue.disable_notification(mem)?;
        while let Some(chain) = next_chain(queue, mem)? {
            let head = chain.head_index();
            let len = request::serve(mem, chain, disk, segs);
            queue.add_used(mem, head, len)?;
            used = true;
        }
        if !queue.enable_notification(mem)? {
            return Ok(used);
        }
    }
}

/// A zone's disk.
#[derive(Debug)]
pub struct Block {
    name: String,
    sectors: u64,
    read_only: bool,
    queue_events: Vec<EventFd>,
    worker: DeviceWorker<Active>,
}

impl Block {
    /// A device for `disk`, with its worker thread running.
    pub fn new(disk: Disk) -> Result<Self, BlockError> {
        let name = disk.name().to_owned();
        let fail = |op| {
            let disk = name.clone();
            move |source| BlockError { disk, op, source }
        };
        let new_evt = || EventFd::new(libc::EFD_NONBLOCK).map_err(fail("eventfd"));
        let queue_evt = new_evt()?;
        let control_evt = new_evt()?;
        let stop_evt = new_evt()?;
        let epoll = Epoll::new().map_err(fail("epoll_create"))?;
        for (evt, token) in [(&stop_evt, STOP_TOKEN), (&control_evt, CONTROL_TOKEN), (&queue_evt, QUEUE_TOKEN)] {
            epoll
                .ctl(ControlOperation::Add, evt.as_raw_fd(), EpollEvent::new(EventSet::IN, token))
                .map_err(fail("epoll_ctl"))?;
        }
        let events = [
            stop_evt.try_clone().map_err(fail("eventfd dup"))?,
            control_evt.try_clone().map_err(fail("eventfd dup"))?,
            queue_evt.try_clone().map_err(fail("eventfd dup"))?,
        ];
        let (sectors, read_only) = (disk.sectors(), disk.read_only());
        let worker = DeviceWorker::spawn(
            format!("virtio-blk {name}"),
            &format!("blk-{name}"),
            crate::jail::seccomp::ThreadClass::Block,
            control_evt,
            stop_evt,
            move |rx| run(disk, epoll, events, rx),
        )
        .map_err(fail("spawning the disk's thread"))?;
        Ok(Self { name, sectors, read_only, queue_events: vec![queue_evt], worker })
    }

    /// The configuration space (§5.2.4) up to `seg_max`.
    fn config(&self) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[..8].copy_from_slice(&self.sectors.to_le_bytes());
        c[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        c
    }
}

/// The worker: waits for queue notifications and serves requests until stopped.
fn run(disk: Disk, epoll: Epoll, events: [EventFd; 3], control: mpsc::Receiver<Control<Active>>) {
    let [_stop, control_evt, queue_evt] = events;
    let mut segs = Segments::new();
    let mut active: Option<Active> = None;
    let mut ready = [EpollEvent::default(); 4];
    loop {
        let n = match epoll.wait(-1, &mut ready) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("virtio-blk {}: epoll_wait failed ({e}); the disk stops", disk.name());
                return;
            }
        };
        for ev in &ready[..n] {
            match ev.data() {
                STOP_TOKEN => return,
                CONTROL_TOKEN => {
                    let _ = control_evt.read();
                    while let Ok(msg) = control.try_recv() {
                        match msg {
                            Control::Activate(a) => active = Some(a),
                            Control::Reset(ack) => {
                                active = None;
                                let _ = ack.send(());
                            }
                        }
                    }
                }
                _ => {
                    let _ = queue_evt.read();
                }
            }
        }
        if let Some(a) = active.as_mut() {
            if let Err(e) = a.process(&disk, &mut segs) {
                tracing::warn!("virtio-blk {}: the driver corrupted the queue ({e}); the device needs a reset", disk.name());
                a.interrupt.fail_device();
                active = None;
            }
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let mode = if self.read_only { VIRTIO_BLK_F_RO } else { VIRTIO_BLK_F_FLUSH };
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_SIZE_MAX)
            | (1 << mode)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config(), offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        tracing::debug!(offset, disk = %self.name, "virtio-blk: the configuration space is read-only; write ignored");
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
        acked_features: u64,
    ) -> Result<(), ActivateError> {
        let mut queue = queues.into_iter().next().filter(|q| q.ready()).ok_or(ActivateError::QueueNotReady(0))?;
        queue.set_event_idx(acked_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0);
        self.worker.activate(Active { mem, queue, interrupt })
    }

    fn reset(&mut self) {
        self.worker.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    fn disk(read_only: bool) -> Disk {
        let f = tempfile::tempfile().unwrap();
        f.set_len(1 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"zone disk", 4096).unwrap();
        Disk::new("root", f, read_only).unwrap()
    }

    #[test]
    fn features_and_config_space() {
        let ro = Block::new(disk(true)).unwrap();
        assert_eq!(ro.device_type(), 2);
        assert_ne!(ro.features() & (1 << VIRTIO_BLK_F_RO), 0);
        assert_eq!(ro.features() & (1 << VIRTIO_BLK_F_FLUSH), 0);
        let rw = Block::new(disk(false)).unwrap();
        assert_eq!(rw.features() & (1 << VIRTIO_BLK_F_RO), 0);
        assert_ne!(rw.features() & (1 << VIRTIO_BLK_F_FLUSH), 0);
        let mut cap = [0u8; 8];
        ro.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 2048);
        let mut seg = [0u8; 4];
        ro.read_config(12, &mut seg);
        assert_eq!(u32::from_le_bytes(seg), SEG_MAX);
        ro.read_config(u64::MAX, &mut seg);
        assert_eq!(seg, [0; 4]);
    }

    #[test]
    fn the_worker_serves_a_read_on_notification_and_raises_the_interrupt() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mut b = Block::new(disk(true)).unwrap();
        let q = MockSplitQueue::create(&mem, GuestAddress(0), 16);
        let mut h = [0u8; 16];
        h[8..].copy_from_slice(&8u64.to_le_bytes());
        mem.write_slice(&h, GuestAddress(0x2_0000)).unwrap();
        let chain = [
            RawDescriptor::from(SplitDescriptor::new(0x2_0000, 16, 1, 1)),
            RawDescriptor::from(SplitDescriptor::new(0x3_0000, 512, 3, 2)),
            RawDescriptor::from(SplitDescriptor::new(0x4_0000, 1, 2, 0)),
        ];
        q.build_desc_chain(&chain).unwrap();
        let irqfd = EventFd::new(0).unwrap();
        let interrupt = Arc::new(Interrupt::new(irqfd.try_clone().unwrap()));
        b.activate(mem.clone(), vec![q.create_queue().unwrap()], Arc::clone(&interrupt), 0).unwrap();
        b.queue_events()[0].write(1).unwrap();
        // The irqfd is blocking: this returns once the worker raised it.
        irqfd.read().unwrap();
        assert_eq!(interrupt.status() & INT_USED_RING, INT_USED_RING);
        let mut data = [0u8; 9];
        mem.read_slice(&mut data, GuestAddress(0x3_0000)).unwrap();
        assert_eq!(&data, b"zone disk");
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x4_0000)).unwrap(), request::status::OK);
        let t = std::time::Instant::now();
        b.reset();
        assert!(t.elapsed() < crate::devices::virtio::device_worker::RESET_TIMEOUT);
        // Not ready: refused.
        assert!(matches!(b.activate(mem, vec![Queue::new(16).unwrap()], interrupt, 0), Err(ActivateError::QueueNotReady(0))));
    }
}
