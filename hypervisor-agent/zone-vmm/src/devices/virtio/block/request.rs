//! One virtio-blk request (virtio 1.1 §5.2.6): a 16-byte device-readable
//! header (`type` le32, reserved le32, `sector` le64), the data (readable for
//! a write, writable for a read or `GET_ID`), and a device-writable status
//! byte, the chain's last.
//!
//! [`serve`] checks the chain, does the I/O against the [`Disk`] and writes
//! the status; it returns the used length for the ring (bytes written into
//! guest memory, status included). Data moves between the file and guest
//! memory in one `preadv`/`pwritev` ([`Segments`]), and a request allocates
//! nothing.

use std::io::{Read, Write};

use virtio_queue::{DescriptorChain, Reader, Writer};
use vm_memory::GuestMemoryMmap;

use super::disk::Disk;
use crate::devices::virtio::guest_io::{GatherError, Segments};
use super::{SEG_MAX, SIZE_MAX};

/// Request types (§5.2.6).
pub mod kind {
    /// Read sectors into the guest.
    pub const IN: u32 = virtio_bindings::virtio_blk::VIRTIO_BLK_T_IN;
    /// Write sectors from the guest.
    pub const OUT: u32 = virtio_bindings::virtio_blk::VIRTIO_BLK_T_OUT;
    /// Make written data durable.
    pub const FLUSH: u32 = virtio_bindings::virtio_blk::VIRTIO_BLK_T_FLUSH;
    /// The device's ID string.
    pub const GET_ID: u32 = virtio_bindings::virtio_blk::VIRTIO_BLK_T_GET_ID;
}

/// Status byte values (§5.2.6).
pub mod status {
    /// Done.
    pub const OK: u8 = virtio_bindings::virtio_blk::VIRTIO_BLK_S_OK as u8;
    /// Failed, or refused (a malformed request, a write to a read-only disk).
    pub const IOERR: u8 = virtio_bindings::virtio_blk::VIRTIO_BLK_S_IOERR as u8;
    /// A request type the device does not do.
    pub const UNSUPP: u8 = virtio_bindings::virtio_blk::VIRTIO_BLK_S_UNSUPP as u8;
}

/// Length of the request header.
pub const HEADER_LEN: usize = 16;
/// Largest data length of one request, as the advertised limits allow.
pub const MAX_DATA_LEN: usize = SEG_MAX as usize * SIZE_MAX as usize;

/// Why a request was answered with an error (for the debug log).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// The chain's descriptors are not in guest memory, or overflow.
    #[error("descriptor chain outside guest memory: {0}")]
    Memory(String),
    /// No device-writable byte for the status.
    #[error("no status byte")]
    NoStatus,
    /// The header is not 16 readable bytes.
    #[error("the header is {0} readable bytes, not 16")]
    Header(usize),
    /// Data in the wrong direction for the request type.
    #[error("request type {0}: {1} bytes of data in the wrong direction")]
    Direction(u32, usize),
    /// The data does not fit the disk, or is not whole sectors.
    #[error("{len} bytes at sector {sector} are not whole sectors inside the disk")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Data length.
        len: usize,
    },
    /// More data than the advertised segment limits allow.
    #[error("{0} bytes of data is more than one request may carry")]
    TooLong(usize),
    /// A write to a read-only disk.
    #[error("the disk is read-only")]
    ReadOnly,
    /// The data's buffers cannot be handed to the host kernel.
    #[error("data buffers: {0}")]
    Buffers(#[from] GatherError),
    /// The host's I/O failed.
    #[error("host I/O: {0}")]
    Io(String),
    /// An unknown request type.
    #[error("request type {0} is not supported")]
    Unsupported(u32),
}

/// Serves the request in `chain`; returns the used length.
pub fn serve(mem: &GuestMemoryMmap, chain: DescriptorChain<&GuestMemoryMmap>, disk: &Disk, segs: &mut Segments) -> u32 {
    let Ok(mut data_out) = Writer::<()>::new(mem, chain.clone()) else {
        tracing::debug!("virtio-blk: {}", Refused::Memory("writable part".into()));
        return 0;
    };
    let writable = data_out.available_bytes();
    if writable == 0 {
        tracing::debug!("virtio-blk: {}", Refused::NoStatus);
        return 0;
    }
    let Ok(mut status_out) = data_out.split_at(writable - 1) else { return 0 };
    let result = match Reader::<()>::new(mem, chain.clone()) {
        Ok(reader) => execute(mem, &chain, reader, &mut data_out, disk, segs),
        Err(e) => Err(Refused::Memory(e.to_string())),
    };
    segs.clear();
    let (status, written) = match result {
        Ok(written) => (status::OK, written),
        Err(Refused::Unsupported(t)) => {
            tracing::debug!("virtio-blk {}: request type {t} is not supported", disk.name());
            (status::UNSUPP, 0)
        }
        Err(e) => {
            tracing::debug!("virtio-blk {}: {e}", disk.name());
            (status::IOERR, 0)
        }
    };
    if status_out.write_all(&[status]).is_err() {
        return 0;
    }
    u32::try_from(written + 1).unwrap_or(u32::MAX)
}

