//! What the fuzz targets (and the seed generator) share.
//!
//! - A software attestation key: a fixed P-256 key whose TPMT_PUBLIC looks
//!   like the daemon's AK (restricted, fixedTPM, ECDSA-SHA256) and whose
//!   SHA-256 [`trust`] pins, so the fuzzer can sign quotes the verifier's
//!   `signature` check accepts and reach every check after it.
//! - TPM marshalling of a TPMS_ATTEST quote ([`Quote`]) and a TPMT_SIGNATURE.
//! - [`Scenario`]: a structure-aware description of one request's evidence
//!   (launch record, other zones' events, PCRs, batch, tweaks). [`Scenario::build`]
//!   turns it into evidence bytes and also says what the verifier must answer:
//!   genuine evidence must verify, evidence we know to be forged must be
//!   rejected ([`Expect`]).

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use attestation_proto::eventlog::{
    self, EV_EVENT_TAG, Event, LAUNCH_TAG_LEN, Limits, TAG_REDACTED, TAG_ZONE_LAUNCH, TAG_ZONE_STOP, ZoneEvent, launch_tag, zone_digest,
};
use attestation_proto::evidence::{self, Checkpoint, Evidence, FORMAT_VERSION, MAX_NONCE_LEN, MIN_NONCE_LEN, MerkleProof, PcrValue};
use attestation_proto::launch::{Artifact, CheckpointRecord, LaunchRecord, RECORD_VERSION, StopRecord, sha256_hex};
use attestation_proto::merkle;
use attestation_proto::policy::Policy;
use attestation_proto::tpm::{ALG_SHA256, Attest, PublicArea, TPM_RH_ENDORSEMENT, pcr_digest, qualified_name_of_child, qualified_name_of_primary};
use attestation_proto::verify::{self, Trust, Verified};
use p256::ecdsa::SigningKey;
use sha2::{Digest, Sha256};

/// TPMA_OBJECT of the daemon's AK: fixedTPM, fixedParent, sensitiveDataOrigin,
/// userWithAuth, restricted, sign.
pub const AK_ATTRIBUTES: u32 = 0x0005_0072;
/// TPM_GENERATED_VALUE.
const MAGIC: u32 = 0xff54_4347;
/// TPM_ST_ATTEST_QUOTE.
const ST_ATTEST_QUOTE: u16 = 0x8018;
/// Most other events and batch leaves a scenario uses (keeps one run fast).
const MAX_ITEMS: usize = 64;

/// The software AK (a fixed scalar; [`sign`] is deterministic).
pub fn ak_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::from_bytes(&[0x42; 32].into()).expect("0x42… is a valid P-256 scalar"))
}

fn put_tpm2b(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// TPMT_PUBLIC of an ECC P-256 ECDSA-SHA256 key with `attributes`.
pub fn ecc_public(key: &SigningKey, attributes: u32) -> Vec<u8> {
    let point = key.verifying_key().to_encoded_point(false);
    let mut b = Vec::with_capacity(88);
    b.extend_from_slice(&0x0023u16.to_be_bytes()); // TPM_ALG_ECC
    b.extend_from_slice(&ALG_SHA256.to_be_bytes()); // nameAlg
    b.extend_from_slice(&attributes.to_be_bytes());
    put_tpm2b(&mut b, &[]); // authPolicy
    b.extend_from_slice(&0x0010u16.to_be_bytes()); // symmetric: NULL
    b.extend_from_slice(&0x0018u16.to_be_bytes()); // scheme: ECDSA
    b.extend_from_slice(&ALG_SHA256.to_be_bytes()); // scheme hash
    b.extend_from_slice(&0x0003u16.to_be_bytes()); // curve: NIST P-256
    b.extend_from_slice(&0x0010u16.to_be_bytes()); // kdf: NULL
    put_tpm2b(&mut b, point.x().map_or(&[][..], |x| &x[..]));
    put_tpm2b(&mut b, point.y().map_or(&[][..], |y| &y[..]));
    b
}

/// The AK's TPMT_PUBLIC.
pub fn ak_public() -> Vec<u8> {
    ecc_public(ak_key(), AK_ATTRIBUTES)
}

/// An EK-like TPMT_PUBLIC: RSA 2048 restricted decryption key with
/// AES-128-CFB, a 32-byte policy and a fixed modulus.
pub fn ek_public() -> Vec<u8> {
    let mut b = Vec::with_capacity(314);
    b.extend_from_slice(&0x0001u16.to_be_bytes()); // TPM_ALG_RSA
    b.extend_from_slice(&ALG_SHA256.to_be_bytes());
    b.extend_from_slice(&0x0003_00b2u32.to_be_bytes()); // fixedTPM|fixedParent|sensitiveDataOrigin|adminWithPolicy|restricted|decrypt
    put_tpm2b(&mut b, &[0x83; 32]);
    b.extend_from_slice(&[0x00, 0x06, 0x00, 0x80, 0x00, 0x43]); // AES-128-CFB
    b.extend_from_slice(&0x0010u16.to_be_bytes()); // scheme: NULL
    b.extend_from_slice(&2048u16.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes()); // exponent: 65537
    put_tpm2b(&mut b, &[0xc5; 256]);
    b
}

/// The host generated records name unless they name one.
pub const HOST: &str = "host";

/// What the verifier trusts in every target: the software AK, for [`HOST`].
pub fn trust() -> Trust {
    Trust::default().with(HOST, verify::ak_digest(&ak_public()))
}

/// A redacted event: `tag`'s record of launch `launch_id` withheld, its
/// digest `record_sha256` kept.
pub fn redacted_event(pcr: u32, tag: u32, launch_id: &str, record_sha256: [u8; 32]) -> Event {
    let lt = launch_tag(launch_id);
    let mut data = Vec::with_capacity(8 + 4 + LAUNCH_TAG_LEN + 32);
    data.extend_from_slice(&TAG_REDACTED.to_le_bytes());
    data.extend_from_slice(&u32::try_from(4 + LAUNCH_TAG_LEN + 32).unwrap_or(0).to_le_bytes());
    data.extend_from_slice(&tag.to_le_bytes());
    data.extend_from_slice(&lt);
    data.extend_from_slice(&record_sha256);
    Event { pcr, event_type: EV_EVENT_TAG, digest: zone_digest(tag, &lt, &record_sha256), data }
}

/// A tagged event with any tag and payload; its digest is the one a zone
/// event with that data must have, or SHA-256 of the data for others.
pub fn tagged_event(pcr: u32, tag: u32, payload: &[u8]) -> Event {
    let mut data = Vec::with_capacity(8 + payload.len());
    data.extend_from_slice(&tag.to_le_bytes());
    data.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_le_bytes());
    data.extend_from_slice(payload);
    let mut e = Event { pcr, event_type: EV_EVENT_TAG, digest: Sha256::digest(&data).into(), data };
    if let Some(z) = e.zone_event() {
        e.digest = z.digest();
    }
    e
}

