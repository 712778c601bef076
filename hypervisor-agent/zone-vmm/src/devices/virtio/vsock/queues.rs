//! The vsock device's virtqueues (virtio 1.1 §5.10.2): `rx` (0, host → guest
//! packets, guest-supplied writable buffers), `tx` (1, guest → host packets)
//! and `event` (2). The event queue only carries transport-reset events after
//! live migration, which zones do not do: its buffers are left untouched.
//!
//! Ring handling is the `virtio-queue` crate's; this module moves packets
//! between the rings and the [`Muxer`] and raises the used-buffer interrupt.
//! A driver that corrupts a ring (an available index running more than a
//! queue's size ahead, a used-ring write outside guest memory) breaks only its
//! own device: processing stops and the device asks for a reset.

use std::sync::Arc;
use std::time::Instant;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use virtio_vsock::packet::VsockPacket;
use vm_memory::GuestMemoryMmap;

use super::muxer::Muxer;
use super::packet::{self, Header, MAX_PKT_DATA};
use crate::devices::virtio::{ActivateError, INT_USED_RING, Interrupt, next_chain};

/// Index of the rx queue.
pub const RX: usize = 0;
/// Index of the tx queue.
pub const TX: usize = 1;
/// Index of the event queue.
pub const EVENT: usize = 2;
/// Largest size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Maximum sizes of the three queues, in order.
pub const QUEUE_SIZES: [u16; 3] = [QUEUE_SIZE; 3];

/// The driver left a queue in a state the device cannot use.
#[derive(Debug, thiserror::Error)]
#[error("the driver corrupted the {queue} queue: {source}")]
pub struct QueueBroken {
    queue: &'static str,
    #[source]
    source: virtio_queue::Error,
}

/// The three queues of a running vsock device, with the guest memory they
/// live in and the interrupt that tells the driver about used buffers.
#[derive(Debug)]
pub struct Queues {
    mem: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    /// Held, never used: its buffers stay with the device.
    _event: Queue,
    interrupt: Arc<Interrupt>,
}

/// The next available chain of `q` (see [`next_chain`]), naming the queue on failure.
fn pop<'m>(
    q: &mut Queue,
    mem: &'m GuestMemoryMmap,
    queue: &'static str,
) -> Result<Option<DescriptorChain<&'m GuestMemoryMmap>>, QueueBroken> {
    next_chain(q, mem).map_err(|source| QueueBroken { queue, source })
}

impl Queues {
    /// The queues handed over at `DRIVER_OK`; all three must be ready.
    pub fn new(mem: GuestMemoryMmap, queues: Vec<Queue>, interrupt: Arc<Interrupt>) -> Result<Self, ActivateError> {
        let mut it = queues.into_iter();
        let mut next = |i: usize| it.next().filter(|q| q.ready()).ok_or(ActivateError::QueueNotReady(i));
        let rx = next(RX)?;
        let tx = next(TX)?;
        let event = next(EVENT)?;
        Ok(Self { mem, rx, tx, _event: event, interrupt })
    }

    /// Marks the device as needing a reset (after a [`QueueBroken`]).
    pub fn fail_device(&self) {
        self.interrupt.fail_device();
    }

    /// Consumes every packet the guest queued on tx, then fills rx buffers
    /// with whatever the muxer has for the guest; raises the interrupt if
    /// either queue got used buffers.
    pub fn process(&mut self, muxer: &mut Muxer, now: Instant) -> Result<(), QueueBroken> {
        let tx_used = self.process_tx(muxer, now)?;
        let rx_used = self.process_rx(muxer)?;
        let mut notify = false;
        if tx_used {
            notify |= self.tx.needs_notification(&self.mem).map_err(|source| QueueBroken { queue: "tx", source })?;
        }
        if rx_used {
            notify |= self.rx.needs_notification(&self.mem).map_err(|source| QueueBroken { queue: "rx", source })?;
        }
        if notify {
            if let Err(e) = self.interrupt.raise(INT_USED_RING) {
                tracing::warn!("vsock: cannot raise the interrupt: {e}");
            }
        }
        Ok(())
    }

    fn process_tx(&mut self, muxer: &mut Muxer, now: Instant) -> Result<bool, QueueBroken> {
        let mut used = false;
        while let Some(mut chain) = pop(&mut self.tx, &self.mem, "tx")? {
            let head = chain.head_index();
            let raw = chain.clone();
            match VsockPacket::from_tx_virtq_chain(&self.mem, &mut chain, MAX_PKT_DATA) {
                Ok(pkt) => muxer.on_guest_packet(&Header::of(&pkt), pkt.data_slice(), now),
                Err(e) => {
                    tracing::debug!("vsock: malformed tx packet: {e}");
                    if let Some(hdr) = packet::raw_header(&self.mem, raw) {
                        muxer.reject_malformed(&hdr);
                    }
                }
            }
            self.tx.add_used(&self.mem, head, 0).map_err(|source| QueueBroken { queue: "tx", source })?;
            used = true;
        }
        Ok(used)
    }

