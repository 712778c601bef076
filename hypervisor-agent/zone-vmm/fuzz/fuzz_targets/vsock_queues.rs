//! The vsock device's rings as a (hostile) guest driver fills them,
//! structure-aware: the input is a sequence of driver actions — tx packets
//! with any header (operation, CIDs, ports, length, credit fields) and any
//! split over descriptors (including wrong flags, lengths and loops), rx
//! buffers of any size, raw writes of the available index, host processes
//! connecting to guest ports — interleaved with rounds of the device's
//! processing against a real host side (a listener on port 1024 that echoes).
//! Never a panic, an access outside guest memory or an unbounded allocation;
//! a corrupt ring only breaks the guest's own device.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zone_vmm::devices::virtio::vsock::packet::{HEADER_SIZE, HOST_CID, Header, TYPE_STREAM};
use zone_vmm::devices::virtio::vsock::queues::{QUEUE_SIZE, Queues};
use zone_vmm_fuzz::{GUEST_CID, LISTENING_PORT, MEM_SIZE, interrupt, memory, process, with_host};

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
/// Rings: rx, tx, event; buffers from BUFFERS up.
const RING_BASE: [u64; 3] = [0x0000, 0x4000, 0x8000];
const BUFFERS: u64 = 0x1_0000;

#[derive(Debug, Arbitrary)]
struct RawHeader {
    src_cid: u8,
    dst_cid: u8,
    src_port: u16,
    dst_port: u8,
    len: u32,
    type_: u8,
    op: u8,
    flags: u8,
    buf_alloc: u32,
    fwd_cnt: u32,
}

