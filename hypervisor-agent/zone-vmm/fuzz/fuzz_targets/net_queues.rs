//! The virtio-net queues as a (hostile) guest driver fills them,
//! structure-aware: transmit chains of any shape (buffers in the wrong
//! direction, headers cut short, lengths past guest memory or past the frame
//! limit, loops), receive buffers of any shape, raw writes of both available
//! indexes, frames arriving on the TAP's host side, interleaved with the
//! device's passes over both queues against a real TAP, with and without
//! rate limits. Never a panic, an access outside guest memory or an
//! unbounded allocation; every used-ring entry names a chain head the driver
//! offered and a length within guest memory.
#![no_main]

use std::cell::OnceCell;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zone_vmm::devices::virtio::guest_io::Segments;
use zone_vmm::devices::virtio::net::{Bucket, Counters, Limiter, QUEUE_SIZE, RateLimit, receive, transmit};
use zone_vmm_fuzz::tap_rig::TapRig;
use zone_vmm_fuzz::{MEM_SIZE, memory};

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
/// Both rings: descriptor table, available and used ring, 0x3000 apart.
const RINGS: [u64; 2] = [0x0000, 0x3000];
const BUFFERS: u64 = 0x8000;

#[derive(Debug, Arbitrary)]
enum Op {
    /// A chain on queue `q % 2` (0 receive, 1 transmit): `len` bytes in
    /// `pieces` descriptors; `tweak` breaks one part of it.
    Chain { q: u8, len: u32, pieces: u8, tweak: u8 },
    /// The driver writes any value to a queue's available index.
    AvailIdx { q: u8, idx: u16 },
    /// A frame of `len` bytes arrives on the TAP.
    HostFrame { len: u16, fill: u8 },
    /// The device passes over both queues.
    Process,
}

struct Ring {
    base: u64,
    next_desc: u16,
    avail: u16,
}

impl Ring {
    fn put_desc(&mut self, mem: &GuestMemoryMmap, addr: u64, len: u32, flags: u16, next: u16) -> u16 {
        let i = self.next_desc % QUEUE_SIZE;
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&flags.to_le_bytes());
        b[14..16].copy_from_slice(&(next % QUEUE_SIZE).to_le_bytes());
        mem.write_slice(&b, GuestAddress(self.base + 16 * u64::from(i))).unwrap();
        self.next_desc = self.next_desc.wrapping_add(1);
        i
    }
    fn publish(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let avail = self.base + 0x1000;
        mem.write_obj(head, GuestAddress(avail + 4 + 2 * u64::from(self.avail % QUEUE_SIZE))).unwrap();
        self.avail = self.avail.wrapping_add(1);
        mem.write_obj(self.avail, GuestAddress(avail + 2)).unwrap();
    }
}

fn queue(mem: &GuestMemoryMmap, base: u64) -> Queue {
    let mut q = Queue::new(QUEUE_SIZE).unwrap();
    q.set_size(QUEUE_SIZE);
    q.set_desc_table_address(Some(base as u32), Some(0));
    q.set_avail_ring_address(Some((base + 0x1000) as u32), Some(0));
    q.set_used_ring_address(Some((base + 0x2000) as u32), Some(0));
    q.set_ready(true);
    q.set_event_idx(true);
    assert!(q.is_valid(mem));
    q
}

thread_local! {
    static RIG: OnceCell<TapRig> = const { OnceCell::new() };
}

fuzz_target!(|input: (bool, Vec<Op>)| {
    let (limited, ops) = input;
    RIG.with(|cell| {
        let rig = cell.get_or_init(TapRig::new);
        rig.drain();
        let mem = memory(&[]);
        let mut queues = [queue(&mem, RINGS[0]), queue(&mem, RINGS[1])];
        let mut rings = RINGS.map(|base| Ring { base, next_desc: 0, avail: 0 });
        let limit = |on: bool| {
            let b = Some(Bucket { size: 4096, refill_ms: 1 });
            Limiter::new(if on { RateLimit { bytes: b, frames: Some(Bucket { size: 4, refill_ms: 1 }) } } else { RateLimit::default() })
        };
        let mut limits = [limit(limited), limit(limited)];
        let mut segs = Segments::new();
        let mut counters = Counters::default();
        let mut broken = [false; 2];
        let mut at = BUFFERS;
        for op in ops.into_iter().take(256) {
            match op {
                Op::Chain { q, len, pieces, tweak } => {
                    let q = usize::from(q % 2);
                    let ring = &mut rings[q];
                    let pieces = u32::from(pieces % 4) + 1;
                    let len = len % (70 * 1024);
                    let chunk = len.div_ceil(pieces).max(1);
                    let first = ring.next_desc % QUEUE_SIZE;
                    let mut left = len.max(1);
                    while left > 0 {
                        let n = left.min(chunk);
                        if at + u64::from(n) > MEM_SIZE as u64 {
                            at = BUFFERS;
                        }
                        let mut flags = if q == 0 { F_WRITE } else { 0 };
                        let mut d_len = n;
                        match tweak % 8 {
                            1 => flags ^= F_WRITE,                   // the wrong direction
                            2 => d_len = d_len.wrapping_mul(100_000), // past guest memory
                            _ => {}
                        }
                        let last = left == n;
                        let next = if tweak % 8 == 3 { first } else { ring.next_desc.wrapping_add(1) }; // a loop
                        if !last || tweak % 8 == 3 {
                            flags |= F_NEXT;
                        }
                        ring.put_desc(&mem, at, d_len, flags, next);
                        at += u64::from(n);
                        left -= n;
                    }
                    ring.publish(&mem, first);
                }
                Op::AvailIdx { q, idx } => {
                    let q = usize::from(q % 2);
                    rings[q].avail = idx;
                    mem.write_obj(idx, GuestAddress(RINGS[q] + 0x1000 + 2)).unwrap();
                }
                Op::HostFrame { len, fill } => rig.host_send(usize::from(len), fill),
                Op::Process => {
                    let [rx, tx] = &mut queues;
                    if !broken[1] && transmit(tx, &mem, &rig.tap, &mut segs, &mut limits[1], &mut counters).is_err() {
                        broken[1] = true; // the device would now wait for a reset
                    }
                    if !broken[0] && receive(rx, &mem, &rig.tap, &mut segs, &mut limits[0], &mut counters).is_err() {
                        broken[0] = true;
                    }
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        }
        // Every used entry names a descriptor of the table and a length within guest memory.
        for (q, base) in RINGS.iter().enumerate() {
            let used: u16 = mem.read_obj(GuestAddress(base + 0x2000 + 2)).unwrap();
            for i in 0..used.min(QUEUE_SIZE) {
                let e = base + 0x2000 + 4 + 8 * u64::from(i);
                let id: u32 = mem.read_obj(GuestAddress(e)).unwrap();
                let len: u32 = mem.read_obj(GuestAddress(e + 4)).unwrap();
                assert!(id < u32::from(QUEUE_SIZE), "queue {q}: used id {id}");
                assert!(len as usize <= MEM_SIZE, "queue {q}: used length {len}");
                if q == 1 {
                    assert_eq!(len, 0, "a transmit chain is used with length 0");
                }
            }
        }
    });
});
