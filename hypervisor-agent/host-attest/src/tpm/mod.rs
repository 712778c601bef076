//! The host's TPM, through `tss-esapi`: PCR extend and read, the
//! attestation key, and quotes.
//!
//! - **Device**: `/dev/tpmrm0` (the kernel's resource manager) when it
//!   exists — the production path; otherwise the embedded [`swtpm`] over
//!   loopback TCP.
//! - **Attestation key**: ECC P-256, restricted, ECDSA-SHA256, a child of the
//!   RSA-2048 endorsement key (re-derived from the TPM's endorsement seed at
//!   each start). Created once; its public and private blobs are kept in
//!   `<state_dir>/tpm/` and loaded at each start. It has a random
//!   authorisation value (`ak.auth`, 0600): on a TPM without resource manager
//!   a loaded key's handle is visible to every local client, and without the
//!   value nobody else can make it sign.
//! - **Sessions**: extends and quotes use password authorisation (one round
//!   trip each; HMAC sessions cost several). Credential activation needs a
//!   policy session for the EK (PolicySecret of the endorsement hierarchy).

pub mod swtpm;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use tss_esapi::Context;
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, ak, ek};
use tss_esapi::constants::{CapabilityType, SessionType};
use tss_esapi::handles::{AuthHandle, KeyHandle, ObjectHandle, PcrHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Auth, CapabilityData, Data, Digest, DigestValues, EncryptedSecret, IdObject, PcrSelectionListBuilder, PcrSlot, Private,
    Public, SignatureScheme, SymmetricDefinition,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};

/// A TPM failure.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    /// The embedded swtpm could not be set up or started.
    #[error("embedded TPM (swtpm): {0}")]
    Swtpm(String),
    /// The TPM could not be reached.
    #[error(
        "cannot reach the TPM at {tcti}: {source}; check that the device (tpm.device) is readable by the daemon, \
         or that the embedded swtpm runs on tpm.swtpm_port (see <state_dir>/swtpm/swtpm.log)"
    )]
    Connect {
        /// The TCTI configuration.
        tcti: String,
        /// The TSS error.
        #[source]
        source: tss_esapi::Error,
    },
    /// A TPM command failed.
    #[error("TPM {op} failed: {source}")]
    Tss {
        /// What was being done.
        op: &'static str,
        /// The TSS error.
        #[source]
        source: tss_esapi::Error,
    },
    /// The attestation key files are unusable.
    #[error("attestation key in {dir}: {detail}")]
    Ak {
        /// The key directory.
        dir: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A PCR out of range.
    #[error("PCR {0} does not exist (0..=23)")]
    Pcr(u32),
}

fn tss(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |source| TpmError::Tss { op, source }
}

const PCR_HANDLES: [PcrHandle; 24] = [
    PcrHandle::Pcr0,
    PcrHandle::Pcr1,
    PcrHandle::Pcr2,
    PcrHandle::Pcr3,
    PcrHandle::Pcr4,
    PcrHandle::Pcr5,
    PcrHandle::Pcr6,
    PcrHandle::Pcr7,
    PcrHandle::Pcr8,
    PcrHandle::Pcr9,
    PcrHandle::Pcr10,
    PcrHandle::Pcr11,
    PcrHandle::Pcr12,
    PcrHandle::Pcr13,
    PcrHandle::Pcr14,
    PcrHandle::Pcr15,
    PcrHandle::Pcr16,
    PcrHandle::Pcr17,
    PcrHandle::Pcr18,
    PcrHandle::Pcr19,
    PcrHandle::Pcr20,
    PcrHandle::Pcr21,
    PcrHandle::Pcr22,
    PcrHandle::Pcr23,
];

fn pcr_slot(pcr: u32) -> Result<PcrSlot, TpmError> {
    if pcr > 23 {
        return Err(TpmError::Pcr(pcr));
    }
    PcrSlot::try_from(1u32 << pcr).map_err(|_| TpmError::Pcr(pcr))
}

/// A signed quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// TPMS_ATTEST as signed.
    pub attest: Vec<u8>,
    /// TPMT_SIGNATURE.
    pub signature: Vec<u8>,
    /// The TPM's reset count (from the quote's clock info).
    pub reset_count: u32,
}