/// Does the request; returns how many bytes of data it wrote into guest memory.
fn execute(
    mem: &GuestMemoryMmap,
    chain: &DescriptorChain<&GuestMemoryMmap>,
    mut reader: Reader<'_>,
    data_out: &mut Writer<'_>,
    disk: &Disk,
    segs: &mut Segments,
) -> Result<usize, Refused> {
    if reader.available_bytes() < HEADER_LEN {
        return Err(Refused::Header(reader.available_bytes()));
    }
    let mut header = [0u8; HEADER_LEN];
    reader.read_exact(&mut header).map_err(|e| Refused::Io(e.to_string()))?;
    let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let mut sector = [0u8; 8];
    sector.copy_from_slice(&header[8..16]);
    let sector = u64::from_le_bytes(sector);
    let data_in = reader.available_bytes();
    let data_out_len = data_out.available_bytes();
    let io = |e: std::io::Error| Refused::Io(e.to_string());
    match kind {
        kind::IN => {
            if data_in != 0 {
                return Err(Refused::Direction(kind, data_in));
            }
            let offset = check_range(disk, sector, data_out_len)?;
            // The writable descriptors, without the status byte after the data.
            let iov = segs.gather(mem, chain.clone().writable(), 0, data_out_len)?;
            disk.read_vectored_at(iov, offset).map_err(io)?;
            Ok(data_out_len)
        }
        kind::OUT => {
            if data_out_len != 0 {
                return Err(Refused::Direction(kind, data_out_len));
            }
            if disk.read_only() {
                return Err(Refused::ReadOnly);
            }
            let offset = check_range(disk, sector, data_in)?;
            // The readable descriptors after the header.
            let iov = segs.gather(mem, chain.clone().readable(), HEADER_LEN, data_in)?;
            disk.write_vectored_at(iov, offset).map_err(io)?;
            Ok(0)
        }
        kind::FLUSH => disk.flush().map_err(io).map(|()| 0),
        kind::GET_ID => {
            let id = disk.id();
            let n = data_out_len.min(id.len());
            data_out.write_all(&id[..n]).map_err(io)?;
            Ok(n)
        }
        other => Err(Refused::Unsupported(other)),
    }
}