/// The Qualified Name a quote by the AK `ak` under the EK `ek` carries.
pub fn qualified_signer(ek: &[u8], ak: &[u8]) -> Vec<u8> {
    let name = |raw: &[u8]| PublicArea::parse(raw).map(|p| p.name()).unwrap_or_default();
    qualified_name_of_child(&qualified_name_of_primary(TPM_RH_ENDORSEMENT, &name(ek)), &name(ak))
}

/// The software AK's ECDSA signature over SHA-256(`message`).
///
/// Every signature uses the same per-signature secret k, so signing costs no
/// scalar multiplication (r = x(k·G) is computed once): fatal for a real key,
/// harmless for this public test key, and it keeps the signed target fast.
/// The verifier checks these like any other ECDSA signature.
pub fn sign(message: &[u8]) -> p256::ecdsa::Signature {
    use p256::elliptic_curve::ops::Reduce;
    use p256::elliptic_curve::point::AffineCoordinates;
    use p256::{ProjectivePoint, Scalar, U256};
    static FIXED: OnceLock<(Scalar, Scalar)> = OnceLock::new();
    let (r, k_inv) = *FIXED.get_or_init(|| {
        let k = Scalar::from(0x7a6f_6e65_u64);
        let x = (ProjectivePoint::GENERATOR * k).to_affine().x();
        (<Scalar as Reduce<U256>>::reduce_bytes(&x), Option::<Scalar>::from(k.invert()).expect("k is not zero"))
    });
    let z = <Scalar as Reduce<U256>>::reduce_bytes(&Sha256::digest(message));
    let d: Scalar = *ak_key().as_nonzero_scalar().as_ref();
    let s = k_inv * (z + r * d);
    p256::ecdsa::Signature::from_scalars(r.to_bytes(), s.to_bytes()).expect("r and s are not zero (but with negligible odds)")
}

/// The same signature with s replaced by n − s (TPMs produce either).
pub fn flip_s(sig: &p256::ecdsa::Signature) -> p256::ecdsa::Signature {
    let neg = -*sig.s();
    p256::ecdsa::Signature::from_scalars(sig.r().to_bytes(), neg.to_bytes()).unwrap_or(*sig)
}

/// TPMT_SIGNATURE (ECDSA, SHA-256) of `r` and `s` as given (big-endian).
pub fn marshal_signature(r: &[u8], s: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(72);
    b.extend_from_slice(&0x0018u16.to_be_bytes());
    b.extend_from_slice(&ALG_SHA256.to_be_bytes());
    put_tpm2b(&mut b, r);
    put_tpm2b(&mut b, s);
    b
}

/// TPMT_SIGNATURE of `sig`; `trim` drops leading zero bytes of r and s
/// (a TPM may send them shorter; the verifier pads them back).
pub fn signature_bytes(sig: &p256::ecdsa::Signature, trim: bool) -> Vec<u8> {
    let bytes = sig.to_bytes();
    let (r, s) = bytes.split_at(32);
    let strip = |x: &[u8]| -> Vec<u8> {
        if !trim {
            return x.to_vec();
        }
        let first = x.iter().position(|&b| b != 0).unwrap_or(x.len() - 1);
        x[first..].to_vec()
    };
    marshal_signature(&strip(r), &strip(s))
}

/// A TPMS_ATTEST of type quote, field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// TPM2B_NAME qualifiedSigner.
    pub qualified_signer: Vec<u8>,
    /// TPM2B_DATA extraData.
    pub extra_data: Vec<u8>,
    /// clockInfo.clock.
    pub clock: u64,
    /// clockInfo.resetCount.
    pub reset_count: u32,
    /// clockInfo.restartCount.
    pub restart_count: u32,
    /// clockInfo.safe (a TPMI_YES_NO byte, marshalled as given).
    pub safe: u8,
    /// firmwareVersion.
    pub firmware_version: u64,
    /// TPML_PCR_SELECTION: (hash, bitmap) per bank.
    pub banks: Vec<(u16, Vec<u8>)>,
    /// TPM2B_DIGEST pcrDigest.
    pub pcr_digest: Vec<u8>,
}

impl Quote {
    /// The fields of a parsed quote.
    pub fn of(a: &Attest) -> Self {
        Self {
            qualified_signer: a.qualified_signer.clone(),
            extra_data: a.extra_data.clone(),
            clock: a.clock.clock,
            reset_count: a.clock.reset_count,
            restart_count: a.clock.restart_count,
            safe: u8::from(a.clock.safe),
            firmware_version: a.firmware_version,
            banks: a.pcr_select.iter().map(|s| (s.hash_alg, s.bitmap.clone())).collect(),
            pcr_digest: a.pcr_digest.clone(),
        }
    }

    /// TPM marshalling (big-endian, no TPM2B_ATTEST size prefix).
    pub fn marshal(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(160);
        b.extend_from_slice(&MAGIC.to_be_bytes());
        b.extend_from_slice(&ST_ATTEST_QUOTE.to_be_bytes());
        put_tpm2b(&mut b, &self.qualified_signer);
        put_tpm2b(&mut b, &self.extra_data);
        b.extend_from_slice(&self.clock.to_be_bytes());
        b.extend_from_slice(&self.reset_count.to_be_bytes());
        b.extend_from_slice(&self.restart_count.to_be_bytes());
        b.push(self.safe);
        b.extend_from_slice(&self.firmware_version.to_be_bytes());
        b.extend_from_slice(&u32::try_from(self.banks.len()).unwrap_or(u32::MAX).to_be_bytes());
        for (alg, bitmap) in &self.banks {
            b.extend_from_slice(&alg.to_be_bytes());
            b.push(u8::try_from(bitmap.len()).unwrap_or(u8::MAX));
            b.extend_from_slice(bitmap);
        }
        put_tpm2b(&mut b, &self.pcr_digest);
        b
    }
}

/// The fields of a launch record (empty names get a default, so most
/// generated records are valid; [`Tweak::RawRecord`] covers invalid ones).
#[derive(Arbitrary, Debug, Clone)]
pub struct RecordSpec {
    /// host.
    pub host: String,
    /// zone.
    pub zone: String,
    /// launch_id.
    pub launch_id: String,
    /// kernel path, size and the bytes whose SHA-256 is its digest.
    pub kernel: (String, u64, [u8; 8]),
    /// initrd, likewise.
    pub initrd: Option<(String, u64, [u8; 8])>,
    /// cmdline.
    pub cmdline: String,
    /// vcpus.
    pub vcpus: u32,
    /// memory_mib.
    pub memory_mib: u64,
    /// devices.
    pub devices: Vec<String>,
    /// launched_unix_ms.
    pub launched_unix_ms: u64,
}

