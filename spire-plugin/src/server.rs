//! The server-side `zone` NodeAttestor.
//!
//! 1. The agent's payload: `zone.spire.v1.AgentPayload` (protobuf): the
//!    protocol version and, when the host gave them, its TPM's public keys.
//!    Nothing in it is trusted until checked.
//! 2. Challenge (`ServerChallenge`): 32 fresh random bytes, the nonce. When
//!    the payload's AK is not pinned and EK trust is configured, the EK
//!    certificate is checked against `endorsement_ca_path` (signature,
//!    validity, that its key is the EK), the AK must be a restricted,
//!    fixedTPM signing key, and the challenge carries a credential
//!    (TPM2_MakeCredential in software over the AK's Name, encrypted to the
//!    EK) around a fresh random secret.
//! 3. The agent's answer (`ChallengeResponse`): evidence for that nonce, and
//!    the secret the host's TPM released (compared in constant time: only
//!    the TPM holding that EK, with that AK loaded in it, can release it).
//!    The evidence is checked by `attestation_proto::verify` against the
//!    pinned AK (or the activated one) and the policy. A rejection is
//!    `PermissionDenied` naming the failed check, and is logged with it.
//! 4. The agent ID `spiffe://<td>/spire/agent/zone/<host>/<zone>` and the
//!    selectors of [`selectors`]; with EK trust `<host>` is `ek-` and the
//!    SHA-256 of the EK's public key, never the host's own config.
//!    `can_reattest` is set, so the agent proves itself again at every SVID
//!    rotation (a zone that is gone cannot).

use std::pin::Pin;
use std::sync::{Arc, RwLock};

use attestation_proto::ek::EkIdentity;
use attestation_proto::spire::{Activation, AgentPayload, ChallengeResponse, HostKeys, ServerChallenge};
use attestation_proto::tpm::public::PublicArea;
use attestation_proto::verify::{Trust, Verified, ak_digest, verify};
use prost::Message;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::config::ServerConfig;
use crate::goplugin::Configurable;
use crate::log::{Level, log};
use crate::proto::server_nodeattestor::node_attestor_server::NodeAttestor;
use crate::proto::server_nodeattestor::{AgentAttributes, AttestRequest, AttestResponse, attest_request, attest_response};

/// The agent/server protocol version.
pub const PROTOCOL_VERSION: u32 = 2;
/// Bytes of the server's nonce.
pub const NONCE_LEN: usize = 32;
/// Largest payload accepted (keys and an EK certificate).
const MAX_PAYLOAD: usize = 16 * 1024;

/// A SPIFFE path segment: letters, digits, `.`, `-`, `_`, not `.` or `..`.
fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The host part of an agent ID derived from a TPM's EK.
pub fn ek_host(ek: &EkIdentity) -> String {
    format!("ek-{}", hex::encode(ek.sha256))
}

/// The agent ID of a verified zone (`ek`: the host is known by its EK).
pub fn agent_id(trust_domain: &str, v: &Verified, ek: Option<&EkIdentity>) -> Result<String, String> {
    let host = ek.map_or_else(|| v.record.host.clone(), ek_host);
    let zone = &v.record.zone;
    if !valid_segment(&host) || !valid_segment(zone) {
        return Err(format!("host id {host:?} or zone name {zone:?} cannot be part of a SPIFFE ID"));
    }
    Ok(format!("spiffe://{trust_domain}/spire/agent/{}/{host}/{zone}", crate::PLUGIN_NAME))
}

/// The selector values (type `zone`) of a verified zone.
pub fn selectors(v: &Verified, ek: Option<&EkIdentity>) -> Vec<String> {
    let r = &v.record;
    let mut s = vec![
        format!("name:{}", r.zone),
        format!("host:{}", ek.map_or_else(|| r.host.clone(), ek_host)),
        format!("kernel:sha256:{}", r.kernel.sha256),
        format!("initrd:sha256:{}", r.initrd_sha256()),
        format!("cmdline:sha256:{}", r.policy_cmdline_sha256()),
    ];
    if let Some(fs) = &r.rootfs {
        s.push(format!("image:sha256:{}", r.image_sha256()));
        s.push(format!("rootfs:verity:{}", fs.verity.root));
    }
    if let Some(ek) = ek {
        s.push(format!("ek:sha256:{}", hex::encode(ek.sha256)));
        s.push(format!("ek-issuer:cn:{}", ek.issuer_cn));
    }
    s
}

