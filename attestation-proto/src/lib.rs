//! Every wire format of the zone attestor, and the pure evidence verifier.
//!
//! This crate is the one place where the product's byte layouts live, so the
//! host daemon that produces evidence and the SPIRE server plugin that checks
//! it agree byte for byte:
//!
//! - the gRPC control API and the host↔zone channel messages (`.proto` files);
//! - the TCG PC Client crypto-agile event-log codec;
//! - TPM structure parsing (`TPMS_ATTEST`, `TPMT_SIGNATURE`, `TPM2B_PUBLIC`);
//! - the verifier and its policy.
//!
//! It does no I/O, needs no TPM and no async runtime: the verifier runs
//! inside the SPIRE server plugin and under the fuzzer. The formats arrive
//! with the zone-runtime and measured-launch work; until then the crate is
//! empty on purpose.
#![warn(missing_docs)]