fn or_default(s: &str, default: &str) -> String {
    if s.is_empty() { default.to_owned() } else { s.to_owned() }
}

impl RecordSpec {
    /// The launch record.
    pub fn record(&self) -> LaunchRecord {
        let artifact = |(path, size, bytes): &(String, u64, [u8; 8])| Artifact { path: path.clone(), size: *size, sha256: sha256_hex(bytes) };
        LaunchRecord {
            version: RECORD_VERSION,
            host: or_default(&self.host, "host"),
            zone: or_default(&self.zone, "zone"),
            launch_id: or_default(&self.launch_id, "00112233445566778899aabbccddeeff"),
            kernel: artifact(&self.kernel),
            initrd: self.initrd.as_ref().map(artifact),
            cmdline_sha256: sha256_hex(self.cmdline.as_bytes()),
            cmdline: self.cmdline.clone(),
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            devices: self.devices.clone(),
            launched_unix_ms: self.launched_unix_ms,
            rootfs: None,
        }
    }
}

/// Another event of the log besides the zone's own launch.
#[derive(Arbitrary, Debug, Clone)]
pub enum EventSpec {
    /// Another zone's event, data withheld.
    Redacted {
        /// Whether it was a stop (else a launch).
        stop: bool,
        /// The launch it belongs to (the zone's own launch id makes it a forgery).
        launch_id: String,
        /// SHA-256 of the withheld record.
        record_sha256: [u8; 32],
    },
    /// Another launch (the zone's record with another name and launch id).
    OtherLaunch {
        /// Its zone name.
        zone: String,
        /// Its launch id.
        launch_id: String,
        /// Whether its data is withheld.
        redact: bool,
    },
    /// A stop record.
    Stop {
        /// zone.
        zone: String,
        /// launch_id (the zone's own launch id stops the zone).
        launch_id: String,
        /// reason.
        reason: String,
        /// stopped_unix_ms.
        stopped_unix_ms: u64,
    },
    /// Any event at all.
    Raw {
        /// PCR (mod 24).
        pcr: u8,
        /// Whether `pcr` is used as is rather than the zone PCR.
        other_pcr: bool,
        /// Event type.
        event_type: u32,
        /// The digest; SHA-256 of the data when `None`.
        digest: Option<[u8; 32]>,
        /// Data.
        data: Vec<u8>,
    },
    /// A tagged event with any tag and payload.
    Tagged {
        /// taggedEventID.
        tag: u32,
        /// Payload.
        payload: Vec<u8>,
    },
}

/// What a forged or broken checkpoint gets wrong.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFault {
    /// Its quote's qualifying data is not the label over the event.
    QualifyingData,
    /// Its quote is later than the evidence's.
    Later,
    /// Its quote is of another TPM boot.
    OtherResetCount,
    /// ... or another restart.
    OtherRestartCount,
    /// `pcr_before` is not the value before the checkpoint event.
    PcrBefore,
    /// Its quote's signature is over other bytes.
    Signature,
    /// Its quote selects another PCR as well.
    Selection,
    /// The checkpoint event names another PCR.
    EventPcr,
    /// The evidence leaves out the zone's live-set proof although its launch is before the checkpoint.
    ForgetOurs,
    /// The zone's live-set proof is for another leaf.
    WrongProof,
}

/// The log starts after a checkpoint: events before `at` are summarized by it.
#[derive(Arbitrary, Debug, Clone)]
pub struct CheckpointSpec {
    /// How many of the log's events come before the checkpoint (mod len + 1).
    pub at: u8,
    /// Its sequence number.
    pub seq: u64,
    /// How much earlier than the evidence's quote it was quoted.
    pub clock_before: u32,
    /// What it gets wrong, if anything.
    pub fault: Option<CheckpointFault>,
}

/// A change to the genuine evidence.
#[derive(Arbitrary, Debug, Clone)]
pub enum Tweak {
    /// The AK is trusted for another host than the record names.
    TrustOtherHost,
    /// The evidence carries these bytes as the EK certificate.
    EkCertificate(Vec<u8>),
    /// A stop record of this launch follows it.
    StopOurs {
        /// reason.
        reason: String,
    },
    /// The zone's launch event is left out.
    OmitOurs,
    /// The zone's launch event appears twice.
    DuplicateOurs,
    /// The zone's launch event is redacted.
    RedactOurs,
    /// A byte of the zone's launch event data is changed (digest kept).
    TamperOurs {
        /// Which byte.
        at: u16,
        /// XOR mask (0 counts as 1).
        xor: u8,
    },
    /// The launch record in the evidence is replaced by these bytes
    /// (its launch event and the nonce binding use them too).
    RawRecord(Vec<u8>),
    /// The evidence carries another launch record that is in the log too,
    /// while the quote committed to the zone's own.
    SwapRecord,
    /// A PCR value is changed after the quote.
    FlipPcrValue {
        /// Which value.
        which: u8,
        /// XOR mask (0 counts as 1).
        xor: u8,
    },
    /// The PCR values are these instead.
    PcrValues(Vec<(u32, Vec<u8>)>),
    /// The quote's selection is these banks instead.
    Banks(Vec<(u16, Vec<u8>)>),
    /// The quote's qualifiedSigner is these bytes.
    QualifiedSigner(Vec<u8>),
    /// The quote's extraData is these bytes.
    ExtraData(Vec<u8>),
    /// The quote's pcrDigest is these bytes.
    PcrDigest(Vec<u8>),
    /// clockInfo.safe is this byte.
    SafeByte(u8),
    /// The TPMS_ATTEST is these bytes (still signed).
    RawAttest(Vec<u8>),
    /// A byte of the TPMS_ATTEST is changed before signing.
    FlipAttest {
        /// Which byte.
        at: u16,
        /// XOR mask.
        xor: u8,
    },
    /// s is replaced by n − s (still a valid signature).
    HighS,
    /// r and s are sent without leading zero bytes.
    TrimScalars,
    /// The TPMT_SIGNATURE is these bytes.
    RawSignature(Vec<u8>),
    /// The AK has these TPMA_OBJECT bits (and is pinned).
    AkAttributes(u32),
    /// The AK is not pinned.
    UnpinAk,
    /// Another digest is pinned too.
    PinAnother([u8; 32]),
    /// The EK's TPMT_PUBLIC is these bytes.
    RawEk(Vec<u8>),
    /// The evidence's format version.
    FormatVersion(u32),
    /// The evidence's zone PCR.
    ZonePcr(u32),
    /// The proof's leaf index.
    LeafIndex(u64),
    /// The proof's tree size.
    TreeSize(u64),
    /// The proof's hashes.
    Siblings(Vec<Vec<u8>>),
    /// The verifier is asked with the nonce changed at one byte.
    OtherNonce {
        /// Which byte.
        at: u8,
        /// XOR mask (0 counts as 1).
        xor: u8,
    },
    /// The verifier is asked with the nonce repeated or cut to this length (mod 80).
    NonceLen(u8),
    /// The policy admits another kernel only.
    PolicyOtherKernel,
    /// The policy's rule names `*` instead of the zone.
    PolicyWildcard,
    /// A byte of the event log is changed.
    FlipLog {
        /// Which byte.
        at: u16,
        /// XOR mask.
        xor: u8,
    },
    /// The event log is cut to this length.
    TruncateLog(u16),
    /// A byte of the encoded evidence is changed.
    FlipEvidence {
        /// Which byte.
        at: u16,
        /// XOR mask.
        xor: u8,
    },
    /// Bytes are appended to the encoded evidence (protobuf merges them).
    AppendEvidence(Vec<u8>),
}

