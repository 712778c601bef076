//! TPM2_MakeCredential in software: how a verifier that holds only an EK's
//! public key proves that an AK lives in the same TPM (TPM 2.0 Library,
//! Part 1 §24 "Credential Protection", Part 3 §12.6).
//!
//! The verifier picks a secret and a seed, encrypts the seed to the EK
//! (RSA-OAEP with SHA-256 and the label `IDENTITY\0`), derives from the seed
//! and the AK's Name a symmetric key (`KDFa(SHA-256, seed, "STORAGE", name)`)
//! that encrypts the secret (AES-128-CFB, zero IV, as a TPM2B), and an HMAC
//! key (`KDFa(SHA-256, seed, "INTEGRITY")`) over the ciphertext and the Name.
//! Only the TPM holding the EK's private key recovers the seed, and it
//! releases the secret (TPM2_ActivateCredential) only for an object with
//! exactly that Name loaded in it: a restricted key created inside that TPM.
//!
//! Pure functions: the caller supplies the seed and the OAEP randomness.

use aes::cipher::{AsyncStreamCipher, KeyIvInit};
use hmac::{Hmac, Mac};
use rsa::{BigUint, Oaep, RsaPublicKey};
use sha2::Sha256;

use super::attest::ALG_SHA256;
use super::public::{ATTR_DECRYPT, ATTR_FIXED_TPM, ATTR_RESTRICTED, KeyParams, PublicArea};

/// TPM_ALG_AES.
const ALG_AES: u16 = 0x0006;
/// TPM_ALG_CFB.
const ALG_CFB: u16 = 0x0043;
/// The OAEP label of a credential's seed (with its NUL).
const IDENTITY_LABEL: &str = "IDENTITY\0";
/// Largest secret a credential carries (a TPM2B_DIGEST of SHA-256).
pub const MAX_SECRET: usize = 32;

/// Why a credential cannot be made for this EK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The key is not an RSA storage key of the kind TPM EKs are.
    #[error("the EK is not an RSA-2048 restricted decryption key with AES-128-CFB: {0}")]
    NotAnEk(String),
    /// The secret is empty or too long.
    #[error("a credential secret is 1..={MAX_SECRET} bytes")]
    Secret,
    /// RSA encryption failed.
    #[error("RSA-OAEP encryption to the EK failed: {0}")]
    Rsa(String),
}

/// A credential for the TPM: the two inputs of TPM2_ActivateCredential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// TPM2B_ID_OBJECT contents: TPM2B_DIGEST(integrityHMAC) ‖ encIdentity.
    pub id_object: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET contents: the seed, RSA-OAEP encrypted to the EK.
    pub encrypted_secret: Vec<u8>,
}

/// KDFa (Part 1 §11.4.10.2) with SHA-256: HMAC in counter mode over
/// `counter ‖ label ‖ 00 ‖ context_u ‖ context_v ‖ bits`.
pub fn kdfa(key: &[u8], label: &str, context_u: &[u8], context_v: &[u8], bits: u32) -> Vec<u8> {
    let bytes = usize::try_from(bits.div_ceil(8)).unwrap_or(0);
    let mut out = Vec::with_capacity(bytes + 32);
    let mut counter = 1u32;
    while out.len() < bytes {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any size");
        mac.update(&counter.to_be_bytes());
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(context_u);
        mac.update(context_v);
        mac.update(&bits.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
        counter += 1;
    }
    out.truncate(bytes);
    out
}

/// The EK's RSA public key, after checking it is an EK-shaped key.
fn ek_key(ek: &PublicArea) -> Result<RsaPublicKey, CredentialError> {
    let KeyParams::Rsa(rsa) = &ek.params else { return Err(CredentialError::NotAnEk("not an RSA key".into())) };
    let required = ATTR_FIXED_TPM | ATTR_RESTRICTED | ATTR_DECRYPT;
    if ek.object_attributes & required != required {
        return Err(CredentialError::NotAnEk("not a fixedTPM restricted decryption key".into()));
    }
    match rsa.symmetric {
        Some(s) if s.algorithm == ALG_AES && s.key_bits == 128 && s.mode == ALG_CFB => {}
        _ => return Err(CredentialError::NotAnEk("its symmetric algorithm is not AES-128-CFB".into())),
    }
    if rsa.key_bits != 2048 || rsa.modulus.len() != 256 {
        return Err(CredentialError::NotAnEk(format!("{}-bit modulus", rsa.key_bits)));
    }
    let e = if rsa.exponent == 0 { 65537 } else { rsa.exponent };
    RsaPublicKey::new(BigUint::from_bytes_be(&rsa.modulus), BigUint::from(e)).map_err(|e| CredentialError::NotAnEk(e.to_string()))
}

/// Makes a credential releasing `secret` to the object named `name` (the
/// AK's Name: `00 0b ‖ SHA-256(TPMT_PUBLIC)`) in the TPM of `ek`, from `seed`
/// (32 random bytes, fresh for each credential) and `rng` for OAEP.
pub fn make_credential(
    ek: &PublicArea,
    name: &[u8],
    secret: &[u8],
    seed: &[u8; 32],
    rng: &mut impl rsa::rand_core::CryptoRngCore,
) -> Result<Credential, CredentialError> {
    if secret.is_empty() || secret.len() > MAX_SECRET {
        return Err(CredentialError::Secret);
    }
    let key = ek_key(ek)?;
    debug_assert_eq!(name.get(..2), Some(&ALG_SHA256.to_be_bytes()[..]));
    let encrypted_secret =
        key.encrypt(rng, Oaep::new_with_label::<Sha256, _>(IDENTITY_LABEL), seed).map_err(|e| CredentialError::Rsa(e.to_string()))?;

    // encIdentity: the secret as a TPM2B_DIGEST, AES-128-CFB with a zero IV.
    let sym = kdfa(seed, "STORAGE", name, &[], 128);
    let mut enc_identity = Vec::with_capacity(2 + secret.len());
    enc_identity.extend_from_slice(&u16::try_from(secret.len()).unwrap_or(0).to_be_bytes());
    enc_identity.extend_from_slice(secret);
    cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(&sym, &[0u8; 16])
        .expect("a 16-byte key and IV")
        .encrypt(&mut enc_identity);

    // integrityHMAC over encIdentity ‖ name, keyed from the seed.
    let hmac_key = kdfa(seed, "INTEGRITY", &[], &[], 256);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&hmac_key).expect("HMAC takes keys of any size");
    mac.update(&enc_identity);
    mac.update(name);
    let integrity = mac.finalize().into_bytes();

    let mut id_object = Vec::with_capacity(2 + integrity.len() + enc_identity.len());
    id_object.extend_from_slice(&u16::try_from(integrity.len()).unwrap_or(0).to_be_bytes());
    id_object.extend_from_slice(&integrity);
    id_object.extend_from_slice(&enc_identity);
    Ok(Credential { id_object, encrypted_secret })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// KDFa of the TPM 2.0 spec's shape: a known-answer check against an
    /// independent computation (one block, then truncated).
    #[test]
    fn kdfa_counts_blocks_and_truncates() {
        let one = kdfa(b"key", "STORAGE", b"u", b"v", 128);
        assert_eq!(one.len(), 16);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"key").unwrap();
        mac.update(&[0, 0, 0, 1]);
        mac.update(b"STORAGE\0uv");
        mac.update(&128u32.to_be_bytes());
        assert_eq!(one, mac.finalize().into_bytes()[..16]);
        let long = kdfa(b"key", "INTEGRITY", b"", b"", 512);
        assert_eq!(long.len(), 64);
        assert_ne!(long[..32], long[32..]);
    }
}
