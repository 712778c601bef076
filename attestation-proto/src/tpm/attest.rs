//! TPMS_ATTEST of type quote: what the TPM signs in TPM2_Quote.
//!
//! The parser accepts exactly one marshalled TPMS_ATTEST (no TPM2B size
//! prefix, as `tpm2_quote -m` writes it) whose magic is TPM_GENERATED_VALUE
//! and whose type is TPM_ST_ATTEST_QUOTE, and rejects trailing bytes.

use super::TpmError;
use super::reader::Reader;

/// TPM_ALG_SHA256.
pub const ALG_SHA256: u16 = 0x000b;
/// TPM_GENERATED_VALUE, the magic of every TPMS_ATTEST.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// TPM_ST_ATTEST_QUOTE.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;

/// Largest TPM2B_NAME (a hash algorithm id plus a SHA-512 digest).
const MAX_NAME: usize = 68;
/// Largest TPM2B_DATA and TPM2B_DIGEST.
const MAX_DIGEST: usize = 64;
/// Most banks a TPML_PCR_SELECTION may list.
const MAX_BANKS: u32 = 16;

/// TPMS_CLOCK_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered since it was cleared.
    pub clock: u64,
    /// TPM resets (power cycles) since it was cleared.
    pub reset_count: u32,
    /// TPM restarts (hibernation resumes) since the last reset.
    pub restart_count: u32,
    /// Whether `clock` has never been rolled back.
    pub safe: bool,
}

/// One bank of a TPML_PCR_SELECTION (a TPMS_PCR_SELECTION).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// The bank's hash algorithm (e.g. [`ALG_SHA256`]).
    pub hash_alg: u16,
    /// The selection bitmap (3 or 4 bytes): bit `i % 8` of byte `i / 8` selects PCR `i`.
    pub bitmap: Vec<u8>,
}

impl PcrSelection {
    /// Whether PCR `pcr` is selected.
    pub fn contains(&self, pcr: u8) -> bool {
        self.bitmap.get(usize::from(pcr / 8)).is_some_and(|byte| byte & (1 << (pcr % 8)) != 0)
    }

    /// The selected PCR indices, ascending.
    pub fn pcrs(&self) -> Vec<u8> {
        (0..=u8::MAX).take(self.bitmap.len() * 8).filter(|&pcr| self.contains(pcr)).collect()
    }
}

/// A parsed TPMS_ATTEST of type quote (its TPMS_QUOTE_INFO flattened in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    /// The Qualified Name of the signing key (TPM2B_NAME), not its Name.
    pub qualified_signer: Vec<u8>,
    /// The caller's qualifying data, normally the verifier's nonce (TPM2B_DATA).
    pub extra_data: Vec<u8>,
    /// The TPM's clock state at signing time.
    pub clock: ClockInfo,
    /// The TPM vendor's firmware version.
    pub firmware_version: u64,
    /// The quoted PCRs, bank by bank.
    pub pcr_select: Vec<PcrSelection>,
    /// The digest of the quoted PCR values (TPM2B_DIGEST).
    pub pcr_digest: Vec<u8>,
}

impl Attest {
    /// Parses one marshalled TPMS_ATTEST of type quote, rejecting trailing bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, TpmError> {
        let mut r = Reader::new(bytes);
        let magic = r.u32("TPMS_ATTEST.magic")?;
        if magic != TPM_GENERATED_VALUE {
            return Err(TpmError::BadMagic(magic));
        }
        let kind = r.u16("TPMS_ATTEST.type")?;
        if kind != TPM_ST_ATTEST_QUOTE {
            return Err(TpmError::NotAQuote(kind));
        }
        let qualified_signer = r.tpm2b(MAX_NAME, "TPMS_ATTEST.qualifiedSigner")?.to_vec();
        let extra_data = r.tpm2b(MAX_DIGEST, "TPMS_ATTEST.extraData")?.to_vec();
        let clock = ClockInfo {
            clock: r.u64("TPMS_CLOCK_INFO.clock")?,
            reset_count: r.u32("TPMS_CLOCK_INFO.resetCount")?,
            restart_count: r.u32("TPMS_CLOCK_INFO.restartCount")?,
            safe: match r.u8("TPMS_CLOCK_INFO.safe")? {
                0 => false,
                1 => true,
                other => return Err(TpmError::BadBool(other)),
            },
        };
        let firmware_version = r.u64("TPMS_ATTEST.firmwareVersion")?;
        let pcr_select = parse_pcr_selection(&mut r)?;
        let pcr_digest = r.tpm2b(MAX_DIGEST, "TPMS_QUOTE_INFO.pcrDigest")?.to_vec();
        r.finish("TPMS_ATTEST")?;
        Ok(Self { qualified_signer, extra_data, clock, firmware_version, pcr_select, pcr_digest })
    }
}