/// One request's evidence, described by its parts.
#[derive(Arbitrary, Debug, Clone)]
pub struct Scenario {
    /// The nonce's bytes; its length is 8 + `nonce_len` mod 57.
    pub nonce: [u8; 64],
    /// See `nonce`.
    pub nonce_len: u8,
    /// The zone's launch record.
    pub record: RecordSpec,
    /// The zone PCR: 8 + this mod 8.
    pub zone_pcr: u8,
    /// Other PCRs the quote covers (bits 0..=23).
    pub pcr_mask: u32,
    /// Their values, in turn.
    pub pcr_values: Vec<[u8; 32]>,
    /// Other leaves of the batch.
    pub leaves: Vec<[u8; 32]>,
    /// Where the zone's leaf goes among them.
    pub leaf_at: u8,
    /// clockInfo.clock, resetCount, restartCount, safe.
    pub clock: (u64, u32, u32, bool),
    /// firmwareVersion.
    pub firmware_version: u64,
    /// Other events of the log.
    pub events: Vec<EventSpec>,
    /// Where the zone's launch event goes among them.
    pub ours_at: u8,
    /// Changes to the genuine evidence.
    pub tweaks: Vec<Tweak>,
    /// The log starts after a checkpoint.
    pub checkpoint: Option<CheckpointSpec>,
}

/// What the verifier must answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Genuine evidence: it must verify.
    Verify,
    /// Known-bad evidence (the reason): it must be rejected.
    Reject(&'static str),
    /// Either answer is acceptable.
    Any,
}

/// A built scenario: the verifier's inputs and the expected answer.
#[derive(Debug, Clone)]
pub struct Built {
    /// Evidence bytes.
    pub evidence: Vec<u8>,
    /// The nonce the verifier is asked about.
    pub nonce: Vec<u8>,
    /// Trust.
    pub trust: Trust,
    /// Policy.
    pub policy: Policy,
    /// The zone's launch record.
    pub record: LaunchRecord,
    /// The zone PCR.
    pub zone_pcr: u32,
    /// Events in the log.
    pub events: usize,
    /// Leaves in the batch.
    pub batch_size: u64,
    /// resetCount.
    pub reset_count: u32,
    /// The expected answer.
    pub expect: Expect,
}

/// A 3-byte PCR selection bitmap of `pcrs` (0..=23).
fn pcr_bitmap(pcrs: &[u32]) -> Vec<u8> {
    let mut bitmap = vec![0u8; 3];
    for &p in pcrs {
        bitmap[(p / 8) as usize] |= 1 << (p % 8);
    }
    bitmap
}

fn nonzero(x: u8) -> u8 {
    if x == 0 { 1 } else { x }
}

/// What must happen to evidence whose log holds `events` (the zone's launch
/// record is `ours`, of launch `launch_id`; `live_at_checkpoint`: the
/// checkpoint lists it), by the rules the verifier documents.
fn classify_events(events: &[Event], zone_pcr: u32, ours: &[u8], launch_id: &str, live_at_checkpoint: bool) -> Option<&'static str> {
    let limits = Limits::default();
    let own_tag = launch_tag(launch_id);
    for e in events {
        if e.data.len() > limits.max_event_data {
            return Some("event data over the size limit");
        }
        if e.pcr != zone_pcr {
            return Some("an event extends another PCR");
        }
    }
    let mut zone = Vec::new();
    for e in events {
        match e.zone_event() {
            None => return Some("an event the verifier does not understand"),
            Some(_) if !e.digest_matches_data() => return Some("an event whose digest is not its data's"),
            Some(z) => zone.push(z),
        }
    }
    let mut launches = 0;
    for z in &zone {
        match *z {
            ZoneEvent::Launch { launch_tag, record } if record == ours => {
                if launch_tag != own_tag {
                    return Some("the zone's launch event carries another launch's tag");
                }
                launches += 1;
            }
            ZoneEvent::Checkpoint { .. } => return Some("a checkpoint event inside the log"),
            _ => {}
        }
    }
    if !matches!((launches, live_at_checkpoint), (1, false) | (0, true)) {
        return Some("the launch event is missing or repeated");
    }
    for z in &zone {
        match *z {
            ZoneEvent::Stop { launch_tag: lt, record } => match StopRecord::decode(record) {
                Err(_) => return Some("an unreadable stop record"),
                Ok(s) if launch_tag(&s.launch_id) != lt => return Some("a stop event carries another launch's tag"),
                Ok(s) if s.launch_id == launch_id => return Some("the launch was stopped"),
                Ok(_) => {}
            },
            ZoneEvent::Redacted { launch_tag, .. } if launch_tag == own_tag => return Some("the zone's own event is withheld"),
            _ => {}
        }
    }
    None
}

/// The live set an honest daemon has after `before`: the sorted record
/// digests of launches logged and not stopped.
fn live_after(before: &[Event]) -> Vec<[u8; 32]> {
    let mut live: Vec<([u8; LAUNCH_TAG_LEN], [u8; 32])> = Vec::new();
    for e in before {
        match e.zone_event() {
            Some(ZoneEvent::Launch { launch_tag, record }) => live.push((launch_tag, Sha256::digest(record).into())),
            Some(ZoneEvent::Stop { launch_tag, .. }) => live.retain(|(t, _)| *t != launch_tag),
            Some(ZoneEvent::Redacted { tag, launch_tag, record_sha256 }) => {
                if tag == TAG_ZONE_STOP {
                    live.retain(|(t, _)| *t != launch_tag);
                } else {
                    live.push((launch_tag, record_sha256));
                }
            }
            _ => {}
        }
    }
    let mut digests: Vec<[u8; 32]> = live.into_iter().map(|(_, d)| d).collect();
    digests.sort_unstable();
    digests.dedup();
    digests
}

