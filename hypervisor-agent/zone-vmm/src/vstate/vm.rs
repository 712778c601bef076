//! A KVM virtual machine: its guest memory and in-kernel interrupt
//! controllers (PIC, IOAPIC, LAPICs) and PIT.

use kvm_bindings::{KVM_PIT_SPEAKER_DUMMY, kvm_pit_config, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::layout::{self, KVM_TSS_ADDR};

/// Why a VM could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The kernel refused to create the VM.
    #[error("cannot create a KVM VM: {0}")]
    Create(#[source] kvm_ioctls::Error),
    /// Guest memory could not be allocated.
    #[error("cannot allocate {mib} MiB of guest memory: {source}; lower --memory or free host memory")]
    Memory {
        /// Requested size.
        mib: u64,
        /// The mapping error.
        #[source]
        source: super::memory::MemoryError,
    },
    /// A KVM VM ioctl failed.
    #[error("KVM {op} failed: {source}")]
    Ioctl {
        /// The operation.
        op: &'static str,
        /// The error from the kernel.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// The VM file descriptor and its guest memory.
#[derive(Debug)]
pub struct Vm {
    /// The KVM VM.
    pub fd: VmFd,
    /// Guest memory, mapped into the VMM and registered with KVM.
    pub memory: GuestMemoryMmap,
    /// Guest memory size in bytes.
    pub mem_size: u64,
}

impl Vm {
    /// Creates a VM with `mem_size` bytes of anonymous guest memory (2 MiB
    /// aligned, for huge pages: [`super::memory`]), an in-kernel irqchip and
    /// a PIT.
    pub fn new(kvm: &Kvm, mem_size: u64) -> Result<Self, VmError> {
        let fd = kvm.create_vm().map_err(VmError::Create)?;
        let memory = super::memory::guest_memory(&layout::ram_ranges(mem_size))
            .map_err(|source| VmError::Memory { mib: mem_size >> 20, source })?;

        for (slot, region) in memory.iter().enumerate() {
            let mr = kvm_userspace_memory_region {
                slot: u32::try_from(slot).unwrap_or(u32::MAX),
                flags: 0,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the region is a live mapping owned by `memory`, which this
            // struct keeps alive for as long as the VM fd exists (fields drop in
            // declaration order: `fd` first, then `memory`), and the guest
            // physical ranges of distinct regions do not overlap.
            unsafe { fd.set_user_memory_region(mr) }
                .map_err(|source| VmError::Ioctl { op: "SET_USER_MEMORY_REGION", source })?;
        }

        fd.set_tss_address(KVM_TSS_ADDR).map_err(|source| VmError::Ioctl { op: "SET_TSS_ADDR", source })?;
        fd.create_irq_chip().map_err(|source| VmError::Ioctl { op: "CREATE_IRQCHIP", source })?;
        let pit = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
        fd.create_pit2(pit).map_err(|source| VmError::Ioctl { op: "CREATE_PIT2", source })?;
        Ok(Self { fd, memory, mem_size })
    }
}