/// The public keys of a TPM and which TPM it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmKeys {
    /// TPMT_PUBLIC of the AK.
    pub ak_public: Vec<u8>,
    /// TPMT_PUBLIC of the EK.
    pub ek_public: Vec<u8>,
    /// The EK certificate (DER), if the TPM holds one.
    pub ek_certificate: Option<Vec<u8>>,
    /// CA certificates (DER) between the EK certificate and its root, as
    /// configured (`tpm.ek_chain_path`) or the embedded swtpm's issuer.
    pub ek_chain: Vec<Vec<u8>>,
    /// Which TPM this is (TCTI).
    pub tcti: String,
    /// Whether it is a software TPM (the embedded swtpm).
    pub software: bool,
}

/// What the ledger needs from a TPM: the real one ([`Tpm`]), or a software
/// stand-in in unit tests of crash recovery and batching.
pub trait TpmOps {
    /// Extends `pcr` (SHA-256 bank) with `digest`.
    fn extend(&mut self, pcr: u32, digest: &[u8; 32]) -> Result<(), TpmError>;
    /// Reads the SHA-256 value of `pcr`.
    fn read_pcr(&mut self, pcr: u32) -> Result<[u8; 32], TpmError>;
    /// Quotes the SHA-256 values of `pcrs` with `qualifying_data` (≤ 64 bytes).
    fn quote(&mut self, qualifying_data: &[u8], pcrs: &[u32]) -> Result<Quote, TpmError>;
    /// The keys.
    fn keys(&self) -> &TpmKeys;
    /// TPM2_ActivateCredential with the AK as the credential's object and the
    /// EK as its key: the secret, if the credential was made for this AK in
    /// this TPM (see `attestation_proto::tpm::credential`).
    fn activate_credential(&mut self, id_object: &[u8], encrypted_secret: &[u8]) -> Result<Vec<u8>, TpmError>;
}

/// An open TPM with the EK and AK loaded.
pub struct Tpm {
    ctx: Context,
    ek: KeyHandle,
    ak: KeyHandle,
    keys: TpmKeys,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm").field("tcti", &self.keys.tcti).finish_non_exhaustive()
    }
}

/// Flushes every transient object (a TPM without resource manager keeps
/// those a crashed client left behind, and has only three slots).
fn flush_transients(ctx: &mut Context) -> Result<(), TpmError> {
    let (data, _) = ctx
        .get_capability(CapabilityType::Handles, tss_esapi::constants::tss::TPM2_TRANSIENT_FIRST, 16)
        .map_err(tss("get transient handles"))?;
    if let CapabilityData::Handles(list) = data {
        for h in list.into_inner() {
            let obj = ctx.tr_from_tpm_public(h).map_err(tss("look up a transient object"))?;
            ctx.flush_context(obj).map_err(tss("flush a transient object"))?;
            tracing::info!(handle = ?h, "flushed a transient object left in the TPM");
        }
    }
    Ok(())
}

impl Tpm {
    /// Opens the TPM at `tcti` and loads (or creates, the first time) the AK
    /// kept in `key_dir`. `flush_stale`: flush leftover transient objects first
    /// (only for a TPM this daemon owns alone, the embedded swtpm).
    pub fn open(tcti: &str, key_dir: &Path, flush_stale: bool) -> Result<Self, TpmError> {
        let conf = TctiNameConf::from_str(tcti).map_err(tss("TCTI configuration"))?;
        let mut ctx = Context::new(conf).map_err(|source| TpmError::Connect { tcti: tcti.to_owned(), source })?;
        if flush_stale {
            flush_transients(&mut ctx)?;
        }
        let ek = ek::create_ek_object_2(&mut ctx, AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048), None)
            .map_err(tss("create the endorsement key"))?;
        let (ek_pub, _, _) = ctx.read_public(ek).map_err(tss("read the EK public area"))?;
        let ek_public = ek_pub.marshall().map_err(tss("marshal the EK public area"))?;
        let ek_certificate = ek::retrieve_ek_pubcert(&mut ctx, AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048)).ok();
        let ak = match load_or_create_ak(&mut ctx, ek, key_dir) {
            Ok(ak) => ak,
            Err(e) => {
                let _ = ctx.flush_context(ek.into());
                return Err(e);
            }
        };
        let (ak_pub, _, _) = ctx.read_public(ak).map_err(tss("read the AK public area"))?;
        let ak_public = ak_pub.marshall().map_err(tss("marshal the AK public area"))?;
        Ok(Self { ctx, ek, ak, keys: TpmKeys { ak_public, ek_public, ek_certificate, ek_chain: Vec::new(), tcti: tcti.to_owned(), software: is_embedded(tcti) } })
    }

    /// Reads SHA-256 PCR values, in the order given.
    pub fn read_pcrs(&mut self, pcrs: &[u32]) -> Result<Vec<[u8; 32]>, TpmError> {
        pcrs.iter().map(|&p| self.read_pcr(p)).collect()
    }
}

