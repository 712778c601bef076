//! TPMT_PUBLIC: the public area of a TPM key, for ECC and RSA keys.
//!
//! The parser knows the algorithm identifiers a TPM 2.0 key can carry in
//! its parameters and rejects any other (so an unknown union member is never
//! guessed at). It keeps the raw bytes: the key's Name is a hash of them.

use p256::ecdsa::VerifyingKey;
use p256::pkcs8::{EncodePublicKey, LineEnding};
use sha2::{Digest, Sha256};

use super::TpmError;
use super::attest::ALG_SHA256;
use super::reader::Reader;
use super::signature::{ALG_NULL, Signature};

/// TPM_ALG_RSA.
pub const ALG_RSA: u16 = 0x0001;
/// TPM_ALG_ECC.
pub const ALG_ECC: u16 = 0x0023;
/// TPM_ECC_NIST_P256.
pub const ECC_NIST_P256: u16 = 0x0003;

/// TPMA_OBJECT fixedTPM.
pub const ATTR_FIXED_TPM: u32 = 1 << 1;
/// TPMA_OBJECT fixedParent.
pub const ATTR_FIXED_PARENT: u32 = 1 << 4;
/// TPMA_OBJECT restricted.
pub const ATTR_RESTRICTED: u32 = 1 << 16;
/// TPMA_OBJECT decrypt.
pub const ATTR_DECRYPT: u32 = 1 << 17;
/// TPMA_OBJECT sign.
pub const ATTR_SIGN: u32 = 1 << 18;

const MAX_AUTH_POLICY: usize = 64;
const MAX_ECC_PARAMETER: usize = 128;
const MAX_RSA_MODULUS: usize = 512;
const P256_COORDINATE: usize = 32;

/// TPMT_SYM_DEF_OBJECT of a key that has one (not TPM_ALG_NULL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymDef {
    /// Block cipher (AES, SM4 or Camellia).
    pub algorithm: u16,
    /// Key size in bits.
    pub key_bits: u16,
    /// Block cipher mode.
    pub mode: u16,
}

/// Parameters and unique field of an ECC key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EccParams {
    /// Symmetric algorithm for child protection (storage keys), or `None`.
    pub symmetric: Option<SymDef>,
    /// Signing or key-exchange scheme (TPM_ALG_NULL when any is allowed).
    pub scheme: u16,
    /// The scheme's hash algorithm, when the scheme is not NULL.
    pub scheme_hash: Option<u16>,
    /// TPM_ECC_CURVE.
    pub curve_id: u16,
    /// KDF scheme (TPM_ALG_NULL normally).
    pub kdf: u16,
    /// The KDF's hash algorithm, when the KDF is not NULL.
    pub kdf_hash: Option<u16>,
    /// Public point x, big-endian, as the TPM sent it.
    pub x: Vec<u8>,
    /// Public point y, big-endian, as the TPM sent it.
    pub y: Vec<u8>,
}

/// Parameters and unique field of an RSA key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaParams {
    /// Symmetric algorithm for child protection (storage keys), or `None`.
    pub symmetric: Option<SymDef>,
    /// Signing or encryption scheme (TPM_ALG_NULL when any is allowed).
    pub scheme: u16,
    /// The scheme's hash algorithm, when it has one.
    pub scheme_hash: Option<u16>,
    /// Modulus size in bits.
    pub key_bits: u16,
    /// Public exponent; 0 means 65537.
    pub exponent: u32,
    /// Modulus, big-endian.
    pub modulus: Vec<u8>,
}

/// The type-specific part of a public area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyParams {
    /// TPM_ALG_ECC.
    Ecc(EccParams),
    /// TPM_ALG_RSA.
    Rsa(RsaParams),
}

/// A parsed TPMT_PUBLIC whose nameAlg is SHA-256, with its raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicArea {
    raw: Vec<u8>,
    /// TPMI_ALG_PUBLIC ([`ALG_ECC`] or [`ALG_RSA`]).
    pub object_type: u16,
    /// TPMA_OBJECT bits.
    pub object_attributes: u32,
    /// The key's authorization policy digest (may be empty).
    pub auth_policy: Vec<u8>,
    /// Parameters and public key.
    pub params: KeyParams,
}