impl Scenario {
    /// Builds the evidence and says what the verifier must answer.
    pub fn build(&self) -> Built {
        let mut bad: Option<&'static str> = None;
        let mut any = false;
        let mut mark = |why: &'static str| {
            bad.get_or_insert(why);
        };
        let tweaks = &self.tweaks;

        let nonce_len = MIN_NONCE_LEN + usize::from(self.nonce_len) % (MAX_NONCE_LEN - MIN_NONCE_LEN + 1);
        let nonce = self.nonce[..nonce_len].to_vec();
        let record = self.record.record();
        let mut record_bytes = record.encode();
        for t in tweaks {
            if let Tweak::RawRecord(raw) = t {
                record_bytes.clone_from(raw);
                any = true;
            }
        }
        // The record the verifier reads back (the policy is about it).
        let decoded = LaunchRecord::decode(&record_bytes);
        if decoded.is_err() {
            mark("the launch record does not decode");
        }
        let subject = decoded.as_ref().unwrap_or(&record).clone();
        let zone_pcr = 8 + u32::from(self.zone_pcr % 8);

        // The event log.
        let mut events: Vec<Event> = Vec::new();
        for spec in self.events.iter().take(MAX_ITEMS) {
            events.push(match spec {
                EventSpec::Redacted { stop, launch_id, record_sha256 } => {
                    let tag = if *stop { TAG_ZONE_STOP } else { TAG_ZONE_LAUNCH };
                    redacted_event(zone_pcr, tag, &or_default(launch_id, "ffeeddccbbaa99887766554433221100"), *record_sha256)
                }
                EventSpec::OtherLaunch { zone, launch_id, redact } => {
                    let mut other = record.clone();
                    other.zone = or_default(zone, "other");
                    other.launch_id = or_default(launch_id, "ffeeddccbbaa99887766554433221100");
                    let e = Event::zone(zone_pcr, TAG_ZONE_LAUNCH, &other.launch_id, &other.encode());
                    if *redact { e.redacted() } else { e }
                }
                EventSpec::Stop { zone, launch_id, reason, stopped_unix_ms } => {
                    let stop = StopRecord {
                        version: RECORD_VERSION,
                        zone: zone.clone(),
                        launch_id: launch_id.clone(),
                        reason: reason.clone(),
                        stopped_unix_ms: *stopped_unix_ms,
                    };
                    Event::zone(zone_pcr, TAG_ZONE_STOP, launch_id, &stop.encode())
                }
                EventSpec::Raw { pcr, other_pcr, event_type, digest, data } => Event {
                    pcr: if *other_pcr { u32::from(*pcr % 24) } else { zone_pcr },
                    event_type: *event_type,
                    digest: digest.unwrap_or_else(|| Sha256::digest(data).into()),
                    data: data.clone(),
                },
                EventSpec::Tagged { tag, payload } => tagged_event(zone_pcr, *tag, payload),
            });
        }
        let ours = Event::zone(zone_pcr, TAG_ZONE_LAUNCH, &subject.launch_id, &record_bytes);
        events.insert(usize::from(self.ours_at) % (events.len() + 1), ours.clone());
        let mut swapped: Option<Vec<u8>> = None;
        for t in tweaks {
            match t {
                Tweak::StopOurs { reason } => {
                    let stop = StopRecord {
                        version: RECORD_VERSION,
                        zone: subject.zone.clone(),
                        launch_id: subject.launch_id.clone(),
                        reason: reason.clone(),
                        stopped_unix_ms: 1,
                    };
                    events.push(Event::zone(zone_pcr, TAG_ZONE_STOP, &subject.launch_id, &stop.encode()));
                }
                Tweak::OmitOurs => events.retain(|e| *e != ours),
                Tweak::DuplicateOurs => events.push(ours.clone()),
                Tweak::RedactOurs => {
                    for e in events.iter_mut().filter(|e| **e == ours) {
                        *e = ours.redacted();
                    }
                }
                Tweak::TamperOurs { at, xor } => {
                    if let Some(e) = events.iter_mut().find(|e| **e == ours) {
                        let i = usize::from(*at) % e.data.len(); // a tagged event has 8 bytes or more
                        e.data[i] ^= nonzero(*xor);
                    }
                }
                Tweak::SwapRecord => {
                    let mut other = subject.clone();
                    other.zone.push_str("-swapped");
                    let bytes = other.encode();
                    events.push(Event::zone(zone_pcr, TAG_ZONE_LAUNCH, &other.launch_id, &bytes));
                    swapped = Some(bytes);
                    mark("the evidence's launch record is not the one the quote commits to");
                }
                _ => {}
            }
        }
        // A checkpoint summarizes the events before it; the log holds the rest.
        let mut cp_state: Option<(CheckpointSpec, Event, [u8; 32], Option<MerkleProof>)> = None;
        let mut live_at_checkpoint = false;
        if let Some(spec) = &self.checkpoint {
            let at = usize::from(spec.at) % (events.len() + 1);
            let after = events.split_off(at);
            let before = std::mem::replace(&mut events, after);
            let live = live_after(&before);
            let rec = CheckpointRecord::new(spec.seq.max(1), before.len() as u64, &live);
            let cp_pcr = if spec.fault == Some(CheckpointFault::EventPcr) { zone_pcr ^ 1 } else { zone_pcr };
            let cp_event = Event::checkpoint(cp_pcr, &rec.encode());
            let pcr_before = eventlog::replay(&before, zone_pcr);
            // The zone's proof, when its record is in the live set.
            let own: [u8; 32] = Sha256::digest(&record_bytes).into();
            let leaves = CheckpointRecord::live_leaves(&live);
            let mut proof = live.binary_search(&own).ok().map(|i| MerkleProof {
                leaf_index: i as u64,
                tree_size: leaves.len() as u64,
                siblings: merkle::inclusion_proof(&leaves, i).unwrap_or_default().iter().map(|h| h.to_vec()).collect(),
            });
            match spec.fault {
                Some(CheckpointFault::ForgetOurs) => {
                    if proof.take().is_none() {
                        any = true; // nothing to forget
                    }
                }
                Some(CheckpointFault::WrongProof) => match proof.as_mut() {
                    Some(p) if p.tree_size > 1 => {
                        p.leaf_index = (p.leaf_index + 1) % p.tree_size;
                        mark("the live-set proof is for another leaf");
                    }
                    Some(p) => {
                        p.siblings.push(vec![0; 32]);
                        mark("the live-set proof is too long");
                    }
                    None => any = true,
                },
                Some(_) => mark("the checkpoint is forged or broken"),
                None => {}
            }
            live_at_checkpoint = proof.is_some() && !matches!(spec.fault, Some(CheckpointFault::WrongProof));
            if before.iter().any(|e| e.pcr != zone_pcr || e.zone_event().is_none_or(|z| z.digest() != e.digest)) {
                any = true; // the honest daemon never checkpoints over such events
            }
            cp_state = Some((spec.clone(), cp_event, pcr_before, proof));
        }
        if let Some(why) = classify_events(&events, zone_pcr, &record_bytes, &subject.launch_id, live_at_checkpoint) {
            mark(why);
        }
        let start_value = cp_state.as_ref().map_or([0u8; 32], |(_, e, before, _)| eventlog::extend(before, &e.digest));
        let mut event_log = eventlog::encode(&events);
        if event_log.len() > verify::MAX_EVENT_LOG || events.len() > verify::MAX_EVENTS {
            mark("event log over the size limit");
        }
        for t in tweaks {
            match t {
                Tweak::FlipLog { at, xor } => {
                    let i = usize::from(*at) % event_log.len();
                    event_log[i] ^= xor;
                    any = true;
                }
                Tweak::TruncateLog(len) => {
                    event_log.truncate(usize::from(*len));
                    any = true;
                }
                _ => {}
            }
        }

