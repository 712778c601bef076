//! A request's data as the host kernel sees it: the guest memory its
//! descriptors name, as a list of `iovec`s for one vectored system call
//! (`preadv`/`pwritev` against a disk file, `readv`/`writev` on a TAP), so
//! data moves between the host and guest memory without a copy in between,
//! in one system call per request.
//!
//! [`Segments`] is the list, kept per device queue and reused, so that a
//! request allocates nothing: a request whose data spans more pieces than it
//! has room for is refused, never grown into.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// The largest queue of a device that gathers (virtio-blk, virtio-net).
pub const MAX_QUEUE_SIZE: u16 = 256;

/// Most pieces of guest memory one request's data may occupy: a descriptor
/// per queue entry, each of which may cross one boundary between memory regions.
pub const MAX_PIECES: usize = 2 * MAX_QUEUE_SIZE as usize;

/// The descriptors do not describe `len` bytes of guest memory we can hand
/// to the kernel.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GatherError {
    /// A descriptor's buffer is not in guest memory.
    #[error("a data buffer at {addr:#x} ({len} bytes) is outside guest memory")]
    Outside {
        /// Guest address of the buffer.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// The data spans more pieces than a request may.
    #[error("the data spans more than {MAX_PIECES} pieces of guest memory")]
    TooManyPieces,
    /// The descriptors hold fewer bytes than asked for (the caller measured them first).
    #[error("the descriptors hold {0} bytes fewer than the request's data")]
    Short(usize),
}

/// The guest memory of one request's data, ready for a vectored system call.
///
/// The `iovec`s point into guest memory: they are filled by [`Segments::gather`]
/// and used while the memory is borrowed, then cleared with [`Segments::clear`].
#[derive(Debug)]
pub struct Segments {
    iov: Vec<libc::iovec>,
}

impl Default for Segments {
    fn default() -> Self {
        Self::new()
    }
}

impl Segments {
    /// Room for [`MAX_PIECES`] pieces, allocated once.
    pub fn new() -> Self {
        Self { iov: Vec::with_capacity(MAX_PIECES) }
    }

    /// Replaces the list with the guest memory of `descs`, after skipping
    /// its first `skip` bytes and taking `len` bytes.
    pub fn gather(
        &mut self,
        mem: &GuestMemoryMmap,
        descs: impl Iterator<Item = Descriptor>,
        mut skip: usize,
        len: usize,
    ) -> Result<&mut [libc::iovec], GatherError> {
        self.iov.clear();
        let mut left = len;
        for desc in descs {
            if left == 0 {
                break;
            }
            let outside = || GatherError::Outside { addr: desc.addr().0, len: desc.len() };
            let mut d_len = desc.len() as usize;
            let mut addr = desc.addr().0;
            if skip >= d_len {
                skip -= d_len;
                continue;
            }
            addr = addr.checked_add(skip as u64).ok_or_else(outside)?;
            d_len -= skip;
            skip = 0;
            let take = d_len.min(left);
            for slice in mem.get_slices(GuestAddress(addr), take) {
                let slice = slice.map_err(|_| outside())?;
                if self.iov.len() == MAX_PIECES {
                    self.iov.clear();
                    return Err(GatherError::TooManyPieces);
                }
                let base = slice.ptr_guard_mut().as_ptr();
                self.iov.push(libc::iovec { iov_base: base.cast(), iov_len: slice.len() });
            }
            left -= take;
        }
        if left != 0 {
            self.iov.clear();
            return Err(GatherError::Short(left));
        }
        Ok(&mut self.iov)
    }

    /// Forgets the pointers into guest memory.
    pub fn clear(&mut self) {
        self.iov.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(addr: u64, len: u32) -> Descriptor {
        Descriptor::new(addr, len, 0, 0)
    }

    #[test]
    fn skips_takes_and_refuses_what_is_not_guest_memory() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1_0000), (GuestAddress(0x1_0000), 0x1_0000)]).unwrap();
        let mut s = Segments::new();
        // A 16-byte header skipped, 8 KiB taken across two descriptors, the second crossing regions.
        let iov = s.gather(&mem, [desc(0x100, 16), desc(0x1000, 4096), desc(0xf800, 0x2000)].into_iter(), 16, 8192).unwrap();
        let lens: Vec<usize> = iov.iter().map(|v| v.iov_len).collect();
        assert_eq!(lens, [4096, 0x800, 0x800]);
        assert_eq!(
            s.gather(&mem, [desc(0x1f000, 0x2000)].into_iter(), 0, 0x2000).map(|_| ()),
            Err(GatherError::Outside { addr: 0x1f000, len: 0x2000 })
        );
        assert_eq!(s.gather(&mem, [desc(0, 512)].into_iter(), 0, 1024).map(|_| ()), Err(GatherError::Short(512)));
        let many = (0..MAX_PIECES as u64 + 1).map(|i| desc(i * 16, 16));
        assert_eq!(s.gather(&mem, many, 0, (MAX_PIECES + 1) * 16).map(|_| ()), Err(GatherError::TooManyPieces));
    }
}