impl PublicArea {
    /// Parses one marshalled TPMT_PUBLIC (no size prefix), rejecting
    /// trailing bytes, key types other than ECC and RSA, and nameAlgs other
    /// than SHA-256.
    pub fn parse(bytes: &[u8]) -> Result<Self, TpmError> {
        let mut r = Reader::new(bytes);
        let object_type = r.u16("TPMT_PUBLIC.type")?;
        if object_type != ALG_ECC && object_type != ALG_RSA {
            return Err(TpmError::UnsupportedKeyType(object_type));
        }
        let name_alg = r.u16("TPMT_PUBLIC.nameAlg")?;
        if name_alg != ALG_SHA256 {
            return Err(TpmError::UnsupportedNameAlg(name_alg));
        }
        let object_attributes = r.u32("TPMT_PUBLIC.objectAttributes")?;
        let auth_policy = r.tpm2b(MAX_AUTH_POLICY, "TPMT_PUBLIC.authPolicy")?.to_vec();
        let params = if object_type == ALG_ECC { KeyParams::Ecc(parse_ecc(&mut r)?) } else { KeyParams::Rsa(parse_rsa(&mut r)?) };
        r.finish("TPMT_PUBLIC")?;
        Ok(Self { raw: bytes.to_vec(), object_type, object_attributes, auth_policy, params })
    }

    /// Parses a TPM2B_PUBLIC: a big-endian u16 size that must equal the
    /// length of the TPMT_PUBLIC that follows.
    pub fn parse_tpm2b(bytes: &[u8]) -> Result<Self, TpmError> {
        let mut r = Reader::new(bytes);
        let declared = usize::from(r.u16("TPM2B_PUBLIC.size")?);
        if declared != r.remaining() {
            return Err(TpmError::SizeMismatch { declared, actual: r.remaining() });
        }
        Self::parse(r.bytes(declared, "TPM2B_PUBLIC.publicArea")?)
    }

    /// The marshalled TPMT_PUBLIC this was parsed from.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The key's Name: nameAlg (SHA-256, `00 0b`) followed by SHA-256 of the
    /// marshalled TPMT_PUBLIC; 34 bytes.
    pub fn name(&self) -> Vec<u8> {
        let mut name = Vec::with_capacity(34);
        name.extend_from_slice(&ALG_SHA256.to_be_bytes());
        name.extend_from_slice(&Sha256::digest(&self.raw));
        name
    }

    /// Whether the attributes make this a TPM-bound attestation key:
    /// restricted, sign, fixedTPM and fixedParent set, decrypt clear (so the
    /// TPM only signs digests it computed itself, such as quotes).
    pub fn is_restricted_signing_key(&self) -> bool {
        let required = ATTR_RESTRICTED | ATTR_SIGN | ATTR_FIXED_TPM | ATTR_FIXED_PARENT;
        self.object_attributes & required == required && self.object_attributes & ATTR_DECRYPT == 0
    }

    /// The key as a P-256 ECDSA verifying key. Fails unless the key is ECC on
    /// NIST P-256 with coordinates of at most 32 bytes forming a valid point.
    pub fn ecc_p256_verifying_key(&self) -> Result<VerifyingKey, TpmError> {
        let KeyParams::Ecc(ecc) = &self.params else {
            return Err(TpmError::NotEcc(self.object_type));
        };
        if ecc.curve_id != ECC_NIST_P256 {
            return Err(TpmError::UnsupportedCurve(ecc.curve_id));
        }
        let x = coordinate(&ecc.x, "x longer than 32 bytes")?;
        let y = coordinate(&ecc.y, "y longer than 32 bytes")?;
        let point = p256::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
        VerifyingKey::from_encoded_point(&point).map_err(|_| TpmError::InvalidPoint("not on the curve"))
    }

    /// Checks an ECDSA-P256 signature over SHA-256(`message`) (for a quote,
    /// `message` is the marshalled TPMS_ATTEST). High-S signatures are
    /// accepted, as TPMs produce them.
    ///
    /// The key and scalars are validated first (so a malformed key or
    /// signature is named as such); the arithmetic is `ring`'s.
    pub fn verify(&self, message: &[u8], sig: &Signature) -> Result<(), TpmError> {
        let key = self.ecc_p256_verifying_key()?;
        let fixed = sig.to_p256()?.to_bytes();
        let point = key.to_encoded_point(false);
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point.as_bytes())
            .verify(message, &fixed)
            .map_err(|_| TpmError::BadSignature)
    }

    /// The ECC P-256 key as a SubjectPublicKeyInfo PEM (what `tpm2_checkquote -u` reads).
    pub fn to_spki_pem(&self) -> Result<String, TpmError> {
        self.ecc_p256_verifying_key()?.to_public_key_pem(LineEnding::LF).map_err(|_| TpmError::PemEncoding)
    }
}