/// Decodes and checks the agent's first message.
pub fn decode_payload(payload: &[u8]) -> Result<AgentPayload, String> {
    if payload.len() > MAX_PAYLOAD {
        return Err(format!("malformed payload: {} bytes, more than {MAX_PAYLOAD}", payload.len()));
    }
    let p = AgentPayload::decode(payload).map_err(|e| format!("malformed payload: {e}"))?;
    if p.encode_to_vec() != payload {
        return Err("malformed payload: not the canonical encoding of a zone attestor payload".into());
    }
    if p.version != PROTOCOL_VERSION {
        return Err(format!(
            "agent plugin speaks protocol {}, this server plugin {PROTOCOL_VERSION}: use matching plugin versions",
            p.version
        ));
    }
    Ok(p)
}

/// Checks a host's keys for EK trust; returns the TPM's identity and the AK.
fn check_host_keys(ek: &crate::config::EkConfig, keys: &HostKeys, now_unix: i64) -> Result<(EkIdentity, PublicArea, PublicArea), String> {
    if keys.ek_certificate.is_empty() {
        return Err("check ek-certificate: the host's TPM has no EK certificate, and its AK is not pinned".into());
    }
    let id = ek.cas.check(&keys.ek_certificate, &keys.ek_chain, &keys.ek_public, now_unix).map_err(|e| format!("check ek-certificate: {e}"))?;
    ek.allows(&id.sha256).map_err(|e| format!("check ek-certificate: {e}"))?;
    let ek_area = PublicArea::parse(&keys.ek_public).map_err(|e| format!("check ek-certificate: ek_public: {e}"))?;
    let ak = PublicArea::parse(&keys.ak_public).map_err(|e| format!("check ak-trusted: ak_public: {e}"))?;
    if !ak.is_restricted_signing_key() {
        return Err("check ak-trusted: the AK is not a restricted, fixedTPM signing key".into());
    }
    Ok((id, ek_area, ak))
}

/// Equal, in time independent of where the bytes differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

/// The launch record's host id, read (not trusted) to name the activated AK's host for the verifier.
fn claimed_host(evidence: &[u8]) -> String {
    attestation_proto::evidence::decode(evidence)
        .ok()
        .and_then(|e| attestation_proto::launch::LaunchRecord::decode(&e.launch_record).ok())
        .map(|r| r.host)
        .unwrap_or_default()
}

/// `N` random bytes from the OS (getrandom).
fn random<const N: usize>() -> Result<[u8; N], Status> {
    let mut b = [0u8; N];
    rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut b)
        .map_err(|e| Status::internal(format!("no randomness from the OS: {e}")))?;
    Ok(b)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The server plugin.
#[derive(Debug, Default)]
pub struct ServerPlugin {
    config: RwLock<Option<Arc<ServerConfig>>>,
}

impl Configurable for ServerPlugin {
    fn configure(&self, trust_domain: &str, hcl: &str) -> Result<(), String> {
        let c = ServerConfig::from_request(trust_domain, hcl).map_err(|e| e.to_string())?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(c));
        Ok(())
    }

    fn validate(&self, trust_domain: &str, hcl: &str) -> Result<(), String> {
        ServerConfig::from_request(trust_domain, hcl).map(|_| ()).map_err(|e| e.to_string())
    }
}

fn deny(why: String) -> Status {
    log(Level::Warn, "zone attestation denied", &[("reason", &why)]);
    Status::permission_denied(why)
}

