//! The virtio-blk request queue as a (hostile) guest driver fills it,
//! structure-aware: requests of any type, sector and length, with data split
//! over any number of descriptors in either direction (wrong flags, lengths
//! past their buffers, missing status bytes, loops), raw writes of the
//! available index, interleaved with rounds of the device's processing
//! against a real file, read-only or writable. Never a panic, an access
//! outside guest memory or an unbounded allocation; the file never grows, and
//! a read-only disk's file never changes.
#![no_main]

use std::os::unix::fs::FileExt;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zone_vmm::devices::virtio::block::device::serve_queue;
use zone_vmm::devices::virtio::guest_io::Segments;
use zone_vmm::devices::virtio::block::{Disk, QUEUE_SIZE};
use zone_vmm_fuzz::{MEM_SIZE, memory};

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const RING: u64 = 0x0000;
const BUFFERS: u64 = 0x4000;
/// The disk: 64 sectors.
const DISK_LEN: u64 = 64 * 512;

#[derive(Debug, Arbitrary)]
enum Op {
    /// A request: header (type, sector), `data_len` bytes in `pieces`
    /// descriptors, a status byte; `tweak` breaks one part of it.
    Request { kind: u8, sector: u8, data_len: u16, pieces: u8, tweak: u8 },
    /// The driver writes any value to the available index.
    AvailIdx(u16),
    /// The device serves what is available.
    Process,
}

struct Ring {
    next_desc: u16,
    avail: u16,
    buffers: u64,
}

impl Ring {
    fn put_desc(&mut self, mem: &GuestMemoryMmap, addr: u64, len: u32, flags: u16, next: u16) -> u16 {
        let i = self.next_desc % QUEUE_SIZE;
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&flags.to_le_bytes());
        b[14..16].copy_from_slice(&(next % QUEUE_SIZE).to_le_bytes());
        mem.write_slice(&b, GuestAddress(RING + 16 * u64::from(i))).unwrap();
        self.next_desc = self.next_desc.wrapping_add(1);
        i
    }
    fn publish(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let avail = RING + 0x1000;
        mem.write_obj(head, GuestAddress(avail + 4 + 2 * u64::from(self.avail % QUEUE_SIZE))).unwrap();
        self.avail = self.avail.wrapping_add(1);
        mem.write_obj(self.avail, GuestAddress(avail + 2)).unwrap();
    }
    fn take(&mut self, len: u64) -> u64 {
        let len = len.min(MEM_SIZE as u64 - BUFFERS);
        if self.buffers + len > MEM_SIZE as u64 {
            self.buffers = BUFFERS;
        }
        let at = self.buffers;
        self.buffers += len;
        at
    }
}

fn file() -> std::fs::File {
    let f = tempfile_in_tmp();
    f.set_len(DISK_LEN).unwrap();
    f.write_all_at(&[0x5a; DISK_LEN as usize], 0).unwrap();
    f
}

fn tempfile_in_tmp() -> std::fs::File {
    let path = std::env::temp_dir().join(format!("zone-vmm-fuzz-blk-{}", std::process::id()));
    let f = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    f
}

fuzz_target!(|input: (bool, Vec<Op>)| {
    let (read_only, ops) = input;
    let mem = memory(&[]);
    let f = file();
    let check = f.try_clone().unwrap();
    let disk = Disk::new("fuzz", f, read_only).unwrap();
    let mut q = Queue::new(QUEUE_SIZE).unwrap();
    q.set_size(QUEUE_SIZE);
    q.set_desc_table_address(Some(RING as u32), Some(0));
    q.set_avail_ring_address(Some((RING + 0x1000) as u32), Some(0));
    q.set_used_ring_address(Some((RING + 0x2000) as u32), Some(0));
    q.set_ready(true);
    assert!(q.is_valid(&mem));
    let mut segs = Segments::new();
    let mut ring = Ring { next_desc: 0, avail: 0, buffers: BUFFERS };
    let mut broken = false;
    for op in ops.into_iter().take(256) {
        match op {
            Op::Request { kind, sector, data_len, pieces, tweak } => {
                let kind = match kind % 6 {
                    0 | 1 => 0u32, // IN
                    2 | 3 => 1,    // OUT
                    4 => 4,        // FLUSH
                    _ => u32::from(kind),
                };
                let mut header = [0u8; 16];
                header[..4].copy_from_slice(&kind.to_le_bytes());
                header[8..].copy_from_slice(&u64::from(sector % 80).to_le_bytes());
                let at = ring.take(16);
                mem.write_slice(&header, GuestAddress(at)).unwrap();
                let first = ring.next_desc % QUEUE_SIZE;
                let mut hdr_len = 16u32;
                if tweak % 16 == 1 {
                    hdr_len = 8; // a short header
                }
                ring.put_desc(&mem, at, hdr_len, F_NEXT, ring.next_desc.wrapping_add(1));
                // Whole sectors, or (tweaked) any length.
                let data_len = if tweak % 16 == 2 { u64::from(data_len) } else { u64::from(data_len % 64) * 512 };
                let pieces = u64::from(pieces % 4) + 1;
                let chunk = data_len.div_ceil(pieces).max(1);
                let mut left = data_len;
                while left > 0 {
                    let n = left.min(chunk);
                    let at = ring.take(n);
                    let mut flags = F_NEXT | if kind == 0 { F_WRITE } else { 0 };
                    let mut len = n as u32;
                    match tweak % 16 {
                        3 => flags ^= F_WRITE,                 // data in the wrong direction
                        4 => len = len.wrapping_mul(100_000),   // a length past guest memory
                        _ => {}
                    }
                    let next = if tweak % 16 == 5 { first } else { ring.next_desc.wrapping_add(1) }; // a loop
                    ring.put_desc(&mem, at, len, flags, next);
                    left -= n;
                }
                let at = ring.take(1);
                let status_flags = if tweak % 16 == 6 { 0 } else { F_WRITE }; // no status byte
                ring.put_desc(&mem, at, 1, status_flags, 0);
                ring.publish(&mem, first);
            }
            Op::AvailIdx(idx) => {
                ring.avail = idx;
                mem.write_obj(idx, GuestAddress(RING + 0x1000 + 2)).unwrap();
            }
            Op::Process => {
                if !broken && serve_queue(&mut q, &mem, &disk, &mut segs).is_err() {
                    broken = true; // the device would now wait for a reset
                }
            }
        }
    }
    if !broken {
        let _ = serve_queue(&mut q, &mem, &disk, &mut segs);
    }
    assert_eq!(check.metadata().unwrap().len(), DISK_LEN, "the disk file grew");
    if read_only {
        let mut back = vec![0u8; DISK_LEN as usize];
        check.read_exact_at(&mut back, 0).unwrap();
        assert!(back.iter().all(|&b| b == 0x5a), "a read-only disk changed");
    }
});
