//! Host side of the zone attestor.
//!
//! | module | concept |
//! |---|---|
//! | [`vstate`] | KVM: the VM, its memory layout, vCPUs and CPUID |
//! | [`boot`] | loading kernel, initramfs and command line; PVH boot information; MP table |
//! | [`devices`] | the zone's devices: console UART, i8042 reset, power port, virtio-mmio + vsock |
//! | [`vmm`] | one zone from configuration to outcome |
//! | [`image`] | reproducible zone initramfs images |
//! | [`daemon`] | the host daemon: zone records, VMM supervision, host channels |
//! | [`api`] | the gRPC control API on a Unix socket |
//! | [`agent`] | the `hypervisor-agent` program (daemon, or one zone's VMM process) |
//! | [`cli`] | the `zonectl` command line |

pub mod agent;
pub mod api;
pub mod boot;
pub mod cli;
pub mod daemon;
pub mod devices;
pub mod image;
pub mod vmm;
pub mod vstate;
