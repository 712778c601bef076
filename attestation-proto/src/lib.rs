//! Every wire format of the zone attestor, and the pure evidence verifier.
//!
//! This crate is the one place where the product's byte layouts live, so the
//! host daemon that produces evidence and the SPIRE server plugin that checks
//! it agree byte for byte:
//!
//! | module | format |
//! |---|---|
//! | [`control`] | the gRPC control API of `hypervisor-agent` (`proto/zone/v1/*.proto`) |
//! | [`guest`] | the host channel between zone-guest and the daemon (`proto/zone/guest/v1/agent.proto`) |
//! | [`channel`] | the host channel's framing: length-prefixed, bounded messages |
//! | [`ek`] | the TPM's EK certificate: who made the TPM |
//! | [`tpm`] | TPM 2.0 structures (TPMS_ATTEST, TPMT_SIGNATURE, TPMT_PUBLIC), Names, PCR digests, tpm2-tools' PCR file |
//! | [`merkle`] | SHA-256 Merkle tree (RFC 6962 shape) batching many nonces under one quote |
//! | [`launch`] | the launch and stop records the host measures and logs |
//! | [`eventlog`] | the host's TCG PC Client crypto-agile event log |
//! | [`evidence`] | evidence (`proto/zone/evidence/v1/evidence.proto`) and its nonce binding |
//! | [`policy`] | the verifier's policy file: allowed kernel/initrd/cmdline digests |
//! | [`verify`] | **the verifier**: every check, in order, each rejection named |
//! | [`zone`] | the boot contract with zone-guest: the zone command on the kernel command line, console markers, power port |
//!
//! It does no I/O and needs no TPM and no async runtime (the gRPC stubs sit
//! behind the `grpc` feature): the verifier that will live here runs inside
//! the SPIRE server plugin and under the fuzzer.
#![warn(missing_docs)]

pub mod channel;
pub mod ek;
pub mod merkle;
pub mod tpm;
pub mod eventlog;
pub mod evidence;
pub mod launch;
pub mod policy;
pub mod verify;
pub mod zone;

/// Where `hypervisor-agent` serves its control API unless configured otherwise.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/zone-attestor/control.sock";

/// The control API (`zone.v1`).
#[allow(missing_docs, clippy::all)]
pub mod control {
    include!(concat!(env!("OUT_DIR"), "/zone.v1.rs"));
}

/// The host channel messages (`zone.guest.v1`).
#[allow(missing_docs, clippy::all)]
pub mod guest {
    include!(concat!(env!("OUT_DIR"), "/zone.guest.v1.rs"));
}

/// The SPIRE `zone` NodeAttestor's messages (`zone.spire.v1`).
#[allow(missing_docs, clippy::all)]
pub mod spire {
    include!(concat!(env!("OUT_DIR"), "/zone.spire.v1.rs"));
}

/// Evidence messages (`zone.evidence.v1`); use them through [`evidence`].
#[allow(missing_docs, clippy::all)]
pub mod evidence_pb {
    include!(concat!(env!("OUT_DIR"), "/zone.evidence.v1.rs"));
}