        // PCRs: the zone PCR replays the log; the others are given values.
        let selected: Vec<u32> = (0..24).filter(|&p| p == zone_pcr || self.pcr_mask & (1 << p) != 0).collect();
        let mut values: Vec<[u8; 32]> = Vec::with_capacity(selected.len());
        let mut others = self.pcr_values.iter().cycle();
        for &p in &selected {
            values.push(if p == zone_pcr {
                eventlog::replay_from(start_value, &events, zone_pcr)
            } else {
                others.next().copied().unwrap_or_else(|| Sha256::digest(p.to_be_bytes()).into())
            });
        }
        let bitmap = pcr_bitmap(&selected);
        let digest = pcr_digest(&values);
        let mut pcrs: Vec<PcrValue> = selected.iter().zip(&values).map(|(&index, v)| PcrValue { index, sha256: v.to_vec() }).collect();

        // The batch: the zone's leaf among the others.
        let leaf = evidence::leaf(&nonce, &record_bytes).unwrap_or_default();
        let mut leaves: Vec<[u8; 32]> = self.leaves.iter().take(MAX_ITEMS - 1).copied().collect();
        let leaf_at = usize::from(self.leaf_at) % (leaves.len() + 1);
        leaves.insert(leaf_at, leaf);
        let root = merkle::root(&leaves).unwrap_or_default();
        let siblings = merkle::inclusion_proof(&leaves, leaf_at).unwrap_or_default();
        let mut batch = MerkleProof { leaf_index: leaf_at as u64, tree_size: leaves.len() as u64, siblings: siblings.iter().map(|s| s.to_vec()).collect() };

        // Keys.
        let mut ak = ak_public();
        let mut ek = ek_public();
        let mut trust = Trust::default();
        let mut pin = true;
        let mut host = subject.host.clone();
        for t in tweaks {
            match t {
                Tweak::AkAttributes(attributes) => ak = ecc_public(ak_key(), *attributes),
                Tweak::UnpinAk => {
                    pin = false;
                    mark("the AK is not pinned");
                }
                Tweak::PinAnother(d) => trust = trust.with(&subject.host, *d),
                Tweak::TrustOtherHost => {
                    host.push_str("-other");
                    mark("the AK is trusted for another host");
                }
                Tweak::RawEk(raw) => {
                    ek.clone_from(raw);
                    any = true;
                }
                _ => {}
            }
        }
        if !PublicArea::parse(&ak).is_ok_and(|p| p.is_restricted_signing_key()) {
            mark("the AK is not a restricted signing key");
        }
        if pin {
            trust = trust.with(&host, verify::ak_digest(&ak));
        } else {
            let d = verify::ak_digest(&ak);
            trust.aks.retain(|t| t.ak_sha256 != d);
        }

        // The quote.
        let (clock, reset_count, restart_count, safe) = self.clock;
        let mut quote = Quote {
            qualified_signer: qualified_signer(&ek, &ak),
            extra_data: root.to_vec(),
            clock,
            reset_count,
            restart_count,
            safe: u8::from(safe),
            firmware_version: self.firmware_version,
            banks: vec![(ALG_SHA256, bitmap)],
            pcr_digest: digest.to_vec(),
        };
        let honest = quote.clone();
        for t in tweaks {
            match t {
                Tweak::Banks(banks) => {
                    quote.banks.clone_from(banks);
                    any = true;
                }
                Tweak::QualifiedSigner(qs) => quote.qualified_signer.clone_from(qs),
                Tweak::ExtraData(d) => quote.extra_data.clone_from(d),
                Tweak::PcrDigest(d) => quote.pcr_digest.clone_from(d),
                Tweak::SafeByte(b) => quote.safe = *b,
                _ => {}
            }
        }
        if quote.qualified_signer != honest.qualified_signer {
            mark("the quote names another signer");
        }
        if quote.extra_data != honest.extra_data {
            mark("the quote commits to another batch");
        }
        if quote.pcr_digest != honest.pcr_digest {
            mark("the quote signs other PCR values");
        }
        if quote.safe > 1 {
            mark("clockInfo.safe is not a TPMI_YES_NO");
        }
        let mut attest = quote.marshal();
        for t in tweaks {
            match t {
                Tweak::RawAttest(raw) => {
                    attest.clone_from(raw);
                    any = true;
                }
                Tweak::FlipAttest { at, xor } => {
                    let i = usize::from(*at) % attest.len().max(1);
                    if let Some(b) = attest.get_mut(i) {
                        *b ^= xor;
                    }
                    any = true;
                }
                _ => {}
            }
        }
        let mut sig = sign(&attest);
        let mut trim = false;
        let mut raw_sig = None;
        for t in tweaks {
            match t {
                Tweak::HighS => sig = flip_s(&sig),
                Tweak::TrimScalars => trim = true,
                Tweak::RawSignature(raw) => {
                    raw_sig = Some(raw.clone());
                    any = true;
                }
                _ => {}
            }
        }
        let quote_signature = raw_sig.unwrap_or_else(|| signature_bytes(&sig, trim));