    fn process_rx(&mut self, muxer: &mut Muxer) -> Result<bool, QueueBroken> {
        let mut used = false;
        while muxer.has_rx_work() {
            let Some(mut chain) = pop(&mut self.rx, &self.mem, "rx")? else { break };
            let head = chain.head_index();
            let len = match VsockPacket::from_rx_virtq_chain(&self.mem, &mut chain, MAX_PKT_DATA) {
                Ok(mut pkt) => match muxer.fill_rx(&mut pkt) {
                    Some(len) => len,
                    None => {
                        // Nothing to send after all: the buffer stays available.
                        self.rx.go_to_previous_position();
                        break;
                    }
                },
                Err(e) => {
                    tracing::debug!("vsock: malformed rx buffer: {e}");
                    0
                }
            };
            self.rx.add_used(&self.mem, head, len).map_err(|source| QueueBroken { queue: "rx", source })?;
            used = true;
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::vsock::backend::Backend;
    use crate::devices::virtio::vsock::packet::{HEADER_LEN, HEADER_SIZE, HOST_CID, Op, TYPE_STREAM, len_u32};
    use std::io::Read;
    use std::os::unix::net::UnixListener;
    use virtio_queue::desc::{RawDescriptor, split::Descriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::EventFd;

    const GUEST: u64 = 3;
    const F_NEXT: u16 = 1;
    const F_WRITE: u16 = 2;

    struct Rig<'a> {
        mem: &'a GuestMemoryMmap,
        rxq: MockSplitQueue<'a, GuestMemoryMmap>,
        txq: MockSplitQueue<'a, GuestMemoryMmap>,
        queues: Queues,
        irq: EventFd,
        tx_next: u16,
        rx_next: u16,
    }

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap()
    }

    fn rig(mem: &GuestMemoryMmap) -> Rig<'_> {
        let rxq = MockSplitQueue::create(mem, GuestAddress(0x1_0000), 16);
        let txq = MockSplitQueue::create(mem, GuestAddress(0x2_0000), 16);
        let evq = MockSplitQueue::create(mem, GuestAddress(0x3_0000), 16);
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let interrupt = Arc::new(Interrupt::new(irq.try_clone().unwrap()));
        let queues = Queues::new(
            mem.clone(),
            vec![rxq.create_queue().unwrap(), txq.create_queue().unwrap(), evq.create_queue().unwrap()],
            interrupt,
        )
        .unwrap();
        Rig { mem, rxq, txq, queues, irq, tx_next: 0, rx_next: 0 }
    }

    impl Rig<'_> {
        /// The guest queues a TX packet: header descriptor + payload descriptor.
        fn guest_send(&mut self, hdr: &Header, payload: &[u8]) {
            let i = self.tx_next;
            let hdr_addr = 0x10_0000 + u64::from(i) * 0x1_0000;
            self.mem.write_slice(&hdr.to_bytes(), GuestAddress(hdr_addr)).unwrap();
            self.mem.write_slice(payload, GuestAddress(hdr_addr + 0x100)).unwrap();
            let descs = [
                RawDescriptor::from(Descriptor::new(hdr_addr, HEADER_LEN, F_NEXT, i + 1)),
                RawDescriptor::from(Descriptor::new(hdr_addr + 0x100, len_u32(payload.len().max(1)), 0, 0)),
            ];
            self.txq.add_desc_chains(&descs, i).unwrap();
            self.tx_next += 2;
        }

        /// The guest makes one RX buffer available (header + 4 KiB).
        fn guest_rx_buffer(&mut self) {
            let i = self.rx_next;
            let addr = 0x20_0000 + u64::from(i) * 0x2000;
            let descs = [
                RawDescriptor::from(Descriptor::new(addr, HEADER_LEN, F_WRITE | F_NEXT, i + 1)),
                RawDescriptor::from(Descriptor::new(addr + 0x100, 4096, F_WRITE, 0)),
            ];
            self.rxq.add_desc_chains(&descs, i).unwrap();
            self.rx_next += 2;
        }

