//! Guest physical memory map of a zone (x86_64).
//!
//! ```text
//! 0x0000_0500  GDT used for the PVH entry (4 descriptors)
//! 0x0000_6000  hvm_start_info (PVH boot information)
//! 0x0000_6040  hvm_modlist_entry[1] (the initramfs)
//! 0x0000_7000  hvm_memmap_table_entry[] (the e820-style memory map)
//! 0x0002_0000  kernel command line (at most CMDLINE_MAX_SIZE bytes)
//! 0x0009_fc00  EBDA: MP floating pointer + MP configuration table
//! 0x000a_0000  legacy VGA/BIOS hole (reported reserved, not RAM)
//! 0x0010_0000  high memory: kernel (loaded at its ELF physical addresses)
//! ...          initramfs, placed page-aligned at the top of low RAM
//! 0xc000_0000  32-bit MMIO gap (virtio-mmio devices, LAPIC, IOAPIC)
//! 0xd000_0000  virtio-mmio windows, 4 KiB each (IRQ 5, 6, ...)
//! 0x1_0000_0000 RAM continues here when the zone has more than 3 GiB
//! ```
//!
//! The same constants serve the loader, the boot-information writer and the
//! devices, so a single file says where everything is.

/// GDT used by the PVH entry.
pub const BOOT_GDT_START: u64 = 0x500;
/// `hvm_start_info` structure.
pub const PVH_INFO_START: u64 = 0x6000;
/// Module list (one entry: the initramfs).
pub const MODLIST_START: u64 = 0x6040;
/// Memory map entries.
pub const MEMMAP_START: u64 = 0x7000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest kernel command line, NUL included (x86 `COMMAND_LINE_SIZE`).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Extended BIOS data area: where the MP table lives.
pub const EBDA_START: u64 = 0x9fc00;
/// Start of high memory; kernels are loaded at or above it.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO gap.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO gap (4 GiB).
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// First virtio-mmio window; device `i` is at `VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SIZE`.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Size of one virtio-mmio window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// IOAPIC pin (GSI) of the first virtio-mmio device; device `i` uses the next
/// ones (COM1 has 4; the MP table routes ISA IRQ n to pin n, edge-triggered).
pub const VIRTIO_MMIO_FIRST_IRQ: u32 = 5;
/// How many virtio-mmio devices fit: IRQs 5..=23 (the IOAPIC has 24 pins).
pub const VIRTIO_MMIO_MAX_DEVICES: u32 = 24 - VIRTIO_MMIO_FIRST_IRQ;

/// The window base and IRQ of virtio-mmio device `index`.
pub fn virtio_mmio_slot(index: u32) -> Option<(u64, u32)> {
    (index < VIRTIO_MMIO_MAX_DEVICES)
        .then(|| (VIRTIO_MMIO_BASE + u64::from(index) * VIRTIO_MMIO_SIZE, VIRTIO_MMIO_FIRST_IRQ + index))
}

/// IOAPIC base address (fixed by the x86 platform).
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// Local APIC base address (fixed by the x86 platform).
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// Address KVM needs for the TSS of real-mode emulation (3 pages, in the gap).
pub const KVM_TSS_ADDR: usize = 0xfffb_d000;

/// Smallest zone memory: the kernel, its initramfs and early allocations must fit.
pub const MIN_MEMORY_MIB: u64 = 16;
/// Largest zone memory accepted (the gap is skipped above 3 GiB).
pub const MAX_MEMORY_MIB: u64 = 256 * 1024;

/// The RAM ranges `(start, size)` of a zone with `mem_size` bytes of memory:
/// one range below the MMIO gap and, if needed, one above 4 GiB.
pub fn ram_ranges(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_GAP_START {
        vec![(0, mem_size)]
    } else {
        vec![(0, MMIO_GAP_START), (MMIO_GAP_END, mem_size - MMIO_GAP_START)]
    }
}

/// Highest address + 1 of RAM below the MMIO gap.
pub fn low_ram_end(mem_size: u64) -> u64 {
    mem_size.min(MMIO_GAP_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_zone_is_one_range() {
        assert_eq!(ram_ranges(64 << 20), vec![(0, 64 << 20)]);
        assert_eq!(low_ram_end(64 << 20), 64 << 20);
    }

    #[test]
    fn large_zone_skips_the_mmio_gap() {
        let four = 4u64 << 30;
        assert_eq!(ram_ranges(four), vec![(0, MMIO_GAP_START), (MMIO_GAP_END, four - MMIO_GAP_START)]);
        assert_eq!(low_ram_end(four), MMIO_GAP_START);
    }

    #[test]
    fn fixed_regions_do_not_overlap() {
        assert!(BOOT_GDT_START + 32 <= PVH_INFO_START);
        assert!(PVH_INFO_START + 56 <= MODLIST_START);
        assert!(MODLIST_START + 32 <= MEMMAP_START);
        assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
        assert!(EBDA_START < 0xa0000);
    }

    #[test]
    fn virtio_mmio_windows_are_in_the_gap_below_the_ioapic() {
        assert_eq!(virtio_mmio_slot(0), Some((0xd000_0000, 5)));
        assert_eq!(virtio_mmio_slot(1), Some((0xd000_1000, 6)));
        let (last, irq) = virtio_mmio_slot(VIRTIO_MMIO_MAX_DEVICES - 1).unwrap();
        assert_eq!(irq, 23);
        assert!(last >= MMIO_GAP_START && last + VIRTIO_MMIO_SIZE <= u64::from(IOAPIC_ADDR));
        assert_eq!(virtio_mmio_slot(VIRTIO_MMIO_MAX_DEVICES), None);
    }
}
