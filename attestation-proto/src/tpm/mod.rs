//! TPM 2.0 structures in TPM marshalling (big-endian), and the checks a
//! quote verifier makes with them.
//!
//! | module | content |
//! |---|---|
//! | [`reader`] | bounds-checked big-endian cursor |
//! | [`attest`] | TPMS_ATTEST of type quote |
//! | [`signature`] | TPMT_SIGNATURE (ECDSA P-256 / SHA-256 only) |
//! | [`public`] | TPMT_PUBLIC / TPM2B_PUBLIC (ECC and RSA), Name, signature check |
//! | [`name`] | Qualified Names, what `qualifiedSigner` holds |
//! | [`pcrs`] | PCR digest, and tpm2-tools' serialized PCR file |
//! | [`credential`] | TPM2_MakeCredential in software (a verifier's challenge to an AK under an EK) |
//!
//! Every parser takes one complete structure, rejects trailing bytes and
//! unknown algorithms, bounds every size field before reading, and returns a
//! [`TpmError`] naming the field at fault; none of them panics.

pub mod attest;
pub mod credential;
mod error;
pub mod name;
pub mod pcrs;
pub mod public;
pub mod reader;
pub mod signature;

pub use attest::{ALG_SHA256, Attest, ClockInfo, PcrSelection};
pub use error::TpmError;
pub use name::{TPM_RH_ENDORSEMENT, qualified_name_of_child, qualified_name_of_primary};
pub use pcrs::{pcr_digest, serialize_tpm2_tools_pcrs};
pub use public::PublicArea;
pub use signature::Signature;

#[cfg(test)]
mod tests {
    use super::*;

    /// Random inputs, some behind a valid header so parsing gets deep: no
    /// parser may panic, whatever the bytes.
    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let headers: [&[u8]; 4] = [&[], &[0xff, 0x54, 0x43, 0x47, 0x80, 0x18], &[0x00, 0x18, 0x00, 0x0b], &[0x00, 0x23, 0x00, 0x0b]];
        for round in 0..20_000 {
            let len = usize::try_from(next() % 200).unwrap();
            let mut bytes = headers[round % headers.len()].to_vec();
            bytes.extend((0..len).map(|_| next().to_le_bytes()[0]));
            let _ = Attest::parse(&bytes).map(|a| a.pcr_select.iter().map(PcrSelection::pcrs).count());
            let _ = Signature::parse(&bytes).map(|s| s.to_der());
            let _ = PublicArea::parse(&bytes).map(|p| (p.name(), p.to_spki_pem()));
            let _ = PublicArea::parse_tpm2b(&bytes);
        }
    }
}