        /// The used RX packets so far: (header, payload).
        fn guest_received(&self) -> Vec<(Header, Vec<u8>)> {
            let used = self.rxq.used().idx().load();
            (0..used)
                .map(|n| {
                    let elem = self.rxq.used().ring().ref_at(usize::from(n)).unwrap().load();
                    let head = u16::try_from(elem.id()).unwrap();
                    let addr = 0x20_0000 + u64::from(head) * 0x2000;
                    let mut h = [0u8; HEADER_SIZE];
                    self.mem.read_slice(&mut h, GuestAddress(addr)).unwrap();
                    let hdr = Header::from_bytes(&h);
                    assert_eq!(elem.len(), HEADER_LEN + hdr.len);
                    let mut data = vec![0u8; usize::try_from(hdr.len).unwrap()];
                    self.mem.read_slice(&mut data, GuestAddress(addr + 0x100)).unwrap();
                    (hdr, data)
                })
                .collect()
        }
    }

    fn hdr(op: Op, len: u32) -> Header {
        Header {
            src_cid: GUEST,
            dst_cid: HOST_CID,
            src_port: 5000,
            dst_port: 1024,
            len,
            type_: TYPE_STREAM,
            op: op as u16,
            buf_alloc: 65536,
            ..Header::default()
        }
    }

    fn muxer(dir: &tempfile::TempDir) -> Muxer {
        Muxer::new(GUEST, Backend::bind(&dir.path().join("v.sock")).unwrap())
    }

    #[test]
    fn a_connection_through_the_rings() {
        let mem = memory();
        let mut r = rig(&mem);
        let dir = tempfile::tempdir().unwrap();
        let mut m = muxer(&dir);
        let l = UnixListener::bind(dir.path().join("v.sock_1024")).unwrap();

        r.guest_send(&hdr(Op::Request, 0), &[]);
        r.guest_rx_buffer();
        r.queues.process(&mut m, Instant::now()).unwrap();
        assert_eq!(r.txq.used().idx().load(), 1, "the TX buffer is returned");
        assert_eq!(r.irq.read().unwrap(), 1, "and the guest is interrupted");
        let got = r.guest_received();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.op, Op::Response as u16);

        let (mut host, _) = l.accept().unwrap();
        r.guest_send(&hdr(Op::Rw, 5), b"hello");
        r.queues.process(&mut m, Instant::now()).unwrap();
        let mut buf = [0u8; 5];
        host.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");

        std::io::Write::write_all(&mut host, b"reply").unwrap();
        let token = *m.tokens_for_tests().first().unwrap();
        m.on_host_event(token, true, false);
        // No RX buffer yet: nothing is lost, the data waits in the host socket.
        r.queues.process(&mut m, Instant::now()).unwrap();
        assert_eq!(r.guest_received().len(), 1);
        r.guest_rx_buffer();
        r.queues.process(&mut m, Instant::now()).unwrap();
        let got = r.guest_received();
        assert_eq!(got.len(), 2);
        assert_eq!((got[1].0.op, got[1].1.as_slice()), (Op::Rw as u16, &b"reply"[..]));
    }

    #[test]
    fn malformed_chains_get_a_rst_and_the_device_keeps_working() {
        let mem = memory();
        let mut r = rig(&mem);
        let dir = tempfile::tempdir().unwrap();
        let mut m = muxer(&dir);
        // The header says 100 bytes of payload; the payload descriptor has 10.
        r.guest_send(&hdr(Op::Rw, 100), &[0u8; 10]);
        // A header descriptor that is device-writable (wrong direction).
        let descs = [RawDescriptor::from(Descriptor::new(0x30_0000, HEADER_LEN, F_WRITE, 0))];
        r.txq.add_desc_chains(&descs, r.tx_next).unwrap();
        r.tx_next += 1;
        // A header descriptor that is too short to hold a header.
        let descs = [RawDescriptor::from(Descriptor::new(0x30_0000, 8, 0, 0))];
        r.txq.add_desc_chains(&descs, r.tx_next).unwrap();
        r.tx_next += 1;
        // A payload longer than 64 KiB.
        r.guest_send(&hdr(Op::Rw, MAX_PKT_DATA + 1), &[0u8; 8]);
        r.guest_rx_buffer();
        r.guest_rx_buffer();
        r.queues.process(&mut m, Instant::now()).unwrap();
        assert_eq!(r.txq.used().idx().load(), 4, "every chain is returned");
        let got = r.guest_received();
        assert_eq!(got.len(), 2, "RSTs for the two chains whose header was readable");
        assert!(got.iter().all(|(h, _)| h.op == Op::Rst as u16 && h.dst_port == 5000));
    }

    #[test]
    fn a_corrupt_available_index_breaks_only_the_device() {
        let mem = memory();
        let mut r = rig(&mem);
        let dir = tempfile::tempdir().unwrap();
        let mut m = muxer(&dir);
        r.txq.avail().idx().store(1000);
        let e = r.queues.process(&mut m, Instant::now()).unwrap_err();
        assert!(e.to_string().contains("tx"), "{e}");
    }

    #[test]
    fn descriptor_loops_and_bad_indices_do_not_hang_or_panic() {
        let mem = memory();
        let mut r = rig(&mem);
        let dir = tempfile::tempdir().unwrap();
        let mut m = muxer(&dir);
        let h = hdr(Op::Rw, 8);
        mem.write_slice(&h.to_bytes(), GuestAddress(0x30_0000)).unwrap();
        // Two descriptors pointing at each other.
        let descs = [
            RawDescriptor::from(Descriptor::new(0x30_0000, HEADER_LEN, F_NEXT, 1)),
            RawDescriptor::from(Descriptor::new(0x30_1000, 4, F_NEXT, 0)),
        ];
        for (i, d) in (0u16..).zip(descs.iter()) {
            r.txq.desc_table().store(i, *d).unwrap();
        }
        r.txq.avail().ring().ref_at(0).unwrap().store(0);
        // An available entry naming a descriptor beyond the table.
        r.txq.avail().ring().ref_at(1).unwrap().store(999);
        r.txq.avail().idx().store(2);
        // Either outcome is fine as long as nothing panics or spins.
        let _ = r.queues.process(&mut m, Instant::now());
    }
}
