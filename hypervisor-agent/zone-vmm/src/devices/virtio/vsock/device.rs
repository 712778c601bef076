//! The virtio-vsock device (virtio 1.1 §5.10): device type 19, three queues
//! (rx, tx, event; §5.10.2), feature `VIRTIO_F_VERSION_1` only (stream sockets,
//! no `VIRTIO_VSOCK_F_SEQPACKET`), configuration space = the guest's CID as a
//! little-endian u64 (§5.10.4).
//!
//! Creating a [`Vsock`] binds the zone's Unix socket `U` (so a bad path fails
//! the zone before it boots) and starts its worker thread; the vCPU threads
//! only hand it the queues at `DRIVER_OK` and wait for it on reset. Dropping
//! the device stops the thread and removes `U`.

use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::backend::{Backend, VsockError};
use super::muxer::Muxer;
use super::queues::{QUEUE_SIZES, Queues};
use super::worker::{self, WorkerEvents};
use crate::devices::virtio::device_worker::DeviceWorker;
use crate::devices::virtio::{ActivateError, Interrupt, VIRTIO_F_VERSION_1, VirtioDevice, read_config_bytes};

/// Virtio device ID of vsock.
pub const DEVICE_TYPE: u32 = 19;

/// A zone's vsock device.
#[derive(Debug)]
pub struct Vsock {
    guest_cid: u64,
    queue_events: Vec<EventFd>,
    worker: DeviceWorker<Queues>,
}

impl Vsock {
    /// A vsock for a guest with CID `guest_cid` whose host side is `backend`
    /// (the Unix socket `U`, and `U_<port>` for guest connections).
    pub fn new(guest_cid: u32, backend: Backend) -> Result<Self, VsockError> {
        let host = |op| move |source| VsockError::Host { op, source };
        let new_evt = || EventFd::new(libc::EFD_NONBLOCK).map_err(host("eventfd"));
        let queue_events = vec![new_evt()?, new_evt()?, new_evt()?];
        let control_evt = new_evt()?;
        let stop_evt = new_evt()?;
        let events = WorkerEvents {
            stop: stop_evt.try_clone().map_err(host("eventfd dup"))?,
            control: control_evt.try_clone().map_err(host("eventfd dup"))?,
            queues: queue_events
                .iter()
                .map(EventFd::try_clone)
                .collect::<Result<_, _>>()
                .map_err(host("eventfd dup"))?,
        };
        let muxer = Muxer::new(u64::from(guest_cid), backend);
        let worker = DeviceWorker::spawn(
            "vsock".into(),
            "vsock",
            crate::jail::seccomp::ThreadClass::Vsock,
            control_evt,
            stop_evt,
            move |rx| worker::run(muxer, events, rx),
        )
        .map_err(host("spawning the vsock thread"))?;
        Ok(Self { guest_cid: u64::from(guest_cid), queue_events, worker })
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.guest_cid.to_le_bytes(), offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        tracing::debug!(offset, "vsock: the configuration space is read-only; write ignored");
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
        _acked_features: u64,
    ) -> Result<(), ActivateError> {
        self.worker.activate(Queues::new(mem, queues, interrupt)?)
    }

    fn reset(&mut self) {
        self.worker.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::QueueT;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    fn interrupt() -> Arc<Interrupt> {
        Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()))
    }

    #[test]
    fn config_space_activation_reset_and_socket_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock.sock");
        let mut v = Vsock::new(42, Backend::bind(&path).unwrap()).unwrap();
        assert!(path.exists(), "U is bound when the device is created");
        assert_eq!(v.device_type(), 19);
        assert_eq!(v.features(), 1 << VIRTIO_F_VERSION_1);
        assert_eq!(v.queue_max_sizes().len(), 3);
        assert_eq!(v.queue_events().len(), 3);
        let mut cid = [0u8; 8];
        v.read_config(0, &mut cid);
        assert_eq!(u64::from_le_bytes(cid), 42);
        let mut tail = [0xffu8; 4];
        v.read_config(6, &mut tail);
        assert_eq!(tail, [0, 0, 0, 0], "bytes past the 8-byte config read as zero");
        v.read_config(u64::MAX, &mut tail);
        v.write_config(0, &[1, 2, 3]);
        v.read_config(0, &mut cid);
        assert_eq!(u64::from_le_bytes(cid), 42, "the config space is read-only");

        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        // Queues the driver did not enable: refused.
        let not_ready = vec![Queue::new(256).unwrap(), Queue::new(256).unwrap(), Queue::new(256).unwrap()];
        assert!(matches!(v.activate(mem.clone(), not_ready, interrupt(), 0), Err(ActivateError::QueueNotReady(0))));
        // Ready queues: accepted; a reset is acknowledged by the worker; activation works again.
        let ready = || {
            (0..3u64)
                .map(|i| {
                    let q: Queue =
                        MockSplitQueue::create(&mem, GuestAddress(0x1_0000 * (i + 1)), 16).create_queue().unwrap();
                    assert!(q.ready());
                    q
                })
                .collect::<Vec<_>>()
        };
        v.activate(mem.clone(), ready(), interrupt(), 1 << VIRTIO_F_VERSION_1).unwrap();
        let t = std::time::Instant::now();
        v.reset();
        assert!(t.elapsed() < crate::devices::virtio::device_worker::RESET_TIMEOUT, "the worker acknowledged the reset");
        v.activate(mem.clone(), ready(), interrupt(), 1 << VIRTIO_F_VERSION_1).unwrap();
        drop(v);
        assert!(!path.exists(), "U is removed with the device");
    }
}
