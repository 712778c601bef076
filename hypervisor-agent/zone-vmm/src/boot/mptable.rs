//! Intel MultiProcessor Specification 1.4 tables.
//!
//! The zone kernel is built without ACPI, so the MP table is how it learns how
//! many vCPUs there are, where the IOAPIC is and how legacy IRQs are routed. The
//! layout follows the MP specification, chapter 4: a floating pointer
//! structure (16 bytes) followed by the configuration table header (44 bytes)
//! and its entries (processors, one ISA bus, the IOAPIC, one I/O interrupt
//! assignment per IOAPIC pin, and the two local interrupts LINT0/LINT1).

use super::BootError;
use crate::vstate::layout::{EBDA_START, IOAPIC_ADDR, LAPIC_ADDR};

/// IOAPIC pins routed in the table (the KVM IOAPIC has 24).
const IOAPIC_PINS: u8 = 24;
/// Local APIC version reported for every processor.
const APIC_VERSION: u8 = 0x14;
/// Largest vCPU count: the whole table must fit the 1 KiB EBDA below the VGA
/// hole, which holds 32 processor entries (Firecracker's limit as well).
pub const MAX_VCPUS: u8 = 32;

/// Builds the floating pointer + configuration table for `vcpus` processors.
/// The result is written at [`EBDA_START`].
pub fn build(vcpus: u8) -> Result<Vec<u8>, BootError> {
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(BootError::MpTable(format!("{vcpus} vCPUs do not fit an MP table (1..={MAX_VCPUS})")));
    }
    let ioapic_id = vcpus;
    let table_addr = u32::try_from(EBDA_START + 16).map_err(|_| BootError::MpTable("EBDA above 4 GiB".into()))?;

    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for id in 0..vcpus {
        // Processor entry (type 0), 20 bytes.
        entries.push(0);
        entries.push(id);
        entries.push(APIC_VERSION);
        entries.push(0x01 | if id == 0 { 0x02 } else { 0 }); // enabled | bootstrap processor
        entries.extend_from_slice(&0x0600u32.to_le_bytes()); // signature: family 6
        entries.extend_from_slice(&0x0201u32.to_le_bytes()); // feature flags: FPU | APIC
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    // Bus entry (type 1): bus 0 is ISA.
    entries.extend_from_slice(&[1, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    // IOAPIC entry (type 2).
    entries.extend_from_slice(&[2, ioapic_id, APIC_VERSION, 0x01]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    // I/O interrupt assignments (type 3): ISA IRQ n -> IOAPIC pin n, conforming polarity/trigger.
    for irq in 0..IOAPIC_PINS {
        entries.extend_from_slice(&[3, 0, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    // Local interrupt assignments (type 4): LINT0 = ExtINT on the BSP, LINT1 = NMI on all.
    entries.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0, 0]);
    entries.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_len = u16::try_from(44 + entries.len())
        .map_err(|_| BootError::MpTable("MP configuration table larger than 64 KiB".into()))?;
    let mut table = Vec::with_capacity(usize::from(table_len));
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&table_len.to_le_bytes());
    table.push(4); // specification revision 1.4
    table.push(0); // checksum, filled below
    table.extend_from_slice(b"ZONEATST"); // OEM id, 8 bytes
    table.extend_from_slice(b"ZONE-VMM    "); // product id, 12 bytes
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    table.extend_from_slice(&0u32.to_le_bytes()); // extended table length + checksum + reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut floating = Vec::with_capacity(16);
    floating.extend_from_slice(b"_MP_");
    floating.extend_from_slice(&table_addr.to_le_bytes());
    floating.push(1); // length in 16-byte units
    floating.push(4); // specification revision 1.4
    floating.push(0); // checksum, filled below
    floating.extend_from_slice(&[0; 5]); // feature bytes: configuration table present
    floating[10] = checksum(&floating);

    floating.extend_from_slice(&table);
    Ok(floating)
}

/// The byte that makes the sum of `bytes` zero (mod 256); the checksum byte
/// itself must be zero when this is computed.
fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_sub(*b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    #[test]
    fn checksums_and_counts_are_consistent() {
        for vcpus in [1u8, 2, 8, MAX_VCPUS] {
            let t = build(vcpus).unwrap();
            assert_eq!(&t[0..4], b"_MP_");
            assert_eq!(sum(&t[0..16]), 0, "floating pointer checksum");
            let table = &t[16..];
            assert_eq!(&table[0..4], b"PCMP");
            let len = usize::from(u16::from_le_bytes([table[4], table[5]]));
            assert_eq!(len, table.len());
            assert_eq!(sum(table), 0, "configuration table checksum");
            let count = u16::from_le_bytes([table[34], table[35]]);
            assert_eq!(count, u16::from(vcpus) + 2 + u16::from(IOAPIC_PINS) + 2);
            // The table must stay below the VGA hole.
            assert!(EBDA_START + t.len() as u64 <= 0xa0000, "{vcpus} vCPUs overflow the EBDA");
        }
    }

    #[test]
    fn first_cpu_is_the_bootstrap_processor() {
        let t = build(4).unwrap();
        let first = &t[16 + 44..];
        assert_eq!(first[3], 0x03);
        assert_eq!(first[20 + 3], 0x01);
    }

    #[test]
    fn rejects_impossible_counts() {
        assert!(build(0).is_err());
        assert!(build(MAX_VCPUS + 1).is_err());
    }
}
