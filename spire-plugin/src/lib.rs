//! The zone attestor's SPIRE plugins.
//!
//! Two binaries that an unmodified `spire-server` and `spire-agent` load as
//! external `NodeAttestor` plugins named `zone` (HashiCorp go-plugin over
//! gRPC): the server side verifies a zone's evidence with
//! `attestation-proto`'s verifier and returns the agent's SPIFFE ID and
//! selectors; the agent side runs inside a zone and fetches fresh evidence
//! through `zone-guest` and the host channel. The go-plugin shim, the
//! services and the binaries arrive with the SPIRE integration work; until
//! then the crate is empty on purpose.