        // The checkpoint's own quote of the zone PCR.
        let checkpoint = cp_state.map(|(spec, event, mut pcr_before, live_proof)| {
            let value = eventlog::extend(&pcr_before, &event.digest);
            let mut q = Quote {
                qualified_signer: honest.qualified_signer.clone(),
                extra_data: evidence::checkpoint_qualifying_data(&event.digest).to_vec(),
                clock: honest.clock.saturating_sub(u64::from(spec.clock_before)),
                reset_count: honest.reset_count,
                restart_count: honest.restart_count,
                safe: 1,
                firmware_version: honest.firmware_version,
                banks: vec![(ALG_SHA256, pcr_bitmap(&[zone_pcr]))],
                pcr_digest: pcr_digest(&[value]).to_vec(),
            };
            match spec.fault {
                Some(CheckpointFault::QualifyingData) => q.extra_data[0] ^= 1,
                Some(CheckpointFault::Later) => q.clock = honest.clock.saturating_add(1 + u64::from(spec.clock_before)),
                Some(CheckpointFault::OtherResetCount) => q.reset_count ^= 1,
                Some(CheckpointFault::OtherRestartCount) => q.restart_count ^= 1,
                Some(CheckpointFault::PcrBefore) => pcr_before[0] ^= 1,
                Some(CheckpointFault::Selection) => q.banks = vec![(ALG_SHA256, pcr_bitmap(&[zone_pcr, zone_pcr ^ 1]))],
                _ => {}
            }
            if q.clock == honest.clock && honest.clock == u64::MAX && spec.fault == Some(CheckpointFault::Later) {
                any = true; // no later clock than u64::MAX
            }
            let attest = q.marshal();
            let signed = if spec.fault == Some(CheckpointFault::Signature) { [&attest[..], b"x"].concat() } else { attest.clone() };
            Checkpoint {
                quote_attest: attest,
                quote_signature: signature_bytes(&sign(&signed), false),
                pcr_before: pcr_before.to_vec(),
                event: event.encode(),
                live_proof,
            }
        });

        // The evidence.
        let mut format_version = FORMAT_VERSION;
        let mut ev_zone_pcr = zone_pcr;
        let honest_pcrs = pcrs.clone();
        let mut pcrs_replaced = false;
        for t in tweaks {
            match t {
                Tweak::FlipPcrValue { which, xor } => {
                    let n = pcrs.len();
                    if let Some(b) = usize::from(*which).checked_rem(n).and_then(|i| pcrs[i].sha256.first_mut()) {
                        *b ^= nonzero(*xor);
                    }
                }
                Tweak::PcrValues(list) => {
                    pcrs = list.iter().map(|(index, sha256)| PcrValue { index: *index, sha256: sha256.clone() }).collect();
                    pcrs_replaced = true;
                    any = true;
                }
                Tweak::FormatVersion(v) => format_version = *v,
                Tweak::ZonePcr(p) => ev_zone_pcr = *p,
                Tweak::LeafIndex(i) => {
                    batch.leaf_index = *i;
                    any = true;
                }
                Tweak::TreeSize(n) => {
                    batch.tree_size = *n;
                    any = true;
                }
                Tweak::Siblings(s) => {
                    batch.siblings.clone_from(s);
                    any = true;
                }
                _ => {}
            }
        }
        if !pcrs_replaced && pcrs != honest_pcrs {
            mark("a PCR value is not the one quoted");
        }
        if format_version != FORMAT_VERSION {
            mark("an unknown format version");
        }
        if ev_zone_pcr != zone_pcr {
            mark("the evidence names another zone PCR");
        }
        let launch_record = swapped.unwrap_or_else(|| record_bytes.clone());
        let mut ek_certificate = Vec::new();
        for t in tweaks {
            if let Tweak::EkCertificate(c) = t {
                ek_certificate.clone_from(c);
            }
        }
        if ek_certificate.len() > verify::MAX_EK_CERTIFICATE {
            mark("the EK certificate is over the size limit");
        }
        let ev = Evidence {
            format_version,
            launch_record,
            quote_attest: attest,
            quote_signature,
            pcrs,
            event_log,
            ak_public: ak,
            ek_public: ek,
            batch: Some(batch),
            zone_pcr: ev_zone_pcr,
            checkpoint,
            ek_certificate,
        };
        let mut bytes = evidence::encode(&ev);
        for t in tweaks {
            match t {
                Tweak::FlipEvidence { at, xor } => {
                    let i = usize::from(*at) % bytes.len().max(1);
                    if let Some(b) = bytes.get_mut(i) {
                        *b ^= xor;
                    }
                    any = true;
                }
                Tweak::AppendEvidence(more) => {
                    bytes.extend_from_slice(more);
                    any = true;
                }
                _ => {}
            }
        }

        // The question.
        let mut asked = nonce.clone();
        let mut policy = Policy::admitting(&subject);
        for t in tweaks {
            match t {
                Tweak::OtherNonce { at, xor } => {
                    let i = usize::from(*at) % asked.len();
                    asked[i] ^= nonzero(*xor);
                }
                Tweak::NonceLen(len) => asked = nonce.iter().copied().cycle().take(usize::from(*len % 80)).collect(),
                Tweak::PolicyOtherKernel => {
                    for rule in &mut policy.allow {
                        rule.kernel_sha256 = vec![sha256_hex(b"another kernel")];
                    }
                    mark("the policy does not allow the kernel");
                }
                Tweak::PolicyWildcard => {
                    for rule in &mut policy.allow {
                        rule.name = "*".into();
                    }
                }
                _ => {}
            }
        }
        if asked != nonce {
            mark("the verifier's nonce is not the one the quote commits to");
        }

        let expect = match (any, bad) {
            (true, _) => Expect::Any,
            (false, Some(why)) => Expect::Reject(why),
            (false, None) => Expect::Verify,
        };
        Built {
            evidence: bytes,
            nonce: asked,
            trust,
            policy,
            record: subject,
            zone_pcr,
            events: events.len(),
            batch_size: leaves.len() as u64,
            reset_count,
            expect,
        }
    }
}

/// Checks what any successful verification must satisfy: the record proven
/// is the evidence's own, allowed by the policy, signed by a pinned AK.
pub fn check_verified(v: &Verified, evidence_bytes: &[u8], trust: &Trust, policy: &Policy) {
    let ev = evidence::decode(evidence_bytes).expect("verified evidence decodes");
    // What the verifier accepts it understands: no unknown or repeated
    // fields, nothing it would read differently from the daemon's encoding.
    assert_eq!(evidence::encode(&ev), evidence_bytes, "accepted evidence is in canonical form");
    assert_eq!(v.record.encode(), ev.launch_record, "the verified record is the evidence's");
    assert_eq!(policy.check(&v.record), Ok(()), "the verified record is allowed by the policy");
    let hosts = trust.hosts_of(&verify::ak_digest(&ev.ak_public));
    assert!(hosts.contains(&v.record.host.as_str()), "the AK is pinned for the record's host");
    assert_eq!(v.checkpoint_seq.is_some(), ev.checkpoint.is_some());
    assert_eq!(v.zone_pcr, ev.zone_pcr);
    assert!((8..=15).contains(&v.zone_pcr));
    assert!(v.events >= 1 || v.checkpoint_seq.is_some(), "a verified log holds the launch event, or starts after a checkpoint");
    let events = eventlog::parse(&ev.event_log, &Limits::default()).expect("a verified log parses");
    assert_eq!(v.events, events.len());
    assert!(events.iter().all(|e| e.event_type == EV_EVENT_TAG), "only zone events are understood");
}

