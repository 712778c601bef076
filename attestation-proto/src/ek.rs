//! The TPM's endorsement key certificate: who made the TPM.

use x509_parser::prelude::{FromDer, X509Certificate};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(describe(b"not a certificate").is_err());
        assert!(describe(&[]).is_err());
    }
}
