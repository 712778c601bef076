//! The TPM's endorsement key certificate: who made the TPM, and whether a
//! verifier trusts it.
//!
//! [`EkTrust`] holds the certificates a verifier trusts to have issued EK
//! certificates (the TPM manufacturers' CAs, and their intermediates); its
//! [`EkTrust::check`] verifies an EK certificate's signature by one of them,
//! the validity periods, and that the certificate's key is the EK the TPM
//! presented. TPM EK certificates carry a critical subjectAltName of TPM
//! attributes (a directoryName of TCG OIDs) that general-purpose path
//! validators refuse as an unhandled critical extension; this check, like
//! SPIRE's `tpm_devid` attestor, does not apply those path-validation rules,
//! and it checks the signature and the key itself.

use sha2::{Digest, Sha256};
use x509_parser::prelude::{ASN1Time, FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::tpm::public::{KeyParams, PublicArea};

/// Issuer CN of the certificates swtpm's local CA (`swtpm_localca`) issues.
pub const SWTPM_LOCALCA_CN: &str = "swtpm-localca";

/// What an EK certificate says about its TPM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkCertificateInfo {
    /// The issuer's common name.
    pub issuer_cn: String,
    /// Whether it was issued by swtpm's local CA: a software TPM.
    pub software: bool,
}

/// Reads an EK certificate (DER).
pub fn describe(der: &[u8]) -> Result<EkCertificateInfo, String> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    if !rest.is_empty() {
        return Err("trailing bytes after the certificate".into());
    }
    let issuer_cn = cert
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_owned();
    Ok(EkCertificateInfo { software: issuer_cn == SWTPM_LOCALCA_CN, issuer_cn })
}

/// Most certificates in an EK trust bundle.
pub const MAX_TRUSTED: usize = 256;
/// Most intermediate certificates between an EK certificate and a trusted CA.
pub const MAX_CHAIN: usize = 4;

/// The CAs trusted to have issued EK certificates (DER, each parsed once at load).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EkTrust {
    cas: Vec<Vec<u8>>,
}

/// What a trusted EK certificate establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkIdentity {
    /// SHA-256 of the EK's SubjectPublicKeyInfo (DER): the TPM's identity.
    pub sha256: [u8; 32],
    /// The issuing CA's common name.
    pub issuer_cn: String,
}

fn cn_of(name: &x509_parser::x509::X509Name<'_>) -> String {
    name.iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or("").to_owned()
}

/// The certificates of a bundle: PEM blocks (`CERTIFICATE`) or one DER certificate.
pub fn certificates_of(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if bytes.starts_with(&[0x30]) {
        return Ok(vec![bytes.to_vec()]);
    }
    let mut out = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(bytes) {
        let pem = pem.map_err(|e| format!("not PEM: {e}"))?;
        if pem.label == "CERTIFICATE" {
            out.push(pem.contents);
        }
    }
    if out.is_empty() {
        return Err("no certificate in it (PEM `CERTIFICATE` blocks or one DER certificate)".into());
    }
    Ok(out)
}

impl EkTrust {
    /// Trusts the certificates `ders` (each must parse and be a CA certificate).
    pub fn new(ders: Vec<Vec<u8>>) -> Result<Self, String> {
        if ders.is_empty() {
            return Err("the EK trust bundle holds no certificate".into());
        }
        if ders.len() > MAX_TRUSTED {
            return Err(format!("the EK trust bundle holds {} certificates, more than {MAX_TRUSTED}", ders.len()));
        }
        for (i, d) in ders.iter().enumerate() {
            let (_, c) = X509Certificate::from_der(d).map_err(|e| format!("certificate {} of the bundle: {e}", i + 1))?;
            if !c.is_ca() {
                return Err(format!("certificate {} of the bundle ({}) is not a CA certificate", i + 1, c.subject()));
            }
        }
        Ok(Self { cas: ders })
    }

    /// How many CAs are trusted.
    pub fn len(&self) -> usize {
        self.cas.len()
    }

    /// Whether no CA is trusted.
    pub fn is_empty(&self) -> bool {
        self.cas.is_empty()
    }

