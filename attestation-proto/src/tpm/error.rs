//! The one error type of the TPM structure parsers and the quote checks.

/// Why a TPM structure was rejected or a check failed.
///
/// Every variant names the field or the value at fault, so a rejected piece
/// of evidence can be diagnosed from the message alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TpmError {
    /// The input ended inside a field.
    #[error("truncated {what}: needs {needed} bytes, only {available} left")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// A sized buffer announces more bytes than its type allows.
    #[error("{what} of {size} bytes exceeds its {max}-byte maximum")]
    TooLarge {
        /// The field being read.
        what: &'static str,
        /// The announced size.
        size: usize,
        /// The largest size the structure allows.
        max: usize,
    },
    /// Bytes follow the end of a complete structure.
    #[error("{count} trailing bytes after {what}")]
    TrailingBytes {
        /// The structure that ended early.
        what: &'static str,
        /// How many bytes follow it.
        count: usize,
    },
    /// A TPMS_ATTEST does not start with TPM_GENERATED_VALUE.
    #[error("attestation magic is {0:#010x}, expected 0xff544347 (TPM_GENERATED_VALUE)")]
    BadMagic(u32),
    /// A TPMS_ATTEST is not a quote.
    #[error("attestation type is {0:#06x}, expected 0x8018 (TPM_ST_ATTEST_QUOTE)")]
    NotAQuote(u16),
    /// `clockInfo.safe` is neither 0 nor 1.
    #[error("clockInfo.safe is {0}, expected 0 or 1")]
    BadBool(u8),
    /// A PCR selection lists more banks than a TPM has.
    #[error("PCR selection lists {0} banks, at most 16 allowed")]
    TooManyBanks(u32),
    /// A PCR selection bitmap is not 3 or 4 bytes long.
    #[error("PCR selection bitmap of {0} bytes, expected 3 or 4")]
    BadSizeofSelect(u8),
    /// A signature scheme or hash other than ECDSA with SHA-256.
    #[error("unsupported signature: sigAlg {sig_alg:#06x}, hash {hash_alg:#06x} (only ECDSA 0x0018 with SHA-256 0x000b)")]
    UnsupportedSignature {
        /// The TPMT_SIGNATURE's sigAlg.
        sig_alg: u16,
        /// Its hash algorithm (TPM_ALG_NULL if absent).
        hash_alg: u16,
    },
    /// An ECDSA r or s of zero length.
    #[error("ECDSA signature component {0} is empty")]
    EmptySignatureComponent(&'static str),
    /// r or s is zero or not below the group order.
    #[error("ECDSA signature scalars out of range for P-256")]
    InvalidSignatureScalars,
    /// A public area of a type other than ECC or RSA.
    #[error("unsupported public key type {0:#06x} (only ECC 0x0023 and RSA 0x0001)")]
    UnsupportedKeyType(u16),
    /// A public area whose Name is not computed with SHA-256.
    #[error("unsupported nameAlg {0:#06x} (only SHA-256 0x000b)")]
    UnsupportedNameAlg(u16),
    /// An algorithm this parser does not know in the named field.
    #[error("unsupported {what} algorithm {alg:#06x}")]
    UnsupportedAlgorithm {
        /// The field holding the algorithm.
        what: &'static str,
        /// The algorithm identifier found.
        alg: u16,
    },
    /// A TPM2B_PUBLIC's size prefix disagrees with its content.
    #[error("TPM2B_PUBLIC announces {declared} bytes but {actual} follow")]
    SizeMismatch {
        /// The size prefix.
        declared: usize,
        /// The bytes after the prefix.
        actual: usize,
    },
    /// The key is not an ECC key (an ECC operation was asked of it).
    #[error("public key is type {0:#06x}, not ECC")]
    NotEcc(u16),
    /// The ECC key is not on NIST P-256.
    #[error("ECC curve {0:#06x} is not NIST P-256 (0x0003)")]
    UnsupportedCurve(u16),
    /// The ECC point is malformed or not on the curve.
    #[error("invalid P-256 public point: {0}")]
    InvalidPoint(&'static str),
    /// The public key could not be encoded as SubjectPublicKeyInfo.
    #[error("cannot encode public key as SubjectPublicKeyInfo PEM")]
    PemEncoding,
    /// The signature does not verify under the key.
    #[error("signature does not verify under the public key")]
    BadSignature,
    /// A PCR index above 23 (a 3-byte selection bitmap).
    #[error("PCR index {0} out of range 0..=23")]
    PcrOutOfRange(u8),
    /// PCR indices not strictly ascending.
    #[error("PCR indices are not strictly ascending at index {0}")]
    PcrsNotAscending(u8),
    /// No PCR selected.
    #[error("empty PCR selection")]
    EmptyPcrSelection,
    /// A different number of PCR values than selected PCRs.
    #[error("{selected} PCRs selected but {values} values given")]
    PcrCountMismatch {
        /// Number of selected PCRs.
        selected: usize,
        /// Number of values given.
        values: usize,
    },
}
