//! Loading a zone's kernel, initramfs and command line into guest memory and
//! writing the PVH boot information.
//!
//! The kernel is an ELF `vmlinux` carrying the `XEN_ELFNOTE_PHYS32_ENTRY` note
//! (Linux `CONFIG_PVH`). It is entered in 32-bit protected mode with `%ebx`
//! pointing at an `hvm_start_info` that lists the command line, the memory map
//! and the initramfs as the first module. Everything is loaded from byte
//! slices the caller already holds: what was read (and, later, measured) is
//! exactly what is loaded.

pub mod cmdline;
pub mod gdt;
pub mod mptable;

use std::io::Cursor;

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use linux_loader::loader::elf::{Elf, Error as ElfError, PvhBootCapability};
use linux_loader::loader::{self, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::vstate::layout::{
    self, BOOT_GDT_START, CMDLINE_MAX_SIZE, CMDLINE_START, EBDA_START, HIMEM_START, MEMMAP_START, MODLIST_START,
    PVH_INFO_START,
};

/// `hvm_start_info.magic` (xen/include/public/arch-x86/hvm/start_info.h).
const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
/// Memory map entry type for usable RAM (E820 type 1).
const E820_RAM: u32 = 1;
/// Page size used to align the initramfs.
const PAGE_SIZE: u64 = 4096;

/// Why a zone's boot artifacts could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file is not an ELF image at all.
    #[error(
        "the kernel is not an ELF vmlinux ({0}); pass the uncompressed vmlinux built by scripts/kernel/build.sh \
         (a compressed bzImage/vmlinuz cannot be booted directly)"
    )]
    NotElf(&'static str),
    /// The ELF image is damaged or cut short.
    #[error("the kernel ELF image is truncated or corrupt ({0}); rebuild it with scripts/kernel/build.sh")]
    CorruptElf(String),
    /// The ELF image has no PVH entry point.
    #[error(
        "the kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); build it with CONFIG_PVH=y \
         (kernel-config/ does)"
    )]
    NoPvhEntry,
    /// The kernel's segments do not fit in the zone's memory.
    #[error("the kernel does not fit in {memory_mib} MiB of guest memory; give the zone more memory (--memory)")]
    KernelTooLarge {
        /// Guest memory in MiB.
        memory_mib: u64,
    },
    /// The initramfs does not fit between the kernel and the top of low memory.
    #[error(
        "the initramfs ({initrd_mib} MiB) does not fit in {memory_mib} MiB of guest memory next to the kernel; \
         give the zone more memory (--memory) or use a smaller image"
    )]
    InitrdTooLarge {
        /// Initramfs size in MiB (rounded up).
        initrd_mib: u64,
        /// Guest memory in MiB.
        memory_mib: u64,
    },
    /// The command line is too long or contains bytes the kernel cannot take.
    #[error("invalid kernel command line: {0}")]
    Cmdline(String),
    /// The MP table could not be built.
    #[error("cannot build the MP table: {0}")]
    MpTable(String),
    /// Writing boot structures to guest memory failed.
    #[error("cannot write {what} to guest memory: {source}")]
    GuestMemory {
        /// What was being written.
        what: &'static str,
        /// The memory error.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// The PVH boot configurator rejected the boot information.
    #[error("cannot write the PVH boot information: {0}")]
    Pvh(String),
}

/// Where the boot CPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootEntry {
    /// Physical address of the PVH entry point (32-bit protected mode).
    pub entry: u64,
    /// Physical address of `hvm_start_info`, passed in `%ebx`.
    pub start_info: u64,
}

