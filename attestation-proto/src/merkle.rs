//! A SHA-256 Merkle tree (RFC 6962 / RFC 9162 shape) for batching many
//! evidence requests under one TPM quote: the quote's nonce commits to the
//! root, and each requester gets its leaf index and an inclusion proof.
//!
//! Hashes are domain-separated: a leaf is `SHA-256(0x00 ‖ data)`, an inner
//! node `SHA-256(0x01 ‖ left ‖ right)`. A tree of n > 1 leaves splits into
//! the first k leaves and the other n − k, k the largest power of two below
//! n (RFC 6962 §2.1). The functions here take leaves that are already
//! [`leaf_hash`]ed.
//!
//! A proof is checked against a root *and a tree size*: a verifier must take
//! the size from the same trusted source as the root (for instance the
//! quote's nonce commits to both), since some proofs are valid for more than
//! one size (leaf 0 of 3 and of 4 leaves have the same shape).

use sha2::{Digest, Sha256};

/// Longest inclusion proof accepted: one hash per level of a 2⁶⁴-leaf tree.
pub const MAX_PROOF_LEN: usize = 64;

/// Why a Merkle operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// A tree needs at least one leaf.
    #[error("empty tree: a Merkle tree needs at least one leaf")]
    EmptyTree,
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} out of range for a tree of {size} leaves")]
    IndexOutOfRange {
        /// The index given.
        index: u64,
        /// The tree size given.
        size: u64,
    },
    /// The proof has more hashes than the tree has levels above the leaf.
    #[error("inclusion proof of {len} hashes is too long for this leaf and tree size")]
    ProofTooLong {
        /// Hashes in the proof.
        len: usize,
    },
    /// The proof ran out before reaching the root.
    #[error("inclusion proof of {len} hashes is too short for this leaf and tree size")]
    ProofTooShort {
        /// Hashes in the proof.
        len: usize,
    },
    /// The proof is well formed but leads to a different root.
    #[error("inclusion proof does not lead to the expected root")]
    RootMismatch,
}

/// The hash of a leaf's data: `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> [u8; 32] {
    Sha256::new().chain_update([0x00]).chain_update(data).finalize().into()
}

/// The hash of an inner node: `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    Sha256::new().chain_update([0x01]).chain_update(left).chain_update(right).finalize().into()
}

/// The root over leaf hashes `leaves`; a one-leaf tree's root is its leaf.
pub fn root(leaves: &[[u8; 32]]) -> Result<[u8; 32], MerkleError> {
    subtree_root(leaves).ok_or(MerkleError::EmptyTree)
}

/// The inclusion proof (audit path) of leaf `index`, from the leaf's sibling
/// up to the root's child (RFC 6962 §2.1.1). Empty for a one-leaf tree.
pub fn inclusion_proof(leaves: &[[u8; 32]], index: usize) -> Result<Vec<[u8; 32]>, MerkleError> {
    if leaves.is_empty() {
        return Err(MerkleError::EmptyTree);
    }
    if index >= leaves.len() {
        return Err(MerkleError::IndexOutOfRange { index: as_u64(index), size: as_u64(leaves.len()) });
    }
    let mut proof = Vec::new();
    let (mut lo, mut hi, mut index) = (0, leaves.len(), index);
    // Walk down from the root, recording the sibling subtree at each split;
    // the proof lists them bottom-up, so reverse at the end.
    while hi - lo > 1 {
        let k = split(hi - lo);
        let (sibling, rest) = if index < k { ((lo + k, hi), (lo, lo + k)) } else { ((lo, lo + k), (lo + k, hi)) };
        if index >= k {
            index -= k;
        }
        if let Some(hash) = leaves.get(sibling.0..sibling.1).and_then(subtree_root) {
            proof.push(hash);
        }
        (lo, hi) = rest;
    }
    proof.reverse();
    Ok(proof)
}

/// Checks that `leaf` (a leaf hash) is leaf `index` of the `tree_size`-leaf
/// tree with root `root`, following RFC 9162 §2.1.3.2.
pub fn verify_inclusion(leaf: &[u8; 32], index: u64, tree_size: u64, proof: &[[u8; 32]], root: &[u8; 32]) -> Result<(), MerkleError> {
    if tree_size == 0 {
        return Err(MerkleError::EmptyTree);
    }
    if index >= tree_size {
        return Err(MerkleError::IndexOutOfRange { index, size: tree_size });
    }
    if proof.len() > MAX_PROOF_LEN {
        return Err(MerkleError::ProofTooLong { len: proof.len() });
    }
    let (mut f, mut s) = (index, tree_size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(MerkleError::ProofTooLong { len: proof.len() });
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            // Skip the levels where this node has no right sibling.
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(MerkleError::ProofTooShort { len: proof.len() });
    }
    if r != *root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// Root of a non-empty subtree; `None` for an empty slice.
fn subtree_root(leaves: &[[u8; 32]]) -> Option<[u8; 32]> {
    match leaves {
        [] => None,
        [leaf] => Some(*leaf),
        _ => {
            let (left, right) = leaves.split_at(split(leaves.len()));
            Some(node_hash(&subtree_root(left)?, &subtree_root(right)?))
        }
    }
}

/// The largest power of two strictly below `n` (for n ≥ 2).
fn split(n: usize) -> usize {
    let bits = usize::BITS - n.saturating_sub(1).leading_zeros();
    1usize << bits.saturating_sub(1)
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