/// The record of a scenario made from no bytes (all fields default).
pub fn default_scenario() -> Scenario {
    Scenario::arbitrary(&mut arbitrary::Unstructured::new(&[])).expect("arbitrary from empty input")
}

/// The fixed policy of the `verify` target: it admits [`default_scenario`]'s zone.
pub fn fixed_policy() -> Policy {
    Policy::admitting(&default_scenario().record.record())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(tweaks: Vec<Tweak>) -> Scenario {
        let mut s = default_scenario();
        s.events = vec![
            EventSpec::Redacted { stop: false, launch_id: "02".into(), record_sha256: [7; 32] },
            EventSpec::OtherLaunch { zone: "db".into(), launch_id: "01".into(), redact: false },
            EventSpec::Stop { zone: "db".into(), launch_id: "01".into(), reason: "stopped".into(), stopped_unix_ms: 5 },
        ];
        s.ours_at = 1;
        s.leaves = vec![[1; 32], [2; 32], [3; 32]];
        s.leaf_at = 2;
        s.pcr_mask = 0x80_00ff;
        s.tweaks = tweaks;
        s
    }

    fn run(s: &Scenario) -> (Expect, Result<Verified, verify::Rejection>) {
        let b = s.build();
        (b.expect.clone(), verify::verify(&b.evidence, &b.nonce, &b.trust, &b.policy))
    }

    #[test]
    fn genuine_evidence_verifies() {
        for tweaks in [vec![], vec![Tweak::HighS], vec![Tweak::TrimScalars], vec![Tweak::PolicyWildcard], vec![Tweak::PinAnother([9; 32])]] {
            let s = scenario(tweaks);
            let b = s.build();
            assert_eq!(b.expect, Expect::Verify);
            let v = verify::verify(&b.evidence, &b.nonce, &b.trust, &b.policy).unwrap();
            assert_eq!(v.record, b.record);
            assert_eq!((v.events, v.batch_size, v.zone_pcr), (4, 4, 8));
            check_verified(&v, &b.evidence, &b.trust, &b.policy);
        }
        let b = default_scenario().build();
        assert_eq!(b.expect, Expect::Verify);
        verify::verify(&b.evidence, &b.nonce, &trust(), &fixed_policy()).unwrap();
    }

    #[test]
    fn forged_evidence_is_rejected_by_its_check() {
        use verify::Check::*;
        let cases = [
            (Tweak::StopOurs { reason: "x".into() }, NotStopped),
            (Tweak::OmitOurs, LaunchRecord),
            (Tweak::DuplicateOurs, LaunchRecord),
            (Tweak::RedactOurs, LaunchRecord),
            (Tweak::TamperOurs { at: 3, xor: 1 }, EventDigest),
            (Tweak::SwapRecord, Freshness),
            (Tweak::FlipPcrValue { which: 0, xor: 1 }, PcrDigest),
            (Tweak::QualifiedSigner(vec![0; 34]), QualifiedSigner),
            (Tweak::ExtraData(vec![0; 32]), Freshness),
            (Tweak::PcrDigest(vec![0; 32]), PcrDigest),
            (Tweak::SafeByte(2), Format),
            (Tweak::AkAttributes(0x0004_0072), AkTrusted),
            (Tweak::UnpinAk, AkTrusted),
            (Tweak::FormatVersion(1), Format),
            (Tweak::TrustOtherHost, Host),
            (Tweak::EkCertificate(vec![0; 9000]), Format),
            (Tweak::ZonePcr(1), EventLogReplay),
            (Tweak::ZonePcr(9), PcrSelection),
            (Tweak::OtherNonce { at: 0, xor: 0 }, Freshness),
            (Tweak::NonceLen(7), Format),
            (Tweak::PolicyOtherKernel, Policy),
        ];
        for (tweak, check) in cases {
            let (expect, result) = run(&scenario(vec![tweak.clone()]));
            assert!(matches!(expect, Expect::Reject(_)), "{tweak:?}: {expect:?}");
            assert_eq!(result.map_err(|r| r.check).unwrap_err(), check, "{tweak:?}");
        }
    }

    fn checkpointed(at: u8, fault: Option<CheckpointFault>) -> Scenario {
        let mut s = scenario(vec![]);
        s.checkpoint = Some(CheckpointSpec { at, seq: 7, clock_before: 500, fault });
        s.clock = (10_000, 3, 1, true);
        s
    }

    #[test]
    fn a_log_after_a_checkpoint_verifies_with_the_launch_before_or_after_it() {
        // Events: redacted, ours, other launch, its stop. Checkpoint after 0, 1, 2 and 4 of them.
        for at in [0, 1, 2, 4] {
            let b = checkpointed(at, None).build();
            assert_eq!(b.expect, Expect::Verify, "at {at}");
            let v = verify::verify(&b.evidence, &b.nonce, &b.trust, &b.policy).unwrap_or_else(|r| panic!("at {at}: {r}"));
            assert_eq!((v.checkpoint_seq, v.events), (Some(7), 4 - usize::from(at)), "at {at}");
            check_verified(&v, &b.evidence, &b.trust, &b.policy);
        }
    }

    #[test]
    fn a_broken_checkpoint_is_rejected_by_its_check() {
        use verify::Check;
        for fault in [
            CheckpointFault::QualifyingData,
            CheckpointFault::Later,
            CheckpointFault::OtherResetCount,
            CheckpointFault::OtherRestartCount,
            CheckpointFault::PcrBefore,
            CheckpointFault::Signature,
            CheckpointFault::Selection,
            CheckpointFault::EventPcr,
        ] {
            let (expect, result) = run(&checkpointed(2, Some(fault)));
            assert!(matches!(expect, Expect::Reject(_)), "{fault:?}: {expect:?}");
            assert_eq!(result.map_err(|r| r.check).unwrap_err(), Check::Checkpoint, "{fault:?}");
        }
        // The zone's launch is before the checkpoint, and its live-set proof is missing or wrong.
        for fault in [CheckpointFault::ForgetOurs, CheckpointFault::WrongProof] {
            let (expect, result) = run(&checkpointed(2, Some(fault)));
            assert!(matches!(expect, Expect::Reject(_)), "{fault:?}: {expect:?}");
            assert_eq!(result.map_err(|r| r.check).unwrap_err(), Check::LaunchRecord, "{fault:?}");
        }
    }

    #[test]
    fn a_withheld_event_of_the_zones_own_launch_is_refused() {
        let mut s = scenario(vec![]);
        let own = s.record.record().launch_id;
        s.events.push(EventSpec::Redacted { stop: true, launch_id: own, record_sha256: [1; 32] });
        let (expect, result) = run(&s);
        assert!(matches!(expect, Expect::Reject(_)), "{expect:?}");
        assert_eq!(result.map_err(|r| r.check).unwrap_err(), verify::Check::NotStopped);
    }
}