impl Tpm {
    /// Sets the CA certificates between the EK certificate and its root
    /// (configuration, not the TPM, knows them).
    pub fn set_ek_chain(&mut self, chain: Vec<Vec<u8>>) {
        self.keys.ek_chain = chain;
    }
}

impl TpmOps for Tpm {
    fn keys(&self) -> &TpmKeys {
        &self.keys
    }

    fn extend(&mut self, pcr: u32, digest: &[u8; 32]) -> Result<(), TpmError> {
        let handle = *PCR_HANDLES.get(pcr as usize).ok_or(TpmError::Pcr(pcr))?;
        let mut values = DigestValues::new();
        values.set(HashingAlgorithm::Sha256, Digest::try_from(digest.to_vec()).map_err(tss("digest"))?);
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| ctx.pcr_extend(handle, values))
            .map_err(tss("PCR extend"))
    }

    fn read_pcr(&mut self, pcr: u32) -> Result<[u8; 32], TpmError> {
        let sel = PcrSelectionListBuilder::new()
            .with_selection(HashingAlgorithm::Sha256, &[pcr_slot(pcr)?])
            .build()
            .map_err(tss("PCR selection"))?;
        let (_, _, digests) = self.ctx.execute_without_session(|ctx| ctx.pcr_read(sel)).map_err(tss("PCR read"))?;
        let value = digests.value().first().map(|d| d.value().to_vec()).unwrap_or_default();
        <[u8; 32]>::try_from(value.as_slice()).map_err(|_| TpmError::Pcr(pcr))
    }

    fn quote(&mut self, qualifying_data: &[u8], pcrs: &[u32]) -> Result<Quote, TpmError> {
        let slots = pcrs.iter().map(|&p| pcr_slot(p)).collect::<Result<Vec<_>, _>>()?;
        let sel =
            PcrSelectionListBuilder::new().with_selection(HashingAlgorithm::Sha256, &slots).build().map_err(tss("PCR selection"))?;
        let data = Data::try_from(qualifying_data.to_vec()).map_err(tss("qualifying data"))?;
        let ak = self.ak;
        let (attest, signature) = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| ctx.quote(ak, data, SignatureScheme::Null, sel))
            .map_err(tss("quote"))?;
        let reset_count = attest.clock_info().reset_count();
        Ok(Quote {
            attest: attest.marshall().map_err(tss("marshal the quote"))?,
            signature: signature.marshall().map_err(tss("marshal the signature"))?,
            reset_count,
        })
    }

    fn activate_credential(&mut self, id_object: &[u8], encrypted_secret: &[u8]) -> Result<Vec<u8>, TpmError> {
        self.activate(id_object, encrypted_secret)
    }
}

