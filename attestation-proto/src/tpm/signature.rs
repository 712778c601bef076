//! TPMT_SIGNATURE, restricted to what the zone attestor's AKs produce:
//! ECDSA over NIST P-256 with SHA-256.

use super::TpmError;
use super::attest::ALG_SHA256;
use super::reader::Reader;

/// TPM_ALG_ECDSA.
pub const ALG_ECDSA: u16 = 0x0018;
/// TPM_ALG_NULL.
pub const ALG_NULL: u16 = 0x0010;
/// Size of a P-256 scalar.
const SCALAR: usize = 32;

/// A parsed ECDSA-SHA256 TPMT_SIGNATURE: r and s as 32-byte big-endian
/// integers (left-padded with zeros when the TPM sent them shorter).
///
/// The scalars are not range-checked here; [`Signature::to_p256`] (and so
/// verification) rejects zero or out-of-range values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// ECDSA r.
    pub r: [u8; 32],
    /// ECDSA s (high-S values are kept as they are: TPMs produce them).
    pub s: [u8; 32],
}

impl Signature {
    /// Parses one marshalled TPMT_SIGNATURE, rejecting trailing bytes and
    /// every scheme but ECDSA with SHA-256.
    pub fn parse(bytes: &[u8]) -> Result<Self, TpmError> {
        let mut r = Reader::new(bytes);
        let sig_alg = r.u16("TPMT_SIGNATURE.sigAlg")?;
        // Every signature scheme but TPM_ALG_NULL starts with a hash algorithm;
        // read it (if present) only to name it in the error.
        let hash_alg = if sig_alg == ALG_NULL && r.remaining() < 2 { ALG_NULL } else { r.u16("TPMS_SIGNATURE_ECDSA.hash")? };
        if sig_alg != ALG_ECDSA || hash_alg != ALG_SHA256 {
            return Err(TpmError::UnsupportedSignature { sig_alg, hash_alg });
        }
        let sig_r = scalar(r.tpm2b(SCALAR, "TPMS_SIGNATURE_ECDSA.signatureR")?, "r")?;
        let sig_s = scalar(r.tpm2b(SCALAR, "TPMS_SIGNATURE_ECDSA.signatureS")?, "s")?;
        r.finish("TPMT_SIGNATURE")?;
        Ok(Self { r: sig_r, s: sig_s })
    }

    /// The signature as a `p256` ECDSA signature; fails if r or s is zero or
    /// not below the group order. High-S is not normalised.
    pub fn to_p256(&self) -> Result<p256::ecdsa::Signature, TpmError> {
        p256::ecdsa::Signature::from_scalars(self.r, self.s).map_err(|_| TpmError::InvalidSignatureScalars)
    }

    /// The ASN.1 DER `SEQUENCE { r INTEGER, s INTEGER }` form, which
    /// `tpm2_checkquote -s` accepts as a "plain" signature together with `-g sha256`.
    pub fn to_der(&self) -> Result<Vec<u8>, TpmError> {
        Ok(self.to_p256()?.to_der().as_bytes().to_vec())
    }
}

/// Left-pads a big-endian ECDSA component to 32 bytes; empty is an error.
fn scalar(bytes: &[u8], name: &'static str) -> Result<[u8; SCALAR], TpmError> {
    if bytes.is_empty() {
        return Err(TpmError::EmptySignatureComponent(name));
    }
    let mut out = [0u8; SCALAR];
    // The reader bounded `bytes` to SCALAR, so the subtraction cannot wrap.
    out[SCALAR - bytes.len()..].copy_from_slice(bytes);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ecdsa(r: &[u8], s: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0x18, 0, 0x0b];
        for part in [r, s] {
            b.extend_from_slice(&u16::try_from(part.len()).unwrap().to_be_bytes());
            b.extend_from_slice(part);
        }
        b
    }

    #[test]
    fn parses_and_pads() {
        let sig = Signature::parse(&ecdsa(&[7; 32], &[9; 31])).unwrap();
        assert_eq!(sig.r, [7; 32]);
        assert_eq!(sig.s[0], 0);
        assert_eq!(&sig.s[1..], &[9; 31]);
        let der = sig.to_der().unwrap();
        assert_eq!(der[0], 0x30);
    }

    #[test]
    fn rejects_other_schemes_and_bad_components() {
        let rsa = [0, 0x14, 0, 0x0b, 1, 0, 0];
        assert_eq!(Signature::parse(&rsa), Err(TpmError::UnsupportedSignature { sig_alg: 0x0014, hash_alg: 0x000b }));
        let sha1 = [0, 0x18, 0, 0x04];
        assert_eq!(Signature::parse(&sha1), Err(TpmError::UnsupportedSignature { sig_alg: 0x0018, hash_alg: 0x0004 }));
        assert_eq!(Signature::parse(&[0, 0x10]), Err(TpmError::UnsupportedSignature { sig_alg: 0x0010, hash_alg: 0x0010 }));
        assert_eq!(Signature::parse(&ecdsa(&[], &[1; 32])), Err(TpmError::EmptySignatureComponent("r")));
        assert_eq!(Signature::parse(&ecdsa(&[1; 32], &[])), Err(TpmError::EmptySignatureComponent("s")));
        assert!(matches!(Signature::parse(&ecdsa(&[1; 33], &[1; 32])), Err(TpmError::TooLarge { .. })));
        let mut long = ecdsa(&[1; 32], &[1; 32]);
        long.push(0);
        assert_eq!(Signature::parse(&long), Err(TpmError::TrailingBytes { what: "TPMT_SIGNATURE", count: 1 }));
        let good = ecdsa(&[1; 32], &[1; 32]);
        for len in 0..good.len() {
            assert!(Signature::parse(&good[..len]).is_err());
        }
        let zero = Signature::parse(&ecdsa(&[0; 32], &[1; 32])).unwrap();
        assert_eq!(zero.to_der(), Err(TpmError::InvalidSignatureScalars));
    }
}
