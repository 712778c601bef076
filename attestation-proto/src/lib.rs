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
//!
//! It does no I/O and needs no TPM and no async runtime (the gRPC stubs sit
//! behind the `grpc` feature): the verifier that will live here runs inside
//! the SPIRE server plugin and under the fuzzer.
#![warn(missing_docs)]

pub mod channel;

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