/// Reads a TPML_PCR_SELECTION.
fn parse_pcr_selection(r: &mut Reader<'_>) -> Result<Vec<PcrSelection>, TpmError> {
    let count = r.u32("TPML_PCR_SELECTION.count")?;
    if count > MAX_BANKS {
        return Err(TpmError::TooManyBanks(count));
    }
    let mut banks = Vec::new();
    for _ in 0..count {
        let hash_alg = r.u16("TPMS_PCR_SELECTION.hash")?;
        let size = r.u8("TPMS_PCR_SELECTION.sizeofSelect")?;
        if !(3..=4).contains(&size) {
            return Err(TpmError::BadSizeofSelect(size));
        }
        let bitmap = r.bytes(usize::from(size), "TPMS_PCR_SELECTION.pcrSelect")?.to_vec();
        banks.push(PcrSelection { hash_alg, bitmap });
    }
    Ok(banks)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quote like the one in TPM.md §6.1: sha256 {0..7, 23}, 32-byte nonce.
    fn sample() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&TPM_GENERATED_VALUE.to_be_bytes());
        b.extend_from_slice(&TPM_ST_ATTEST_QUOTE.to_be_bytes());
        b.extend_from_slice(&[0, 34, 0, 0x0b]);
        b.extend_from_slice(&[0x11; 32]);
        b.extend_from_slice(&[0, 32]);
        b.extend_from_slice(&[0x22; 32]);
        b.extend_from_slice(&1234u64.to_be_bytes());
        b.extend_from_slice(&2u32.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes());
        b.push(1);
        b.extend_from_slice(&0x2019_1023_0016_3636u64.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 1, 0, 0x0b, 3, 0xff, 0x00, 0x80]);
        b.extend_from_slice(&[0, 32]);
        b.extend_from_slice(&[0x33; 32]);
        b
    }

    #[test]
    fn parses_a_quote() {
        let bytes = sample();
        assert_eq!(bytes.len(), 145);
        let a = Attest::parse(&bytes).unwrap();
        assert_eq!(a.qualified_signer.len(), 34);
        assert_eq!(a.extra_data, vec![0x22; 32]);
        assert_eq!(a.clock, ClockInfo { clock: 1234, reset_count: 2, restart_count: 0, safe: true });
        assert_eq!(a.firmware_version, 0x2019_1023_0016_3636);
        assert_eq!(a.pcr_select.len(), 1);
        assert_eq!(a.pcr_select[0].hash_alg, ALG_SHA256);
        assert_eq!(a.pcr_select[0].pcrs(), vec![0, 1, 2, 3, 4, 5, 6, 7, 23]);
        assert!(a.pcr_select[0].contains(23) && !a.pcr_select[0].contains(8) && !a.pcr_select[0].contains(200));
        assert_eq!(a.pcr_digest, vec![0x33; 32]);
    }

    #[test]
    fn rejects_bad_fields() {
        let good = sample();
        let with = |offset: usize, value: u8| {
            let mut b = good.clone();
            b[offset] = value;
            Attest::parse(&b)
        };
        assert_eq!(with(0, 0), Err(TpmError::BadMagic(0x0054_4347)));
        assert_eq!(with(5, 0x17), Err(TpmError::NotAQuote(0x8017)));
        assert!(matches!(with(7, 69), Err(TpmError::TooLarge { what: "TPMS_ATTEST.qualifiedSigner", .. })));
        assert!(matches!(with(43, 65), Err(TpmError::TooLarge { what: "TPMS_ATTEST.extraData", .. })));
        assert_eq!(with(92, 2), Err(TpmError::BadBool(2)));
        assert_eq!(with(104, 17), Err(TpmError::TooManyBanks(17)));
        assert_eq!(with(107, 2), Err(TpmError::BadSizeofSelect(2)));
        assert_eq!(with(107, 5), Err(TpmError::BadSizeofSelect(5)));
        let mut long = good.clone();
        long.push(0);
        assert_eq!(Attest::parse(&long), Err(TpmError::TrailingBytes { what: "TPMS_ATTEST", count: 1 }));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let good = sample();
        for len in 0..good.len() {
            assert!(matches!(Attest::parse(&good[..len]), Err(TpmError::Truncated { .. })), "length {len}");
        }
    }

    #[test]
    fn four_byte_bitmaps_are_accepted() {
        let mut b = sample();
        b[107] = 4;
        b.insert(111, 0x01);
        let a = Attest::parse(&b).unwrap();
        assert_eq!(a.pcr_select[0].pcrs(), vec![0, 1, 2, 3, 4, 5, 6, 7, 23, 24]);
    }
}