/// The byte offset of `len` bytes at `sector`, if they are whole sectors on the disk.
fn check_range(disk: &Disk, sector: u64, len: usize) -> Result<u64, Refused> {
    if len > MAX_DATA_LEN {
        return Err(Refused::TooLong(len));
    }
    if !disk.contains(sector, len as u64) {
        return Err(Refused::OutOfRange { sector, len });
    }
    Ok(sector * super::SECTOR_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueOwnedT};
    use vm_memory::{Bytes, GuestAddress};

    const F_NEXT: u16 = 1;
    const F_WRITE: u16 = 2;
    const HDR: u64 = 0x2_0000;
    const DATA: u64 = 0x3_0000;
    const STATUS: u64 = 0x5_0000;

    struct Rig {
        mem: GuestMemoryMmap,
        disk: Disk,
        segs: Segments,
    }

    impl Rig {
        fn new(sectors: u64, read_only: bool) -> Self {
            let f: File = tempfile::tempfile().unwrap();
            f.set_len(sectors * 512).unwrap();
            // Sector i holds the byte i in every position.
            for i in 0..sectors {
                std::os::unix::fs::FileExt::write_all_at(&f, &[i as u8; 512], i * 512).unwrap();
            }
            let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
            Self { mem, disk: Disk::new("scratch", f, read_only).unwrap(), segs: Segments::new() }
        }

        fn header(&self, kind: u32, sector: u64) {
            let mut h = [0u8; 16];
            h[..4].copy_from_slice(&kind.to_le_bytes());
            h[8..].copy_from_slice(&sector.to_le_bytes());
            self.mem.write_slice(&h, GuestAddress(HDR)).unwrap();
        }

        /// Serves a chain of (addr, len, flags) descriptors; returns (used length, status).
        fn serve(&mut self, descs: &[(u64, u32, u16)]) -> (u32, u8) {
            self.mem.write_obj(0xeeu8, GuestAddress(STATUS)).unwrap();
            let q = MockSplitQueue::create(&self.mem, GuestAddress(0), 16);
            let n = descs.len();
            let table: Vec<RawDescriptor> = descs
                .iter()
                .enumerate()
                .map(|(i, &(addr, len, flags))| {
                    let next = if i + 1 < n { flags | F_NEXT } else { flags };
                    RawDescriptor::from(SplitDescriptor::new(addr, len, next, (i + 1) as u16))
                })
                .collect();
            q.build_desc_chain(&table).unwrap();
            let mut queue: Queue = q.create_queue().unwrap();
            let chain = queue.iter(&self.mem).unwrap().next().unwrap();
            let used = serve(&self.mem, chain, &self.disk, &mut self.segs);
            (used, self.mem.read_obj(GuestAddress(STATUS)).unwrap())
        }
    }

    #[test]
    fn reads_writes_flushes_and_ids() {
        let mut r = Rig::new(64, false);
        r.header(kind::IN, 3);
        assert_eq!(r.serve(&[(HDR, 16, 0), (DATA, 1024, F_WRITE), (STATUS, 1, F_WRITE)]), (1025, status::OK));
        let mut got = [0u8; 1024];
        r.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert!(got[..512].iter().all(|&b| b == 3) && got[512..].iter().all(|&b| b == 4));

        // A write split over two segments.
        r.mem.write_slice(&[0xab; 8192], GuestAddress(DATA)).unwrap();
        r.header(kind::OUT, 10);
        assert_eq!(r.serve(&[(HDR, 16, 0), (DATA, 4096, 0), (DATA + 4096, 4096, 0), (STATUS, 1, F_WRITE)]), (1, status::OK));
        let mut back = [0u8; 8192];
        r.disk.read_at(&mut back, 10 * 512).unwrap();
        assert!(back.iter().all(|&b| b == 0xab));

        r.header(kind::FLUSH, 0);
        assert_eq!(r.serve(&[(HDR, 16, 0), (STATUS, 1, F_WRITE)]), (1, status::OK));

        r.header(kind::GET_ID, 0);
        assert_eq!(r.serve(&[(HDR, 16, 0), (DATA, 20, F_WRITE), (STATUS, 1, F_WRITE)]), (21, status::OK));
        let mut id = [0u8; 20];
        r.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(&id[..8], b"scratch\0");

        r.header(99, 0);
        assert_eq!(r.serve(&[(HDR, 16, 0), (STATUS, 1, F_WRITE)]), (1, status::UNSUPP));
    }

    #[test]
    fn a_read_only_disk_never_changes() {
        let mut r = Rig::new(8, true);
        let before = {
            let mut b = vec![0u8; 8 * 512];
            r.disk.read_at(&mut b, 0).unwrap();
            b
        };
        r.mem.write_slice(&[0xff; 512], GuestAddress(DATA)).unwrap();
        r.header(kind::OUT, 0);
        assert_eq!(r.serve(&[(HDR, 16, 0), (DATA, 512, 0), (STATUS, 1, F_WRITE)]), (1, status::IOERR));
        let mut after = vec![0u8; 8 * 512];
        r.disk.read_at(&mut after, 0).unwrap();
        assert_eq!(before, after);
        r.header(kind::FLUSH, 0);
        assert_eq!(r.serve(&[(HDR, 16, 0), (STATUS, 1, F_WRITE)]), (1, status::OK));
    }

    #[test]
    fn malformed_requests_are_refused_and_nothing_reaches_past_the_disk() {
        let mut r = Rig::new(8, false);
        // Past the last sector, partial sectors, overflowing sector numbers.
        for (sector, len) in [(7u64, 1024u32), (8, 512), (0, 100), (u64::MAX, 512)] {
            r.header(kind::IN, sector);
            assert_eq!(r.serve(&[(HDR, 16, 0), (DATA, len, F_WRITE), (STATUS, 1, F_WRITE)]), (1, status::IOERR), "{sector} {len}");
            r.header(kind::OUT, sector);
            assert_eq!(r.serve(&[(HDR, 16, 0), (DATA, len, 0), (STATUS, 1, F_WRITE)]), (1, status::IOERR), "{sector} {len}");
        }
        assert_eq!(r.disk.sectors(), 8, "the file did not grow");
        // A short header; data in the wrong direction.
        r.header(kind::IN, 0);
        assert_eq!(r.serve(&[(HDR, 8, 0), (DATA, 512, F_WRITE), (STATUS, 1, F_WRITE)]), (1, status::IOERR));
        assert_eq!(r.serve(&[(HDR, 16, 0), (DATA, 512, 0), (STATUS, 1, F_WRITE)]), (1, status::IOERR));
        r.header(kind::OUT, 0);
        assert_eq!(r.serve(&[(HDR, 16, 0), (DATA, 512, F_WRITE), (STATUS, 1, F_WRITE)]), (1, status::IOERR));
        // No writable byte at all: nothing to report, nothing written.
        assert_eq!(r.serve(&[(HDR, 16, 0), (DATA, 512, 0)]), (0, 0xee));
        // A descriptor outside guest memory.
        r.header(kind::IN, 0);
        assert_eq!(r.serve(&[(HDR, 16, 0), (0xfff_0000, 512, F_WRITE), (STATUS, 1, F_WRITE)]), (0, 0xee));
        // More data than the limits allow, whatever the disk's size.
        assert_eq!(check_range(&r.disk, 0, MAX_DATA_LEN + 512), Err(Refused::TooLong(MAX_DATA_LEN + 512)));
    }
}