impl ServerPlugin {
    fn current(&self) -> Result<Arc<ServerConfig>, Status> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| Status::failed_precondition("the zone attestor is not configured"))
    }

    /// Runs one attestation over SPIRE's stream.
    async fn run(
        config: Arc<ServerConfig>,
        mut incoming: Streaming<AttestRequest>,
        out: tokio::sync::mpsc::Sender<Result<AttestResponse, Status>>,
    ) -> Result<(), Status> {
        let first = incoming.message().await?.ok_or_else(|| Status::invalid_argument("no payload"))?;
        let Some(attest_request::Request::Payload(payload)) = first.request else {
            return Err(deny("malformed payload: the first message must be the payload".into()));
        };
        let payload = decode_payload(&payload).map_err(deny)?;
        // A pinned AK speaks for its host; any other host proves its TPM.
        let pinned = payload.keys.as_ref().is_some_and(|k| !config.trust.hosts_of(&ak_digest(&k.ak_public)).is_empty());
        let ek_path = match (&config.ek, payload.keys.as_ref()) {
            (Some(ek), Some(keys)) if !pinned => Some((check_host_keys(ek, keys, now_unix()).map_err(|e| deny(format!("zone host rejected by {e}")))?, keys.clone())),
            _ => None,
        };
        let nonce = random::<NONCE_LEN>()?.to_vec();
        let mut secret = Vec::new();
        let activation = match &ek_path {
            None => None,
            Some(((_, ek, ak), _)) => {
                secret = random::<32>()?.to_vec();
                let seed = random::<32>()?;
                let c = attestation_proto::tpm::credential::make_credential(ek, &ak.name(), &secret, &seed, &mut rand_core::OsRng)
                    .map_err(|e| deny(format!("zone host rejected by check ek-certificate: {e}")))?;
                Some(Activation { id_object: c.id_object, encrypted_secret: c.encrypted_secret })
            }
        };
        let challenge = ServerChallenge { nonce: nonce.clone(), activation }.encode_to_vec();
        let challenge = AttestResponse { response: Some(attest_response::Response::Challenge(challenge)) };
        out.send(Ok(challenge)).await.map_err(|_| Status::cancelled("SPIRE closed the stream"))?;
        let answer = incoming.message().await?.ok_or_else(|| Status::invalid_argument("no answer to the challenge"))?;
        let Some(attest_request::Request::ChallengeResponse(answer)) = answer.request else {
            return Err(deny("malformed challenge response: expected evidence".into()));
        };
        let answer = ChallengeResponse::decode(answer.as_slice())
            .map_err(|e| deny(format!("zone evidence rejected by check format: the challenge response is not a zone attestor answer ({e})")))?;
        let (trust, ek_id) = match ek_path {
            None => (config.trust.clone(), None),
            Some(((id, _, _), keys)) => {
                if !same_secret(&secret, &answer.activated_secret) {
                    return Err(deny(
                        "zone host rejected by check activation: the credential's secret was not released by the TPM of that EK \
                         for that AK (a replayed answer, or an AK that does not live in that TPM)"
                            .into(),
                    ));
                }
                // The activated AK, trusted for whatever host the record names:
                // the identity comes from the EK, not from the record.
                (Trust::default().with(&claimed_host(&answer.evidence), ak_digest(&keys.ak_public)), Some(id))
            }
        };
        let v = verify(&answer.evidence, &nonce, &trust, &config.policy)
            .map_err(|r| deny(format!("zone evidence rejected by check {}: {}", r.check.as_str(), r.detail)))?;
        let spiffe_id = agent_id(&config.trust_domain, &v, ek_id.as_ref()).map_err(deny)?;
        log(Level::Info, "zone attested", &[("agent_id", &spiffe_id), ("launch_id", &v.record.launch_id)]);
        let attrs = AgentAttributes { spiffe_id, selector_values: selectors(&v, ek_id.as_ref()), can_reattest: true };
        let _ = out.send(Ok(AttestResponse { response: Some(attest_response::Response::AgentAttributes(attrs)) })).await;
        Ok(())
    }
}

type AttestStream = Pin<Box<dyn Stream<Item = Result<AttestResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl NodeAttestor for Arc<ServerPlugin> {
    type AttestStream = AttestStream;

    async fn attest(&self, request: Request<Streaming<AttestRequest>>) -> Result<Response<Self::AttestStream>, Status> {
        let config = self.current()?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let incoming = request.into_inner();
        tokio::spawn(async move {
            if let Err(status) = ServerPlugin::run(config, incoming, tx.clone()).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_checked() {
        let ok = AgentPayload { version: PROTOCOL_VERSION, keys: None }.encode_to_vec();
        assert!(decode_payload(&ok).is_ok());
        assert!(decode_payload(b"garbage").unwrap_err().starts_with("malformed payload"));
        let old = AgentPayload { version: 1, keys: None }.encode_to_vec();
        assert!(decode_payload(&old).unwrap_err().contains("protocol 1"));
        let mut extra = ok.clone();
        extra.extend_from_slice(&[0x18, 1]);
        assert!(decode_payload(&extra).unwrap_err().starts_with("malformed payload"));
        assert!(decode_payload(&vec![0u8; 20_000]).unwrap_err().contains("more than"));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
        assert!(!same_secret(b"", b"a"));
    }

    #[test]
    fn segments_are_checked() {
        assert!(valid_segment("web-1"));
        assert!(valid_segment("host.example"));
        assert!(!valid_segment(".."));
        assert!(!valid_segment("a/b"));
        assert!(!valid_segment(""));
    }
}