impl Tpm {
    fn activate(&mut self, id_object: &[u8], encrypted_secret: &[u8]) -> Result<Vec<u8>, TpmError> {
        let blob = IdObject::try_from(id_object.to_vec()).map_err(tss("credential blob"))?;
        let secret = EncryptedSecret::try_from(encrypted_secret.to_vec()).map_err(tss("encrypted secret"))?;
        // The EK's default policy is PolicySecret(TPM_RH_ENDORSEMENT): a policy
        // session satisfied with the (empty) endorsement authorisation.
        let session = self
            .ctx
            .start_auth_session(None, None, None, SessionType::Policy, SymmetricDefinition::AES_128_CFB, HashingAlgorithm::Sha256)
            .map_err(tss("start a policy session"))?
            .ok_or(TpmError::Tss { op: "start a policy session", source: tss_esapi::Error::WrapperError(tss_esapi::WrapperErrorKind::WrongValueFromTpm) })?;
        let result = (|| {
            let policy = PolicySession::try_from(session).map_err(tss("policy session"))?;
            self.ctx
                .execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.policy_secret(policy, AuthHandle::Endorsement, Default::default(), Default::default(), Default::default(), None)
                })
                .map_err(tss("PolicySecret(endorsement)"))?;
            let (ak, ek) = (self.ak, self.ek);
            self.ctx
                .execute_with_sessions((Some(AuthSession::Password), Some(session), None), |ctx| {
                    ctx.activate_credential(ak, ek, blob, secret)
                })
                .map_err(tss("ActivateCredential"))
        })();
        let _ = self.ctx.flush_context(SessionHandle::from(session).into());
        Ok(result?.value().to_vec())
    }
}

impl Drop for Tpm {
    fn drop(&mut self) {
        let _ = self.ctx.flush_context(ObjectHandle::from(self.ak));
        let _ = self.ctx.flush_context(ObjectHandle::from(self.ek));
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn load_or_create_ak(ctx: &mut Context, ek: KeyHandle, dir: &Path) -> Result<KeyHandle, TpmError> {
    let bad = |detail: String| TpmError::Ak { dir: dir.to_owned(), detail };
    let (pub_path, priv_path, auth_path) = (dir.join("ak.pub"), dir.join("ak.priv"), dir.join("ak.auth"));
    if !pub_path.exists() {
        std::fs::create_dir_all(dir).map_err(|e| bad(format!("cannot create the directory: {e}")))?;
        let auth_bytes = ctx.get_random(32).map_err(tss("get random"))?.value().to_vec();
        let auth = Auth::try_from(auth_bytes.clone()).map_err(tss("auth value"))?;
        let created = ak::create_ak_2(
            ctx,
            ek,
            HashingAlgorithm::Sha256,
            AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            SignatureSchemeAlgorithm::EcDsa,
            Some(auth),
            None,
        )
        .map_err(tss("create the attestation key"))?;
        let public = created.out_public.marshall().map_err(tss("marshal the AK public area"))?;
        // Auth and private part first: ak.pub is what marks the key as complete.
        write_private(&auth_path, &auth_bytes).map_err(|e| bad(format!("cannot write ak.auth: {e}")))?;
        write_private(&priv_path, created.out_private.value()).map_err(|e| bad(format!("cannot write ak.priv: {e}")))?;
        write_private(&pub_path, &public).map_err(|e| bad(format!("cannot write ak.pub: {e}")))?;
        tracing::info!(dir = %dir.display(), "created the attestation key");
    }
    let read = |p: &Path| std::fs::read(p).map_err(|e| bad(format!("cannot read {}: {e}", p.display())));
    let public = Public::unmarshall(&read(&pub_path)?).map_err(|e| bad(format!("ak.pub is not a TPMT_PUBLIC: {e}")))?;
    let private = Private::try_from(read(&priv_path)?).map_err(|e| bad(format!("ak.priv is unusable: {e}")))?;
    let auth = Auth::try_from(read(&auth_path)?).map_err(|e| bad(format!("ak.auth is unusable: {e}")))?;
    ak::load_ak(ctx, ek, Some(auth), private, public).map_err(|e| {
        bad(format!(
            "the TPM refuses to load it ({e}): the key belongs to another TPM or the TPM was cleared; \
             move the directory away to create a new key (and re-pin it in verifiers)"
        ))
    })
}

/// Whether `tcti` names a TPM only this daemon uses (the embedded swtpm).
pub fn is_embedded(tcti: &str) -> bool {
    tcti.starts_with("swtpm:")
}
