//! Qualified Names: what a quote's `qualifiedSigner` holds (TPM.md §5.2).
//!
//! A key's Qualified Name binds its Name to its whole ancestry:
//! QN(primary) = H(hierarchy handle ‖ Name), QN(child) = H(QN(parent) ‖ Name),
//! each prefixed with the hash algorithm (SHA-256 here). Comparing a quote's
//! `qualifiedSigner` with the AK's plain Name fails; compare with this.

use sha2::{Digest, Sha256};

use super::attest::ALG_SHA256;

/// TPM_RH_ENDORSEMENT, the endorsement hierarchy (parent of the EK).
pub const TPM_RH_ENDORSEMENT: u32 = 0x4000_000b;

/// `00 0b` ‖ SHA-256(`parts` concatenated): a 34-byte SHA-256 TPM name.
fn sha256_name(parts: &[&[u8]]) -> Vec<u8> {
    let mut h = Sha256::new();
    for part in parts {
        h.update(part);
    }
    let mut out = Vec::with_capacity(34);
    out.extend_from_slice(&ALG_SHA256.to_be_bytes());
    out.extend_from_slice(&h.finalize());
    out
}

/// Qualified Name of a primary key (such as the EK) with Name `name` in the
/// hierarchy `hierarchy_handle` (such as [`TPM_RH_ENDORSEMENT`]).
pub fn qualified_name_of_primary(hierarchy_handle: u32, name: &[u8]) -> Vec<u8> {
    sha256_name(&[&hierarchy_handle.to_be_bytes(), name])
}

/// Qualified Name of a key with Name `child_name` whose parent has the
/// Qualified Name `parent_qn`.
pub fn qualified_name_of_child(parent_qn: &[u8], child_name: &[u8]) -> Vec<u8> {
    sha256_name(&[parent_qn, child_name])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_hashes_with_the_algorithm_prefix() {
        let ek = [0xaa; 34];
        let qn_ek = qualified_name_of_primary(TPM_RH_ENDORSEMENT, &ek);
        let mut expected = vec![0, 0x0b];
        expected.extend_from_slice(&Sha256::digest([&[0x40, 0, 0, 0x0b][..], &ek[..]].concat()));
        assert_eq!(qn_ek, expected);
        let qn_ak = qualified_name_of_child(&qn_ek, &[0xbb; 34]);
        assert_eq!(qn_ak.len(), 34);
        assert_eq!(&qn_ak[2..], &Sha256::digest([&qn_ek[..], &[0xbb; 34][..]].concat())[..]);
    }
}
