use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use sha2::{Digest, Sha256};

use super::*;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[0x42; 32].into()).unwrap()
}

/// An AK-like TPMT_PUBLIC: restricted ECDSA-SHA256 signing key on P-256.
fn ecc_public(key: &SigningKey) -> Vec<u8> {
    let point = key.verifying_key().to_encoded_point(false);
    let mut b = vec![0x00, 0x23, 0x00, 0x0b, 0x00, 0x05, 0x00, 0x72, 0x00, 0x00];
    b.extend_from_slice(&[0x00, 0x10, 0x00, 0x18, 0x00, 0x0b, 0x00, 0x03, 0x00, 0x10]);
    for c in [point.x().unwrap(), point.y().unwrap()] {
        b.extend_from_slice(&[0, 32]);
        b.extend_from_slice(c);
    }
    b
}

/// An EK-like TPMT_PUBLIC: RSA 2048 storage key with AES-128-CFB.
fn rsa_public() -> Vec<u8> {
    let mut b = vec![0x00, 0x01, 0x00, 0x0b, 0x00, 0x03, 0x00, 0xb2, 0x00, 0x20];
    b.extend_from_slice(&[0x83; 32]);
    b.extend_from_slice(&[0x00, 0x06, 0x00, 0x80, 0x00, 0x43, 0x00, 0x10, 0x08, 0x00, 0, 0, 0, 0, 0x01, 0x00]);
    b.extend_from_slice(&[0xc5; 256]);
    b
}

fn split(sig: &p256::ecdsa::Signature) -> Signature {
    let bytes = sig.to_bytes();
    let mut out = Signature { r: [0; 32], s: [0; 32] };
    out.r.copy_from_slice(&bytes[..32]);
    out.s.copy_from_slice(&bytes[32..]);
    out
}

#[test]
fn ecc_key_parses_and_names() {
    let raw = ecc_public(&key());
    let public = PublicArea::parse(&raw).unwrap();
    assert_eq!(public.raw(), &raw[..]);
    assert!(public.is_restricted_signing_key());
    let name = public.name();
    assert_eq!(name.len(), 34);
    assert_eq!(&name[..2], &[0, 0x0b]);
    assert_eq!(&name[2..], &Sha256::digest(&raw)[..]);
    let KeyParams::Ecc(ecc) = &public.params else { panic!("not ECC") };
    assert_eq!((ecc.scheme, ecc.scheme_hash, ecc.curve_id, ecc.kdf, ecc.kdf_hash), (0x0018, Some(0x000b), 3, ALG_NULL, None));
    assert_eq!(&public.ecc_p256_verifying_key().unwrap(), key().verifying_key());
    assert!(public.to_spki_pem().unwrap().starts_with("-----BEGIN PUBLIC KEY-----\n"));

    let mut prefixed = u16::try_from(raw.len()).unwrap().to_be_bytes().to_vec();
    prefixed.extend_from_slice(&raw);
    assert_eq!(PublicArea::parse_tpm2b(&prefixed).unwrap(), public);
    prefixed.push(0);
    assert_eq!(PublicArea::parse_tpm2b(&prefixed), Err(TpmError::SizeMismatch { declared: raw.len(), actual: raw.len() + 1 }));
}

#[test]
fn verify_accepts_low_and_high_s_and_rejects_tampering() {
    let key = key();
    let public = PublicArea::parse(&ecc_public(&key)).unwrap();
    let message = b"a TPMS_ATTEST";
    let sig: p256::ecdsa::Signature = key.sign_prehash(&Sha256::digest(message)).unwrap();
    let low = sig.normalize_s().unwrap_or(sig);
    let neg_s = -*low.s();
    let high = p256::ecdsa::Signature::from_scalars(low.r().to_bytes(), neg_s.to_bytes()).unwrap();
    assert!(high.normalize_s().is_some(), "constructed signature is high-S");
    public.verify(message, &split(&low)).unwrap();
    public.verify(message, &split(&high)).unwrap();
    assert_eq!(public.verify(b"a TPMS_ATTESU", &split(&high)), Err(TpmError::BadSignature));
    let mut bad = split(&low);
    bad.r[5] ^= 1;
    assert_eq!(public.verify(message, &bad), Err(TpmError::BadSignature));
    let zero = Signature { r: [0; 32], s: [1; 32] };
    assert_eq!(public.verify(message, &zero), Err(TpmError::InvalidSignatureScalars));
}

