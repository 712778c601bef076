//! Guest RAM: anonymous memory aligned to 2 MiB and advised for transparent
//! huge pages.
//!
//! KVM maps a guest page with a 2 MiB page of the nested (NPT/EPT) tables
//! only when the host backs it with a huge page *and* the guest physical
//! address and the host virtual address agree modulo 2 MiB. A plain `mmap`
//! (what `GuestMemoryMmap::from_ranges` does) returns a 4 KiB-aligned address
//! on kernels before 6.7, so every 4 KiB the guest touches costs a nested page
//! fault: ~5,000 of them during a zone kernel's boot, where QEMU (which aligns
//! its RAM) takes ~330. Each is a VM exit, which under nested virtualization
//! is expensive. Here each region is mapped 2 MiB aligned and
//! `MADV_HUGEPAGE`d, so with THP enabled (`always` or `madvise`) the guest
//! runs on huge pages; with THP off it is plain 4 KiB memory, as before.
//!
//! The mappings live as long as the process: a VMM process (and `zonectl
//! run`) holds one VM for its whole life, and the `GuestMemoryMmap` handles
//! that devices keep are never left pointing at unmapped memory.

use vm_memory::mmap::{FromRangesError, GuestRegionMmap, MmapRegionBuilder};
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// The alignment that lets KVM use 2 MiB nested pages.
pub const HUGE_PAGE: usize = 2 << 20;

/// Why guest RAM could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The anonymous mapping failed (out of address space or memory).
    #[error("mmap of {bytes} bytes failed: {source}")]
    Mmap {
        /// Bytes asked for (with the alignment slack).
        bytes: usize,
        /// The error from the kernel.
        #[source]
        source: std::io::Error,
    },
    /// A size does not fit the address space.
    #[error("{0} bytes of guest memory do not fit this process's address space")]
    TooLarge(u64),
    /// vm-memory refused the regions (overlap or overflow).
    #[error("guest memory regions: {0}")]
    Regions(#[from] FromRangesError),
}

/// Maps `(guest address, length)` ranges as guest memory, each 2 MiB aligned
/// and advised for huge pages.
pub fn guest_memory(ranges: &[(u64, u64)]) -> Result<GuestMemoryMmap, MemoryError> {
    let mut regions = Vec::with_capacity(ranges.len());
    for &(start, len) in ranges {
        let size = usize::try_from(len).map_err(|_| MemoryError::TooLarge(len))?;
        let addr = aligned_anonymous(size)?;
        // SAFETY: `addr..addr + size` is a private anonymous read-write
        // mapping made above, never unmapped (see the module docs), so every
        // region and clone built on it stays valid; prot and flags are the
        // ones it was mapped with.
        let region = unsafe {
            MmapRegionBuilder::new(size)
                .with_raw_mmap_pointer(addr)
                .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
                .with_mmap_flags(FLAGS)
                .build()
        }
        .map_err(|e| MemoryError::Regions(FromRangesError::MmapRegion(e)))?;
        let region = GuestRegionMmap::new(region, GuestAddress(start))
            .ok_or(MemoryError::TooLarge(start.saturating_add(len)))?;
        regions.push(region);
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::Regions(FromRangesError::Collection(e)))
}

const FLAGS: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;

/// An anonymous mapping of `size` bytes whose start is 2 MiB aligned: maps
/// `size + 2 MiB`, unmaps the slack before and after, advises huge pages.
fn aligned_anonymous(size: usize) -> Result<*mut u8, MemoryError> {
    let total = size.checked_add(HUGE_PAGE).ok_or(MemoryError::TooLarge(size as u64))?;
    // SAFETY: a fresh anonymous mapping at an address the kernel picks; no
    // existing memory is affected.
    let raw = unsafe { libc::mmap(std::ptr::null_mut(), total, libc::PROT_READ | libc::PROT_WRITE, FLAGS, -1, 0) };
    if raw == libc::MAP_FAILED {
        return Err(MemoryError::Mmap { bytes: total, source: std::io::Error::last_os_error() });
    }
    let base = raw as usize;
    let start = base.next_multiple_of(HUGE_PAGE);
    let head = start - base;
    let tail = total - head - size;
    // SAFETY: both ranges lie inside the mapping just made, outside
    // `start..start + size`, and nothing refers to them; page aligned because
    // `base`, `start` and `size` (a whole number of MiB) are.
    unsafe {
        if head > 0 {
            libc::munmap(raw, head);
        }
        if tail > 0 {
            libc::munmap((start + size) as *mut libc::c_void, tail);
        }
    }
    // SAFETY: advice on a range of our own mapping; it changes no contents.
    // EINVAL (a kernel without THP) leaves ordinary pages, which is fine.
    if unsafe { libc::madvise(start as *mut libc::c_void, size, libc::MADV_HUGEPAGE) } != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "MADV_HUGEPAGE refused; guest RAM uses 4 KiB pages");
    }
    Ok(start as *mut u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    #[test]
    fn regions_are_2mib_aligned_at_their_guest_addresses() {
        let mem = guest_memory(&[(0, 6 << 20), (1 << 32, 4 << 20)]).unwrap();
        let regions: Vec<_> = mem.iter().collect();
        assert_eq!(regions.len(), 2);
        for r in regions {
            assert_eq!(r.as_ptr() as usize % HUGE_PAGE, 0);
        }
        mem.write_obj(0xdead_beef_u32, GuestAddress((1 << 32) + 100)).unwrap();
        assert_eq!(mem.read_obj::<u32>(GuestAddress((1 << 32) + 100)).unwrap(), 0xdead_beef);
        assert_eq!(mem.read_obj::<u64>(GuestAddress(5 << 20)).unwrap(), 0, "fresh guest memory reads as zero");
    }

    #[test]
    fn the_slack_is_unmapped_and_the_region_is_exactly_its_size() {
        let mem = guest_memory(&[(0, 8 << 20)]).unwrap();
        let start = mem.iter().next().unwrap().as_ptr() as usize;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps
            .lines()
            .find(|l| l.starts_with(&format!("{start:x}-")))
            .expect("a mapping starting at the region");
        let (lo, hi) = line.split_once(' ').unwrap().0.split_once('-').unwrap();
        let size = usize::from_str_radix(hi, 16).unwrap() - usize::from_str_radix(lo, 16).unwrap();
        assert_eq!(size, 8 << 20, "{line}");
    }
}
