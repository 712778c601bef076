//! The flat GDT a PVH kernel is entered with, and the matching segment
//! registers for `KVM_SET_SREGS`.
//!
//! PVH (xenbits `docs/misc/pvh.html`) enters the kernel in 32-bit protected mode,
//! paging off, with flat 4 GiB code and data segments. The kernel loads its own
//! GDT almost immediately, but the descriptors are written to guest memory too,
//! so that the hidden segment state KVM is given matches what is in memory.

use kvm_bindings::kvm_segment;

/// Descriptor flags: granularity 4K, 32-bit, present, ring 0, code execute/read (accessed).
const CODE32_FLAGS: u16 = 0xc09b;
/// Descriptor flags: granularity 4K, 32-bit, present, ring 0, data read/write (accessed).
const DATA_FLAGS: u16 = 0xc093;
/// Descriptor flags: present, 32-bit busy TSS.
const TSS_FLAGS: u16 = 0x808b;

/// The boot GDT: null, code, data, TSS.
pub const BOOT_GDT: [u64; 4] = [
    0,
    entry(CODE32_FLAGS, 0, 0xfffff),
    entry(DATA_FLAGS, 0, 0xfffff),
    entry(TSS_FLAGS, 0, 0xfffff),
];
/// Index of the code descriptor.
pub const CODE_INDEX: u8 = 1;
/// Index of the data descriptor.
pub const DATA_INDEX: u8 = 2;
/// Index of the TSS descriptor.
pub const TSS_INDEX: u8 = 3;

/// Encodes a segment descriptor (Intel SDM vol. 3, 3.4.5).
pub const fn entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = base as u64;
    let limit = limit as u64;
    let flags = flags as u64;
    ((base & 0xff00_0000) << (56 - 24))
        | ((flags & 0x0000_f0ff) << 40)
        | ((limit & 0x000f_0000) << (48 - 16))
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// The hidden segment state KVM needs for descriptor `index` of [`BOOT_GDT`].
pub fn segment(index: u8) -> kvm_segment {
    let e = BOOT_GDT[usize::from(index)];
    let bit = |n: u32| ((e >> n) & 1) as u8;
    let g = bit(55);
    let raw_limit = ((e & 0x000f_0000_0000_0000) >> 32) | (e & 0xffff);
    let limit = if g == 1 { (raw_limit << 12) | 0xfff } else { raw_limit };
    let present = bit(47);
    kvm_segment {
        base: ((e >> 16) & 0x00ff_ffff) | ((e >> 32) & 0xff00_0000),
        // A 20-bit limit scaled by 4 KiB is at most 0xffff_ffff.
        limit: u32::try_from(limit).unwrap_or(u32::MAX),
        selector: u16::from(index) * 8,
        type_: ((e >> 40) & 0xf) as u8,
        present,
        dpl: ((e >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g,
        avl: bit(52),
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_segment_is_flat_32bit_ring0() {
        let cs = segment(CODE_INDEX);
        assert_eq!(cs.base, 0);
        assert_eq!(cs.limit, 0xffff_ffff);
        assert_eq!(cs.selector, 8);
        assert_eq!(cs.type_, 0xb);
        assert_eq!((cs.present, cs.dpl, cs.db, cs.s, cs.l, cs.g), (1, 0, 1, 1, 0, 1));
    }

    #[test]
    fn data_and_tss_segments() {
        let ds = segment(DATA_INDEX);
        assert_eq!((ds.type_, ds.s, ds.selector), (0x3, 1, 16));
        let tr = segment(TSS_INDEX);
        assert_eq!((tr.type_, tr.s, tr.selector, tr.g), (0xb, 0, 24, 1));
    }

    #[test]
    fn encoding_matches_the_reference_values() {
        // Values every PVH-capable VMM uses for the same descriptors.
        assert_eq!(BOOT_GDT[1], 0x00cf_9b00_0000_ffff);
        assert_eq!(BOOT_GDT[2], 0x00cf_9300_0000_ffff);
        assert_eq!(BOOT_GDT[3], 0x008f_8b00_0000_ffff);
    }
}