#[test]
fn rsa_key_parses_but_is_not_ecc() {
    let public = PublicArea::parse(&rsa_public()).unwrap();
    assert!(!public.is_restricted_signing_key(), "decrypt is set on a storage key");
    let KeyParams::Rsa(rsa) = &public.params else { panic!("not RSA") };
    assert_eq!(rsa.symmetric, Some(SymDef { algorithm: 6, key_bits: 128, mode: 0x43 }));
    assert_eq!((rsa.scheme, rsa.key_bits, rsa.exponent, rsa.modulus.len()), (ALG_NULL, 2048, 0, 256));
    assert_eq!(public.ecc_p256_verifying_key(), Err(TpmError::NotEcc(ALG_RSA)));
    assert_eq!(public.to_spki_pem(), Err(TpmError::NotEcc(ALG_RSA)));
}

#[test]
fn rejects_what_it_does_not_know() {
    let good = ecc_public(&key());
    let with = |offset: usize, value: u8| {
        let mut b = good.clone();
        b[offset] = value;
        PublicArea::parse(&b)
    };
    assert_eq!(with(1, 0x25), Err(TpmError::UnsupportedKeyType(0x0025)));
    assert_eq!(with(3, 0x04), Err(TpmError::UnsupportedNameAlg(0x0004)));
    assert_eq!(with(11, 0x0a), Err(TpmError::UnsupportedAlgorithm { what: "TPMT_SYM_DEF_OBJECT", alg: 0x000a }));
    assert_eq!(with(13, 0x1a), Err(TpmError::UnsupportedAlgorithm { what: "TPMT_ECC_SCHEME", alg: 0x001a }));
    assert_eq!(with(19, 0x11), Err(TpmError::UnsupportedAlgorithm { what: "TPMT_KDF_SCHEME", alg: 0x0011 }));
    assert_eq!(with(17, 0x04).unwrap().ecc_p256_verifying_key(), Err(TpmError::UnsupportedCurve(0x0004)));
    assert_eq!(with(30, 0x43).unwrap().ecc_p256_verifying_key(), Err(TpmError::InvalidPoint("not on the curve")));
    let mut long = good.clone();
    long.push(0);
    assert_eq!(PublicArea::parse(&long), Err(TpmError::TrailingBytes { what: "TPMT_PUBLIC", count: 1 }));
}

#[test]
fn short_coordinates_are_left_padded() {
    // Find a key whose x starts with a zero byte, then drop that byte.
    let key = (1u16..=u16::MAX)
        .map(|i| {
            let mut secret = [0x11; 32];
            secret[30..].copy_from_slice(&i.to_be_bytes());
            SigningKey::from_bytes(&secret.into()).unwrap()
        })
        .find(|k| k.verifying_key().to_encoded_point(false).x().unwrap()[0] == 0)
        .unwrap();
    let full = ecc_public(&key);
    let mut short = full[..20].to_vec();
    short.extend_from_slice(&[0, 31]);
    short.extend_from_slice(&full[23..]);
    let public = PublicArea::parse(&short).unwrap();
    assert_eq!(&public.ecc_p256_verifying_key().unwrap(), key.verifying_key());
}

#[test]
fn no_prefix_or_single_byte_change_panics() {
    for raw in [ecc_public(&key()), rsa_public()] {
        for len in 0..raw.len() {
            assert!(PublicArea::parse(&raw[..len]).is_err());
            let _ = PublicArea::parse_tpm2b(&raw[..len]);
        }
        for i in 0..raw.len() {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut b = raw.clone();
                b[i] = v;
                if let Ok(p) = PublicArea::parse(&b) {
                    let _ = (p.ecc_p256_verifying_key(), p.to_spki_pem(), p.name());
                }
            }
        }
    }
}
