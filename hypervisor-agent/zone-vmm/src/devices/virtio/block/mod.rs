//! virtio-blk (virtio 1.1 §5.2): a zone's disks, each backed by a file the
//! daemon opened and handed to the jailed VMM as a descriptor.
//!
//! | module | concept |
//! |---|---|
//! | [`disk`] | the backing file: size in sectors, read-only or writable, positioned I/O |
//! | [`request`] | one request: its descriptor chain checked and parsed, then served |
//! | [`device`] | the virtio device: type 2, one queue, config space, the disk's worker thread |
//!
//! Features offered: `VIRTIO_F_VERSION_1`, `VIRTIO_RING_F_EVENT_IDX` (the
//! driver kicks and the device interrupts only when the other side asked to
//! be told), `VIRTIO_BLK_F_SEG_MAX` and
//! `VIRTIO_BLK_F_SIZE_MAX` (so a request is at most [`SEG_MAX`] segments of
//! [`SIZE_MAX`] bytes), and either `VIRTIO_BLK_F_RO` (a read-only disk: every
//! write is refused with `VIRTIO_BLK_S_IOERR`, so the file never changes)
//! or `VIRTIO_BLK_F_FLUSH` (a writable disk: a flush is `fdatasync`).
//! A disk never grows: no request reaches past its last sector.
//!
//! Nothing the guest puts in the ring can panic the VMM or make it allocate
//! without bound: a malformed chain (no status byte, a header that is not
//! 16 readable bytes, data in the wrong direction, a length that is not whole
//! sectors or reaches past the disk) is answered `VIRTIO_BLK_S_IOERR` where
//! there is a status byte to write; data moves straight between the file and
//! guest memory, through a list of at most [`MAX_PIECES`](crate::devices::virtio::guest_io::MAX_PIECES) buffers
//! allocated once per disk.

pub mod device;
pub mod disk;
pub mod request;

pub use device::{Block, DEVICE_TYPE};
pub use disk::{Disk, DiskError};

/// Bytes per sector (the unit of `sector` and `capacity`, whatever the file).
pub const SECTOR_SIZE: u64 = 512;
/// Largest size of the queue.
pub const QUEUE_SIZE: u16 = crate::devices::virtio::guest_io::MAX_QUEUE_SIZE;
/// Most data segments in one request (the queue size minus header and status).
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Largest data segment.
pub const SIZE_MAX: u32 = 128 * 1024;
/// Length of the `GET_ID` answer (`VIRTIO_BLK_ID_BYTES`).
pub const ID_BYTES: usize = 20;