impl RawHeader {
    /// Mostly plausible values (so connections get made), sometimes anything.
    fn header(&self, payload: usize) -> Header {
        let pick = |sel: u8, good: u64, raw: u64| if sel < 200 { good } else { raw };
        Header {
            src_cid: pick(self.src_cid, GUEST_CID, u64::from(self.src_cid)),
            dst_cid: pick(self.dst_cid, HOST_CID, u64::from(self.dst_cid)),
            src_port: u32::from(self.src_port % 64) + 2000,
            dst_port: if self.dst_port < 200 { LISTENING_PORT } else { u32::from(self.dst_port) },
            len: if self.len % 4 == 0 { u32::try_from(payload).unwrap_or(0) } else { self.len },
            type_: if self.type_ < 240 { TYPE_STREAM } else { u16::from(self.type_) },
            op: u16::from(self.op % 9),
            flags: u32::from(self.flags % 4),
            buf_alloc: self.buf_alloc,
            fwd_cnt: self.fwd_cnt,
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// A tx packet: header + payload, split over `pieces` descriptors (at most 4).
    Tx { header: RawHeader, payload: Vec<u8>, pieces: u8, tweak: u8 },
    /// `count` rx buffers of `len` bytes each (one descriptor, device-writable unless tweaked).
    Rx { count: u8, len: u16, tweak: u8 },
    /// The driver writes any value to a queue's available index.
    AvailIdx { rx: bool, idx: u16 },
    /// A host process asks for a guest port.
    HostConnect { port: u16, data: Vec<u8> },
    /// The device's worker runs.
    Process,
}

/// One split ring the fuzz input fills.
struct Ring {
    base: u64,
    next_desc: u16,
    avail: u16,
}

impl Ring {
    fn desc(&self, i: u16) -> GuestAddress {
        GuestAddress(self.base + 16 * u64::from(i % QUEUE_SIZE))
    }
    fn put_desc(&mut self, mem: &GuestMemoryMmap, addr: u64, len: u32, flags: u16, next: u16) -> u16 {
        let i = self.next_desc % QUEUE_SIZE;
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&flags.to_le_bytes());
        b[14..16].copy_from_slice(&(next % QUEUE_SIZE).to_le_bytes());
        mem.write_slice(&b, self.desc(i)).unwrap();
        self.next_desc = self.next_desc.wrapping_add(1);
        i
    }
    fn publish(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let avail = self.base + 0x1000;
        let slot = avail + 4 + 2 * u64::from(self.avail % QUEUE_SIZE);
        mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail = self.avail.wrapping_add(1);
        mem.write_obj(self.avail, GuestAddress(avail + 2)).unwrap();
    }
}

/// A bump allocator over the buffer area (wrapping).
struct Buffers(u64);

impl Buffers {
    fn take(&mut self, len: u64) -> u64 {
        let len = len.min(MEM_SIZE as u64 - BUFFERS);
        if self.0 + len > MEM_SIZE as u64 {
            self.0 = BUFFERS;
        }
        let at = self.0;
        self.0 += len;
        at
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mem = memory(&[]);
    let queues: Vec<Queue> = RING_BASE
        .iter()
        .map(|&base| {
            let mut q = Queue::new(QUEUE_SIZE).unwrap();
            q.set_size(QUEUE_SIZE);
            q.set_desc_table_address(Some(base as u32), Some(0));
            q.set_avail_ring_address(Some((base + 0x1000) as u32), Some(0));
            q.set_used_ring_address(Some((base + 0x2000) as u32), Some(0));
            q.set_ready(true);
            assert!(q.is_valid(&mem));
            q
        })
        .collect();
    let mut queues = Queues::new(mem.clone(), queues, interrupt()).unwrap();
    let mut rx = Ring { base: RING_BASE[0], next_desc: 0, avail: 0 };
    let mut tx = Ring { base: RING_BASE[1], next_desc: 0, avail: 0 };
    let mut buffers = Buffers(BUFFERS);
    with_host(|host| {
        for op in ops.into_iter().take(256) {
            match op {
                Op::Tx { header, mut payload, pieces, tweak } => {
                    payload.truncate(16 * 1024);
                    let mut bytes = header.header(payload.len()).to_bytes().to_vec();
                    bytes.extend_from_slice(&payload);
                    let pieces = usize::from(pieces % 4) + 1;
                    let chunk = bytes.len().div_ceil(pieces).max(1);
                    let parts: Vec<&[u8]> = bytes.chunks(chunk).collect();
                    let first = tx.next_desc % QUEUE_SIZE;
                    for (k, part) in parts.iter().enumerate() {
                        let at = buffers.take(part.len() as u64);
                        mem.write_slice(&part[..part.len().min(MEM_SIZE - at as usize)], GuestAddress(at)).unwrap();
                        let last = k + 1 == parts.len();
                        let mut flags = if last { 0 } else { F_NEXT };
                        let mut len = u32::try_from(part.len()).unwrap_or(0);
                        match tweak % 16 {
                            1 => flags |= F_WRITE,                      // a device-writable tx buffer
                            2 if last => flags |= F_NEXT,               // a chain that runs on
                            3 => len = len.wrapping_mul(1000),          // a length past its buffer
                            4 if k == 0 => len = len.min(HEADER_SIZE as u32 - 1), // a short header
                            _ => {}
                        }
                        let next = if tweak % 16 == 5 { first } else { tx.next_desc.wrapping_add(1) }; // a loop
                        tx.put_desc(&mem, at, len, flags, next);
                    }
                    tx.publish(&mem, first);
                }
                Op::Rx { count, len, tweak } => {
                    for _ in 0..count % 8 {
                        let at = buffers.take(u64::from(len));
                        let flags = if tweak % 8 == 1 { 0 } else { F_WRITE };
                        let head = rx.put_desc(&mem, at, u32::from(len), flags, 0);
                        rx.publish(&mem, head);
                    }
                }
                Op::AvailIdx { rx: on_rx, idx } => {
                    let ring = if on_rx { &mut rx } else { &mut tx };
                    ring.avail = idx;
                    mem.write_obj(idx, GuestAddress(ring.base + 0x1000 + 2)).unwrap();
                }
                Op::HostConnect { port, data } => host.connect_to_guest(u32::from(port), &data),
                Op::Process => {
                    if !process(&mut queues, host) {
                        return;
                    }
                }
            }
        }
        process(&mut queues, host);
    });
});
