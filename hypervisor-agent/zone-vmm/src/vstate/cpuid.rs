//! The CPUID a zone's vCPUs see.
//!
//! Start from `KVM_GET_SUPPORTED_CPUID` (what this host's KVM can virtualise)
//! and change only what must differ per vCPU or what a zone must not use:
//!
//! | leaf | change | why |
//! |---|---|---|
//! | 0x1 EBX[31:24] | initial APIC ID = vCPU index | matches the MP table |
//! | 0x1 EBX[23:16] | logical processor count = vCPUs | topology |
//! | 0x1 ECX bit 31 | set (hypervisor present) | the guest uses paravirtual clocks and skips bare-metal quirks |
//! | 0x1 ECX bit 3 | clear (MONITOR/MWAIT) | an idle vCPU must HLT so KVM can deschedule it |
//! | 0x1 EDX bit 28 | HTT set when vCPUs > 1 | EBX[23:16] is only valid with it |
//! | 0x1 ECX bit 24 | TSC-deadline timer set when KVM has `KVM_CAP_TSC_DEADLINE_TIMER` | KVM emulates it but leaves the bit to the VMM; without it the kernel calibrates the LAPIC timer against the PIT, which costs ~1.5 s of boot in the test host and fails verification |
//! | 0x6 | zeroed | thermal and power management are the host's |
//! | 0xA | zeroed | no virtual PMU is offered to zones |
//! | 0xB, 0x1F | EDX = x2APIC ID = vCPU index | per-vCPU topology |
//!
//! Everything else (feature flags, KVM paravirtual leaves 0x4000_00xx) passes
//! through unchanged, so a zone gets the host's features that KVM supports.

use kvm_bindings::CpuId;

const HYPERVISOR_BIT: u32 = 1 << 31;
const MONITOR_BIT: u32 = 1 << 3;
const HTT_BIT: u32 = 1 << 28;
const TSC_DEADLINE_BIT: u32 = 1 << 24;

/// Adds what KVM supports but does not report in `KVM_GET_SUPPORTED_CPUID`
/// (the TSC-deadline timer, when `tsc_deadline` is true).
pub fn with_kvm_extras(mut supported: CpuId, tsc_deadline: bool) -> CpuId {
    if tsc_deadline {
        for e in supported.as_mut_slice() {
            if e.function == 0x1 {
                e.ecx |= TSC_DEADLINE_BIT;
            }
        }
    }
    supported
}

/// Applies the per-vCPU filtering to a copy of the supported CPUID.
pub fn for_vcpu(supported: &CpuId, index: u8, vcpus: u8) -> CpuId {
    let mut cpuid = supported.clone();
    for e in cpuid.as_mut_slice() {
        match e.function {
            0x1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(index) << 24) | (u32::from(vcpus) << 16);
                e.ecx = (e.ecx | HYPERVISOR_BIT) & !MONITOR_BIT;
                if vcpus > 1 {
                    e.edx |= HTT_BIT;
                } else {
                    e.edx &= !HTT_BIT;
                }
            }
            0x6 | 0xa => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            0xb | 0x1f => e.edx = u32::from(index),
            _ => {}
        }
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn entry(function: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 { function, ebx, ecx, edx, ..Default::default() }
    }

    #[test]
    fn tsc_deadline_is_added_only_when_kvm_has_it() {
        let s = CpuId::from_entries(&[entry(0x1, 0, 0, 0)]).unwrap();
        assert_eq!(with_kvm_extras(s.clone(), true).as_slice()[0].ecx & TSC_DEADLINE_BIT, TSC_DEADLINE_BIT);
        assert_eq!(with_kvm_extras(s, false).as_slice()[0].ecx & TSC_DEADLINE_BIT, 0);
    }

    #[test]
    fn per_vcpu_fields_are_set() {
        let supported = CpuId::from_entries(&[
            entry(0x1, 0xff00_0800, MONITOR_BIT, 0),
            entry(0x6, 1, 1, 1),
            entry(0xb, 0, 0, 7),
            entry(0x4000_0000, 0x4b4d_564b, 0, 0),
        ])
        .unwrap();
        let c = for_vcpu(&supported, 3, 4);
        let s = c.as_slice();
        assert_eq!(s[0].ebx, (3 << 24) | (4 << 16) | 0x0800);
        assert_eq!(s[0].ecx & MONITOR_BIT, 0);
        assert_ne!(s[0].ecx & HYPERVISOR_BIT, 0);
        assert_ne!(s[0].edx & HTT_BIT, 0);
        assert_eq!((s[1].ebx, s[1].ecx, s[1].edx), (0, 0, 0));
        assert_eq!(s[2].edx, 3);
        assert_eq!(s[3].ebx, 0x4b4d_564b, "paravirtual leaves pass through");
    }
}