/// Loads `kernel`, `initrd` and `cmdline` into `mem` (a zone of `mem_size`
/// bytes with `vcpus` vCPUs) and writes the boot structures.
pub fn load(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    vcpus: u8,
    kernel: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
) -> Result<BootEntry, BootError> {
    let memory_mib = mem_size >> 20;
    if kernel.len() < 4 || &kernel[..4] != b"\x7fELF" {
        let what = if kernel.len() > 0x206 && &kernel[0x202..0x206] == b"HdrS" {
            "it is a bzImage"
        } else if kernel.is_empty() {
            "the file is empty"
        } else {
            "no ELF magic"
        };
        return Err(BootError::NotElf(what));
    }

    let loaded = Elf::load(mem, None, &mut Cursor::new(kernel), Some(GuestAddress(HIMEM_START))).map_err(|e| match e {
        loader::Error::Elf(ElfError::InvalidElfMagicNumber) => BootError::NotElf("bad ELF header"),
        loader::Error::Elf(ElfError::ReadKernelImage) | loader::Error::MemoryOverflow => {
            // Either the file ends before a segment does, or the segment lies past guest memory.
            let needs = elf_load_end(kernel);
            match needs {
                Some(end) if end > layout::low_ram_end(mem_size) => BootError::KernelTooLarge { memory_mib },
                _ => BootError::CorruptElf(e.to_string()),
            }
        }
        other => BootError::CorruptElf(other.to_string()),
    })?;
    let entry = match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => addr.0,
        _ => return Err(BootError::NoPvhEntry),
    };

    let mut cmd = Cmdline::new(CMDLINE_MAX_SIZE).map_err(|e| BootError::Cmdline(e.to_string()))?;
    cmd.insert_str(cmdline).map_err(|e| {
        BootError::Cmdline(format!("{e} (at most {} bytes of printable ASCII)", CMDLINE_MAX_SIZE - 1))
    })?;
    loader::load_cmdline(mem, GuestAddress(CMDLINE_START), &cmd).map_err(|e| BootError::Cmdline(e.to_string()))?;

    let mut modules = Vec::new();
    if let Some(initrd) = initrd {
        let size = initrd.len() as u64;
        let top = layout::low_ram_end(mem_size);
        let initrd_mib = size.div_ceil(1 << 20);
        let addr = top
            .checked_sub(size)
            .map(|a| a & !(PAGE_SIZE - 1))
            .filter(|a| *a >= loaded.kernel_end)
            .ok_or(BootError::InitrdTooLarge { initrd_mib, memory_mib })?;
        mem.write_slice(initrd, GuestAddress(addr))
            .map_err(|source| BootError::GuestMemory { what: "the initramfs", source })?;
        modules.push(hvm_modlist_entry { paddr: addr, size, cmdline_paddr: 0, reserved: 0 });
    }

    let memmap = memory_map(mem_size);
    let start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        flags: 0,
        nr_modules: u32::try_from(modules.len()).unwrap_or(0),
        modlist_paddr: if modules.is_empty() { 0 } else { MODLIST_START },
        cmdline_paddr: CMDLINE_START,
        rsdp_paddr: 0,
        memmap_paddr: MEMMAP_START,
        memmap_entries: u32::try_from(memmap.len()).unwrap_or(0),
        reserved: 0,
    };
    let mut params = BootParams::new(&start_info, GuestAddress(PVH_INFO_START));
    params.set_sections(&memmap, GuestAddress(MEMMAP_START));
    if !modules.is_empty() {
        params.set_modules(&modules, GuestAddress(MODLIST_START));
    }
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)
        .map_err(|e| BootError::Pvh(e.to_string()))?;

    for (i, desc) in gdt::BOOT_GDT.iter().enumerate() {
        mem.write_obj(*desc, GuestAddress(BOOT_GDT_START + 8 * i as u64))
            .map_err(|source| BootError::GuestMemory { what: "the GDT", source })?;
    }
    let mp = mptable::build(vcpus)?;
    mem.write_slice(&mp, GuestAddress(EBDA_START))
        .map_err(|source| BootError::GuestMemory { what: "the MP table", source })?;

    Ok(BootEntry { entry, start_info: PVH_INFO_START })
}

/// The memory map the zone kernel sees: RAM below the EBDA, RAM from 1 MiB to
/// the MMIO gap, and RAM above 4 GiB for large zones.
pub fn memory_map(mem_size: u64) -> Vec<hvm_memmap_table_entry> {
    let ram = |addr: u64, size: u64| hvm_memmap_table_entry { addr, size, type_: E820_RAM, reserved: 0 };
    let mut map = vec![ram(0, EBDA_START)];
    for (start, size) in layout::ram_ranges(mem_size) {
        let (start, end) = (start.max(HIMEM_START), start + size);
        if end > start {
            map.push(ram(start, end - start));
        }
    }
    map
}

/// The highest physical end address of the ELF's loadable segments, read from
/// its program headers without trusting them beyond bounds checks.
fn elf_load_end(kernel: &[u8]) -> Option<u64> {
    let u16_at = |o: usize| kernel.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| kernel.get(o..o + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    let mut end = 0u64;
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let p_type = kernel.get(ph..ph + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))?;
        if p_type == 1 {
            let paddr = u64_at(ph + 0x18)?;
            let memsz = u64_at(ph + 0x28)?;
            end = end.max(paddr.checked_add(memsz)?);
        }
    }
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::layout::ram_ranges;
    use vm_memory::GuestMemoryBackend;

    fn memory(mib: u64) -> GuestMemoryMmap {
        let ranges: Vec<_> = ram_ranges(mib << 20).into_iter().map(|(s, l)| (GuestAddress(s), l as usize)).collect();
        GuestMemoryMmap::from_ranges(&ranges).unwrap()
    }

    #[test]
    fn rejects_non_elf_inputs_with_a_reason() {
        let mem = memory(32);
        let err = load(&mem, 32 << 20, 1, b"", None, "").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let err = load(&mem, 32 << 20, 1, &bz, None, "").unwrap_err();
        assert!(err.to_string().contains("bzImage"), "{err}");
        let err = load(&mem, 32 << 20, 1, b"#!/bin/sh\n", None, "").unwrap_err();
        assert!(matches!(err, BootError::NotElf(_)));
    }

    #[test]
    fn truncated_elf_header_is_corrupt_not_a_panic() {
        let mem = memory(32);
        let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
        elf.resize(20, 0);
        let err = load(&mem, 32 << 20, 1, &elf, None, "").unwrap_err();
        assert!(matches!(err, BootError::CorruptElf(_)), "{err:?}");
    }

    #[test]
    fn memory_map_covers_ram_and_skips_the_gap() {
        let map = memory_map(64 << 20);
        assert_eq!(map.len(), 2);
        assert_eq!((map[0].addr, map[0].size), (0, EBDA_START));
        assert_eq!((map[1].addr, map[1].size), (HIMEM_START, (64 << 20) - HIMEM_START));
        let big = memory_map(4 << 30);
        assert_eq!(big.len(), 3);
        assert_eq!(big[2].addr, layout::MMIO_GAP_END);
        assert!(memory(64).last_addr().0 >= (64 << 20) - 1);
    }
}
