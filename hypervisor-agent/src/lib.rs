//! Host side of the zone attestor.
//!
//! | module | concept |
//! |---|---|
//! | [`vstate`] | KVM: the VM, its memory layout, vCPUs and CPUID |
//! | [`boot`] | loading kernel, initramfs and command line; PVH boot information; MP table |
//! | [`devices`] | the zone's devices: console UART, i8042 reset, power port |
//! | [`vmm`] | one zone from configuration to outcome |
//! | [`image`] | reproducible zone initramfs images |
//! | [`cli`] | the `zonectl` command line |

pub mod boot;
pub mod cli;
pub mod devices;
pub mod image;
pub mod vmm;
pub mod vstate;