    /// Checks that `cert` (DER) chains to a trusted CA, through trusted
    /// certificates or the untrusted intermediates `chain` the host sent
    /// (each a CA certificate, valid now, signing the one below it; at most
    /// [`MAX_CHAIN`] of them), is valid at `now_unix` (seconds), and
    /// certifies exactly the EK `ek_public` (TPMT_PUBLIC); returns the TPM's
    /// identity.
    pub fn check(&self, cert: &[u8], chain: &[Vec<u8>], ek_public: &[u8], now_unix: i64) -> Result<EkIdentity, String> {
        let (rest, c) = X509Certificate::from_der(cert).map_err(|e| format!("the EK certificate is not X.509: {e}"))?;
        if !rest.is_empty() {
            return Err("trailing bytes after the EK certificate".into());
        }
        let now = ASN1Time::from_timestamp(now_unix).map_err(|e| format!("the time: {e}"))?;
        if !c.validity().is_valid_at(now) {
            return Err(format!("the EK certificate is not valid now (valid {} to {})", c.validity().not_before, c.validity().not_after));
        }
        if chain.len() > MAX_CHAIN {
            return Err(format!("the host sent {} chain certificates, more than {MAX_CHAIN}", chain.len()));
        }
        let mut intermediates = Vec::with_capacity(chain.len());
        for (i, d) in chain.iter().enumerate() {
            let (_, ca) = X509Certificate::from_der(d).map_err(|e| format!("chain certificate {}: not X.509: {e}", i + 1))?;
            intermediates.push(ca);
        }
        let trusted: Vec<X509Certificate<'_>> =
            self.cas.iter().filter_map(|d| X509Certificate::from_der(d).ok().map(|(_, ca)| ca)).collect();
        let signs = |ca: &X509Certificate<'_>, below: &X509Certificate<'_>| {
            ca.subject() == below.issuer() && below.verify_signature(Some(ca.public_key())).is_ok()
        };
        // Walk up from the EK certificate until a trusted CA signs the current one.
        let mut current = &c;
        for _ in 0..=MAX_CHAIN {
            if let Some(root) = trusted.iter().find(|ca| signs(ca, current)) {
                if !root.validity().is_valid_at(now) {
                    return Err(format!("the EK CA {} is not valid now", root.subject()));
                }
                return Self::identity(&c, ek_public);
            }
            let Some(next) = intermediates.iter().find(|ca| signs(ca, current)) else {
                return Err(if std::ptr::eq(current, &c) {
                    format!("the EK certificate (issuer {}) is not signed by a trusted EK CA or a chain certificate", c.issuer())
                } else {
                    format!(
                        "the EK certificate's chain ends at {}, which no trusted EK CA signed (issuer {})",
                        current.subject(),
                        current.issuer()
                    )
                });
            };
            if !next.is_ca() {
                return Err(format!("chain certificate {} is not a CA certificate", next.subject()));
            }
            if !next.validity().is_valid_at(now) {
                return Err(format!("chain certificate {} is not valid now", next.subject()));
            }
            current = next;
        }
        Err(format!("the EK certificate's chain is longer than {MAX_CHAIN} certificates"))
    }

    /// The identity of the TPM whose EK `c` certifies, after checking that
    /// its key is `ek_public`.
    fn identity(c: &X509Certificate<'_>, ek_public: &[u8]) -> Result<EkIdentity, String> {
        // The certificate's key must be the EK the TPM presented.
        let ek = PublicArea::parse(ek_public).map_err(|e| format!("ek_public: {e}"))?;
        let KeyParams::Rsa(rsa) = &ek.params else { return Err("the EK is not an RSA key".into()) };
        let Ok(PublicKey::RSA(key)) = c.public_key().parsed() else {
            return Err("the EK certificate does not certify an RSA key".into());
        };
        let strip = |b: &[u8]| b.iter().position(|&x| x != 0).map_or(Vec::new(), |i| b[i..].to_vec());
        let exponent = if rsa.exponent == 0 { 65537 } else { rsa.exponent };
        if strip(key.modulus) != strip(&rsa.modulus) || strip(key.exponent) != strip(&exponent.to_be_bytes()) {
            return Err("the EK certificate's key is not the TPM's EK".into());
        }
        Ok(EkIdentity { sha256: Sha256::digest(c.public_key().raw).into(), issuer_cn: cn_of(c.issuer()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_must_hold_ca_certificates() {
        assert!(EkTrust::new(vec![]).is_err());
        assert!(EkTrust::new(vec![b"junk".to_vec()]).is_err());
        assert!(certificates_of(b"no pem here").is_err());
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(describe(b"not a certificate").is_err());
        assert!(describe(&[]).is_err());
    }
}
