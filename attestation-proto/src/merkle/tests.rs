use super::*;

fn leaves(n: usize) -> Vec<[u8; 32]> {
    (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

/// An independent root: pair nodes level by level, carrying an odd last node
/// up unchanged (equivalent to the RFC 6962 split).
fn reference_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = level.chunks(2).map(|pair| if let [l, r] = pair { node_hash(l, r) } else { pair[0] }).collect();
    }
    level[0]
}

#[test]
fn hashes_are_domain_separated() {
    let mut leaf_input = vec![0u8];
    leaf_input.extend_from_slice(b"abc");
    assert_eq!(leaf_hash(b"abc"), <[u8; 32]>::from(Sha256::digest(&leaf_input)));
    let (l, r) = ([1u8; 32], [2u8; 32]);
    assert_eq!(node_hash(&l, &r), <[u8; 32]>::from(Sha256::digest([&[1u8][..], &l, &r].concat())));
    assert_ne!(node_hash(&l, &r), node_hash(&r, &l));
    // The empty-string leaf hash from RFC 6962's test data.
    assert_eq!(hex::encode(leaf_hash(b"")), "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
}

#[test]
fn shape_follows_rfc6962() {
    let l = leaves(5);
    assert_eq!(root(&l[..1]).unwrap(), l[0]);
    assert_eq!(root(&l[..3]).unwrap(), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
    let four = node_hash(&node_hash(&l[0], &l[1]), &node_hash(&l[2], &l[3]));
    assert_eq!(root(&l[..5]).unwrap(), node_hash(&four, &l[4]));
    assert_eq!(root(&[]), Err(MerkleError::EmptyTree));
}

#[test]
fn one_leaf_tree() {
    let l = leaves(1);
    let proof = inclusion_proof(&l, 0).unwrap();
    assert!(proof.is_empty());
    verify_inclusion(&l[0], 0, 1, &proof, &l[0]).unwrap();
}

#[test]
fn every_index_of_every_size_round_trips() {
    for n in 1..=33usize {
        let l = leaves(n);
        let r = root(&l).unwrap();
        assert_eq!(r, reference_root(&l), "size {n}");
        for i in 0..n {
            let proof = inclusion_proof(&l, i).unwrap();
            assert!(proof.len() <= 6);
            verify_inclusion(&l[i], i as u64, n as u64, &proof, &r).unwrap_or_else(|e| panic!("size {n} index {i}: {e}"));
        }
    }
}

#[test]
fn tampering_is_rejected() {
    for n in 1..=33usize {
        let l = leaves(n);
        let r = root(&l).unwrap();
        let size = n as u64;
        for i in 0..n {
            let index = i as u64;
            let proof = inclusion_proof(&l, i).unwrap();
            for k in 0..proof.len() {
                let mut bad = proof.clone();
                bad[k][31] ^= 1;
                assert_eq!(verify_inclusion(&l[i], index, size, &bad, &r), Err(MerkleError::RootMismatch));
            }
            let mut leaf = l[i];
            leaf[0] ^= 0x80;
            assert_eq!(verify_inclusion(&leaf, index, size, &proof, &r), Err(MerkleError::RootMismatch));
            let mut root = r;
            root[7] ^= 4;
            assert_eq!(verify_inclusion(&l[i], index, size, &proof, &root), Err(MerkleError::RootMismatch));
            for j in (0..n as u64).filter(|&j| j != index) {
                assert!(verify_inclusion(&l[i], j, size, &proof, &r).is_err(), "size {n}: index {i} accepted as {j}");
            }
            assert_eq!(verify_inclusion(&l[i], size, size, &proof, &r), Err(MerkleError::IndexOutOfRange { index: size, size }));
            let mut longer = proof.clone();
            longer.push([0; 32]);
            assert_eq!(verify_inclusion(&l[i], index, size, &longer, &r), Err(MerkleError::ProofTooLong { len: proof.len() + 1 }));
            if !proof.is_empty() {
                let shorter = &proof[..proof.len() - 1];
                assert_eq!(verify_inclusion(&l[i], index, size, shorter, &r), Err(MerkleError::ProofTooShort { len: shorter.len() }));
            }
        }
    }
}

#[test]
fn a_different_size_is_rejected_unless_the_path_shape_is_identical() {
    for n in 1..=33usize {
        let l = leaves(n);
        let r = root(&l).unwrap();
        for i in 0..n {
            let proof = inclusion_proof(&l, i).unwrap();
            for other in (1..=40usize).filter(|&m| m != n && i < m) {
                let accepted = verify_inclusion(&l[i], i as u64, other as u64, &proof, &r).is_ok();
                // Same shape: the proof for the same index in any `other`-leaf
                // tree takes the same left/right turns at the same depth.
                let same_shape = turns(i, n) == turns(i, other);
                assert_eq!(accepted, same_shape, "size {n} index {i} checked as size {other}");
            }
        }
    }
    // The documented case: leaf 0 of 3 leaves verifies as leaf 0 of 4.
    let l = leaves(3);
    verify_inclusion(&l[0], 0, 4, &inclusion_proof(&l, 0).unwrap(), &root(&l).unwrap()).unwrap();
}

/// Whether each proof element is hashed on the left, bottom-up.
fn turns(index: usize, size: usize) -> Vec<bool> {
    let mut out = Vec::new();
    let (mut lo, mut hi, mut i) = (0, size, index);
    while hi - lo > 1 {
        let k = split(hi - lo);
        if i < k {
            out.push(false);
            hi = lo + k;
        } else {
            out.push(true);
            i -= k;
            lo += k;
        }
    }
    out.reverse();
    out
}

#[test]
fn bad_arguments_have_distinct_errors() {
    let l = leaves(4);
    let r = root(&l).unwrap();
    let proof = inclusion_proof(&l, 1).unwrap();
    assert_eq!(verify_inclusion(&l[1], 0, 0, &proof, &r), Err(MerkleError::EmptyTree));
    assert_eq!(verify_inclusion(&l[1], 4, 4, &proof, &r), Err(MerkleError::IndexOutOfRange { index: 4, size: 4 }));
    assert_eq!(verify_inclusion(&l[1], 1, 4, &[[0; 32]; 65], &r), Err(MerkleError::ProofTooLong { len: 65 }));
    assert_eq!(verify_inclusion(&l[1], 1, u64::MAX, &[[0; 32]; 64], &r), Err(MerkleError::RootMismatch));
    assert_eq!(inclusion_proof(&l, 4), Err(MerkleError::IndexOutOfRange { index: 4, size: 4 }));
    assert_eq!(inclusion_proof(&[], 0), Err(MerkleError::EmptyTree));
}
