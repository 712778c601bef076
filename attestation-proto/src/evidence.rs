//! Evidence: the message a zone hands a verifier, and the commitment that
//! lets many requests share one TPM quote.
//!
//! Each request contributes one Merkle leaf binding its nonce to its zone's
//! launch record:
//!
//! ```text
//! binding = "zone-attestor evidence v1\0" ‖ len(nonce) as u8 ‖ nonce ‖ SHA-256(launch record)
//! leaf    = merkle::leaf_hash(binding)
//! ```
//!
//! and the quote's qualifying data (TPMS_ATTEST `extraData`) is the Merkle
//! root over the leaves of every request in the batch. A batch of one has
//! the leaf itself as its root. The evidence carries its inclusion proof, so
//! a verifier learns nothing about the other requests of its batch.

use prost::Message;
use sha2::{Digest, Sha256};

pub use crate::evidence_pb::{Checkpoint, Evidence, MerkleProof, PcrValue};

/// The layout version this crate writes and reads (2: structured zone-event
/// digests, checkpoints, the EK certificate).
pub const FORMAT_VERSION: u32 = 2;
/// Largest evidence accepted (bytes).
pub const MAX_EVIDENCE_LEN: usize = 8 * 1024 * 1024;
/// Shortest nonce accepted (bytes).
pub const MIN_NONCE_LEN: usize = 8;
/// Longest nonce accepted (bytes).
pub const MAX_NONCE_LEN: usize = 64;

const BINDING_LABEL: &[u8] = b"zone-attestor evidence v1\0";
const CHECKPOINT_LABEL: &[u8] = b"zone-attestor checkpoint v1\0";

/// The qualifying data of a checkpoint's quote: `SHA-256(label ‖ digest of
/// the checkpoint event)`, so a checkpoint quote can never pass for an
/// evidence quote (whose qualifying data is a batch root of nonce leaves), nor
/// the other way round.
pub fn checkpoint_qualifying_data(checkpoint_event_digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(CHECKPOINT_LABEL);
    h.update(checkpoint_event_digest);
    h.finalize().into()
}

/// A nonce of the wrong size.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the nonce is {0} bytes; it must be {MIN_NONCE_LEN} to {MAX_NONCE_LEN} bytes")]
pub struct NonceError(pub usize);

/// Checks a nonce's length.
pub fn check_nonce(nonce: &[u8]) -> Result<(), NonceError> {
    if (MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&nonce.len()) { Ok(()) } else { Err(NonceError(nonce.len())) }
}

/// The Merkle leaf of one request: `nonce` bound to `launch_record`.
pub fn leaf(nonce: &[u8], launch_record: &[u8]) -> Result<[u8; 32], NonceError> {
    check_nonce(nonce)?;
    let mut b = Vec::with_capacity(BINDING_LABEL.len() + 1 + nonce.len() + 32);
    b.extend_from_slice(BINDING_LABEL);
    b.push(u8::try_from(nonce.len()).unwrap_or(u8::MAX)); // ≤ 64, checked above
    b.extend_from_slice(nonce);
    b.extend_from_slice(&Sha256::digest(launch_record));
    Ok(crate::merkle::leaf_hash(&b))
}

/// The evidence's bytes.
pub fn encode(evidence: &Evidence) -> Vec<u8> {
    evidence.encode_to_vec()
}

/// Reads evidence bytes (size-checked; contents still unchecked).
pub fn decode(bytes: &[u8]) -> Result<Evidence, String> {
    if bytes.len() > MAX_EVIDENCE_LEN {
        return Err(format!("evidence is {} bytes, more than the {MAX_EVIDENCE_LEN} allowed", bytes.len()));
    }
    Evidence::decode(bytes).map_err(|e| format!("evidence is not a valid protobuf Evidence message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_bind_nonce_and_record() {
        let a = leaf(&[1; 16], b"r").unwrap();
        assert_ne!(a, leaf(&[2; 16], b"r").unwrap());
        assert_ne!(a, leaf(&[1; 16], b"s").unwrap());
        assert_ne!(a, leaf(&[1; 17], b"r").unwrap());
        assert_eq!(leaf(&[0; 7], b"r"), Err(NonceError(7)));
        assert_eq!(leaf(&[0; 65], b"r"), Err(NonceError(65)));
    }

    #[test]
    fn oversized_or_garbage_evidence_is_refused() {
        assert!(decode(&vec![0; MAX_EVIDENCE_LEN + 1]).unwrap_err().contains("more than"));
        assert!(decode(&[0xff, 0xff, 0xff]).is_err());
    }
}
