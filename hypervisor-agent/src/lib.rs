//! Host side of the zone attestor.
//!
//! | module | concept |
//! |---|---|
//! | [`vstate`] | KVM: the VM, its memory layout, vCPUs and CPUID |
//! | [`boot`] | loading kernel, initramfs and command line; PVH boot information; MP table |
//! | [`devices`] | the zone's devices: console UART, i8042 reset, power port, virtio-mmio + vsock |
//! | [`vmm`] | one zone from configuration to outcome |
//! | [`image`] | reproducible zone initramfs images |
//! | [`measure`] | measurement before boot: artifacts into sealed memfds, digests, the loaded cmdline |
//! | [`tpm`] | the host TPM (tss-esapi): AK, PCR extend/read, quotes; the embedded swtpm |
//! | [`eventlog`] | the host's event log on disk (durable appends, torn-tail recovery) |
//! | [`ledger`] | the thread that keeps the log and the zone PCR in step and quotes |
//! | [`evidence`] | evidence issuance: one quote per batch, Merkle proofs, redacted logs |
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
pub mod eventlog;
pub mod evidence;
pub mod image;
pub mod ledger;
pub mod measure;
pub mod tpm;
pub mod vmm;
pub mod vstate;
