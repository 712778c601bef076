//! The zone VMM: boots one zone's own Linux kernel under KVM and emulates
//! its few devices. It runs as one small process per zone, jailed, and is the
//! only process of the product that parses guest-controlled bytes (virtio
//! rings, vsock packets, UART bytes, the kernel ELF), so it links nothing but
//! rust-vmm crates and the product's wire formats: no async runtime, no RPC
//! stack, no TPM library.
//!
//! | module | concept |
//! |---|---|
//! | [`vstate`] | KVM: the VM, its memory layout, vCPUs and CPUID |
//! | [`boot`] | loading kernel, initramfs and command line; PVH boot information; MP table |
//! | [`devices`] | the zone's devices: console UART, i8042 reset, power port, virtio-mmio + vsock |
//! | [`artifact`] | boot artifacts: file bytes, or read-only mappings of sealed memfds |
//! | [`config`] | what a zone is made of, checked before anything is allocated |
//! | [`zone`] | one zone from configuration to outcome (what `zonectl run` drives) |
//! | [`outcome`] | how a zone ended |
//! | [`launch`] | the contract with the daemon: descriptors, launch configuration, the jail's layout |
//! | [`jail`] | the VMM's half of its jail: mounts and pivot_root, rlimits, privilege drop, seccomp per thread |
//! | [`process`] | the `zone-vmm` program |

pub mod artifact;
pub mod boot;
pub mod config;
pub mod devices;
pub mod jail;
pub mod launch;
pub mod outcome;
pub mod process;
pub mod vstate;
pub mod zone;

pub use artifact::Artifact;
pub use config::{ConfigError, KvmSource, VsockConfig, VsockHost, ZoneConfig};
pub use outcome::{ExitReason, Outcome};
pub use zone::{ConsoleInput, Stopper, VmmError, Zone};
