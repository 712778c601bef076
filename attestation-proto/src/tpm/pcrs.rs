//! PCR values: the quote's PCR digest, and tpm2-tools' serialized PCR file.
//!
//! The serialized file (what `tpm2_quote -o` writes and `tpm2_checkquote -f`
//! reads) is a raw dump of the host-order C structs, so on x86_64 it is
//! little-endian and carries the compiler's padding (TPM.md §8.3):
//!
//! | part | bytes |
//! |---|---|
//! | TPML_PCR_SELECTION: u32 count, 16 × {u16 hash, u8 sizeofSelect, u8 pcrSelect\[4\], u8 pad} | 132 |
//! | u32 number of digest lists | 4 |
//! | per list, TPML_DIGEST: u32 count, 8 × {u16 size, u8 buffer\[64\]} | 532 |
//!
//! tpm2-tools fills one list per TPM2_PCR_Read, which returns at most 8
//! digests; this writer does the same (8 digests per list).

use sha2::{Digest, Sha256};

use super::TpmError;
use super::attest::ALG_SHA256;

/// Largest PCR index a 3-byte selection bitmap can hold.
const MAX_PCR: u8 = 23;
/// Banks in a TPML_PCR_SELECTION struct.
const SELECTION_SLOTS: usize = 16;
/// Bytes of one TPMS_PCR_SELECTION struct, padding included.
const SELECTION_SLOT: usize = 8;
/// Digests in a TPML_DIGEST struct.
const DIGEST_SLOTS: usize = 8;
/// Bytes of the buffer in a TPM2B_DIGEST struct.
const DIGEST_BUFFER: usize = 64;
/// Bytes of one TPML_DIGEST struct.
const DIGEST_LIST: usize = 4 + DIGEST_SLOTS * (2 + DIGEST_BUFFER);

/// SHA-256 of the PCR values concatenated: a quote's `pcrDigest` for one
/// SHA-256 bank. Pass the values in ascending PCR order.
pub fn pcr_digest(values: &[[u8; 32]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for value in values {
        h.update(value);
    }
    h.finalize().into()
}

/// tpm2-tools' serialized PCR file for one SHA-256 bank: `selection` holds
/// the PCR indices (strictly ascending, each at most 23), `values` their
/// values in the same order.
pub fn serialize_tpm2_tools_pcrs(selection: &[u8], values: &[[u8; 32]]) -> Result<Vec<u8>, TpmError> {
    if selection.is_empty() {
        return Err(TpmError::EmptyPcrSelection);
    }
    if selection.len() != values.len() {
        return Err(TpmError::PcrCountMismatch { selected: selection.len(), values: values.len() });
    }
    let mut bitmap = [0u8; 4];
    let mut previous: Option<u8> = None;
    for &pcr in selection {
        if pcr > MAX_PCR {
            return Err(TpmError::PcrOutOfRange(pcr));
        }
        if previous.is_some_and(|p| p >= pcr) {
            return Err(TpmError::PcrsNotAscending(pcr));
        }
        previous = Some(pcr);
        bitmap[usize::from(pcr / 8)] |= 1 << (pcr % 8);
    }

    let lists = values.chunks(DIGEST_SLOTS);
    let mut out = Vec::with_capacity(4 + SELECTION_SLOTS * SELECTION_SLOT + 4 + lists.len() * DIGEST_LIST);
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&ALG_SHA256.to_le_bytes());
    out.push(3);
    out.extend_from_slice(&bitmap);
    out.push(0);
    out.resize(4 + SELECTION_SLOTS * SELECTION_SLOT, 0);

    out.extend_from_slice(&le_u32(lists.len()));
    for list in lists {
        out.extend_from_slice(&le_u32(list.len()));
        for slot in 0..DIGEST_SLOTS {
            let mut buffer = [0u8; DIGEST_BUFFER];
            let size: u16 = match list.get(slot) {
                Some(value) => {
                    buffer[..32].copy_from_slice(value);
                    32
                }
                None => 0,
            };
            out.extend_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&buffer);
        }
    }
    Ok(out)
}

/// A small count as a little-endian u32 (the counts here are at most 24).
fn le_u32(n: usize) -> [u8; 4] {
    u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_sha256_of_the_concatenation() {
        let values = [[1u8; 32], [2u8; 32]];
        assert_eq!(pcr_digest(&values), <[u8; 32]>::from(Sha256::digest([[1u8; 32], [2u8; 32]].concat())));
    }

    #[test]
    fn layout_matches_the_c_structs() {
        let values: Vec<[u8; 32]> = (0u8..9).map(|i| [i + 1; 32]).collect();
        let file = serialize_tpm2_tools_pcrs(&[0, 1, 2, 3, 4, 5, 6, 7, 23], &values).unwrap();
        assert_eq!(file.len(), 1200);
        assert_eq!(&file[..12], &[1, 0, 0, 0, 0x0b, 0, 3, 0xff, 0x00, 0x80, 0, 0]);
        assert!(file[12..132].iter().all(|&b| b == 0));
        assert_eq!(&file[132..136], &[2, 0, 0, 0]);
        assert_eq!(&file[136..140], &[8, 0, 0, 0]);
        assert_eq!(&file[140..142], &[32, 0]);
        assert_eq!(&file[142..174], &[1; 32]);
        assert!(file[174..206].iter().all(|&b| b == 0));
        let second = 136 + 532;
        assert_eq!(&file[second..second + 4], &[1, 0, 0, 0]);
        assert_eq!(&file[second + 6..second + 38], &[9; 32]);
        assert!(file[second + 70..].iter().all(|&b| b == 0));
    }

    #[test]
    fn rejects_bad_selections() {
        let v = [[0u8; 32]; 2];
        assert_eq!(serialize_tpm2_tools_pcrs(&[], &[]), Err(TpmError::EmptyPcrSelection));
        assert_eq!(serialize_tpm2_tools_pcrs(&[1], &v), Err(TpmError::PcrCountMismatch { selected: 1, values: 2 }));
        assert_eq!(serialize_tpm2_tools_pcrs(&[1, 24], &v), Err(TpmError::PcrOutOfRange(24)));
        assert_eq!(serialize_tpm2_tools_pcrs(&[3, 3], &v), Err(TpmError::PcrsNotAscending(3)));
        assert_eq!(serialize_tpm2_tools_pcrs(&[4, 3], &v), Err(TpmError::PcrsNotAscending(3)));
    }
}