/// Left-pads a big-endian coordinate to 32 bytes.
fn coordinate(bytes: &[u8], too_long: &'static str) -> Result<[u8; P256_COORDINATE], TpmError> {
    let pad = P256_COORDINATE.checked_sub(bytes.len()).ok_or(TpmError::InvalidPoint(too_long))?;
    let mut out = [0u8; P256_COORDINATE];
    out[pad..].copy_from_slice(bytes);
    Ok(out)
}

/// TPMT_SYM_DEF_OBJECT.
fn parse_symmetric(r: &mut Reader<'_>) -> Result<Option<SymDef>, TpmError> {
    const AES: u16 = 0x0006;
    const SM4: u16 = 0x0013;
    const CAMELLIA: u16 = 0x0026;
    match r.u16("TPMT_SYM_DEF_OBJECT.algorithm")? {
        ALG_NULL => Ok(None),
        algorithm @ (AES | SM4 | CAMELLIA) => Ok(Some(SymDef {
            algorithm,
            key_bits: r.u16("TPMT_SYM_DEF_OBJECT.keyBits")?,
            mode: r.u16("TPMT_SYM_DEF_OBJECT.mode")?,
        })),
        alg => Err(TpmError::UnsupportedAlgorithm { what: "TPMT_SYM_DEF_OBJECT", alg }),
    }
}

/// A scheme selector followed by a hash algorithm for the listed schemes,
/// by nothing for NULL and for `empty` schemes, and rejected otherwise.
fn parse_scheme(r: &mut Reader<'_>, what: &'static str, hashed: &[u16], empty: &[u16]) -> Result<(u16, Option<u16>), TpmError> {
    let scheme = r.u16(what)?;
    if scheme == ALG_NULL || empty.contains(&scheme) {
        Ok((scheme, None))
    } else if hashed.contains(&scheme) {
        Ok((scheme, Some(r.u16(what)?)))
    } else {
        Err(TpmError::UnsupportedAlgorithm { what, alg: scheme })
    }
}

/// TPMS_ECC_PARMS then TPMS_ECC_POINT.
fn parse_ecc(r: &mut Reader<'_>) -> Result<EccParams, TpmError> {
    // ECDSA, ECDH, SM2, ECSCHNORR, ECMQV (ECDAA carries a count too: unsupported).
    const ECC_SCHEMES: [u16; 5] = [0x0018, 0x0019, 0x001b, 0x001c, 0x001d];
    // MGF1, KDF1_SP800_56A, KDF2, KDF1_SP800_108.
    const KDF_SCHEMES: [u16; 4] = [0x0007, 0x0020, 0x0021, 0x0022];
    let symmetric = parse_symmetric(r)?;
    let (scheme, scheme_hash) = parse_scheme(r, "TPMT_ECC_SCHEME", &ECC_SCHEMES, &[])?;
    let curve_id = r.u16("TPMS_ECC_PARMS.curveID")?;
    let (kdf, kdf_hash) = parse_scheme(r, "TPMT_KDF_SCHEME", &KDF_SCHEMES, &[])?;
    let x = r.tpm2b(MAX_ECC_PARAMETER, "TPMS_ECC_POINT.x")?.to_vec();
    let y = r.tpm2b(MAX_ECC_PARAMETER, "TPMS_ECC_POINT.y")?.to_vec();
    Ok(EccParams { symmetric, scheme, scheme_hash, curve_id, kdf, kdf_hash, x, y })
}

/// TPMS_RSA_PARMS then TPM2B_PUBLIC_KEY_RSA.
fn parse_rsa(r: &mut Reader<'_>) -> Result<RsaParams, TpmError> {
    // RSASSA, RSAPSS, OAEP take a hash; RSAES takes nothing.
    const RSA_HASHED: [u16; 3] = [0x0014, 0x0016, 0x0017];
    const RSA_EMPTY: [u16; 1] = [0x0015];
    let symmetric = parse_symmetric(r)?;
    let (scheme, scheme_hash) = parse_scheme(r, "TPMT_RSA_SCHEME", &RSA_HASHED, &RSA_EMPTY)?;
    let key_bits = r.u16("TPMS_RSA_PARMS.keyBits")?;
    let exponent = r.u32("TPMS_RSA_PARMS.exponent")?;
    let modulus = r.tpm2b(MAX_RSA_MODULUS, "TPM2B_PUBLIC_KEY_RSA")?.to_vec();
    Ok(RsaParams { symmetric, scheme, scheme_hash, key_bits, exponent, modulus })
}

#[cfg(test)]
mod tests;
