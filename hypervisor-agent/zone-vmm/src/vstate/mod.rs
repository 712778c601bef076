//! KVM state of a zone: the `/dev/kvm` handle, the VM with its memory and
//! interrupt controllers, and the vCPUs.

pub mod cpuid;
pub mod kvm;
pub mod layout;
pub mod memory;
pub mod vcpu;
pub mod vm;
