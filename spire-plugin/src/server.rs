//! The server-side `zone` NodeAttestor.
//!
//! 1. The agent's payload: [`AgentHello`] (JSON), a version check only —
//!    nothing in it is trusted.
//! 2. Challenge: 32 fresh random bytes, the nonce.
//! 3. The agent's answer: evidence (`zone.evidence.v1.Evidence`) for that
//!    nonce, checked by `attestation_proto::verify` against the pinned AKs
//!    and the policy. A rejection is `PermissionDenied` naming the failed
//!    check, and is logged with it.
//! 4. The agent ID `spiffe://<td>/spire/agent/zone/<host>/<zone>` and the
//!    selectors of [`selectors`]; `can_reattest` is set, so the agent proves
//!    itself again at every SVID rotation (a zone that is gone cannot).

use std::pin::Pin;
use std::sync::{Arc, RwLock};

use attestation_proto::verify::{Verified, verify};
use serde::{Deserialize, Serialize};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::config::ServerConfig;
use crate::goplugin::Configurable;
use crate::log::{Level, log};
use crate::proto::server_nodeattestor::node_attestor_server::NodeAttestor;
use crate::proto::server_nodeattestor::{AgentAttributes, AttestRequest, AttestResponse, attest_request, attest_response};

/// What the agent plugin sends first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentHello {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub zone_attestor: u32,
}

/// The agent/server protocol version.
pub const PROTOCOL_VERSION: u32 = 1;
/// Bytes of the server's nonce.
pub const NONCE_LEN: usize = 32;
/// Largest payload accepted.
const MAX_PAYLOAD: usize = 1024;

/// A SPIFFE path segment: letters, digits, `.`, `-`, `_`, not `.` or `..`.
fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The agent ID of a verified zone.
pub fn agent_id(trust_domain: &str, v: &Verified) -> Result<String, String> {
    let (host, zone) = (&v.record.host, &v.record.zone);
    if !valid_segment(host) || !valid_segment(zone) {
        return Err(format!("host id {host:?} or zone name {zone:?} cannot be part of a SPIFFE ID"));
    }
    Ok(format!("spiffe://{trust_domain}/spire/agent/{}/{host}/{zone}", crate::PLUGIN_NAME))
}

/// The selector values (type `zone`) of a verified zone.
pub fn selectors(v: &Verified) -> Vec<String> {
    let r = &v.record;
    vec![
        format!("name:{}", r.zone),
        format!("host:{}", r.host),
        format!("kernel:sha256:{}", r.kernel.sha256),
        format!("initrd:sha256:{}", r.initrd_sha256()),
        format!("cmdline:sha256:{}", r.cmdline_sha256),
    ]
}

/// Checks the agent's first message.
pub fn check_payload(payload: &[u8]) -> Result<(), String> {
    if payload.len() > MAX_PAYLOAD {
        return Err(format!("malformed payload: {} bytes, more than {MAX_PAYLOAD}", payload.len()));
    }
    let hello: AgentHello = serde_json::from_slice(payload).map_err(|e| format!("malformed payload: {e}"))?;
    if hello.zone_attestor != PROTOCOL_VERSION {
        return Err(format!(
            "agent plugin speaks protocol {}, this server plugin {PROTOCOL_VERSION}: use matching plugin versions",
            hello.zone_attestor
        ));
    }
    Ok(())
}

fn random_nonce() -> Result<Vec<u8>, Status> {
    let mut n = vec![0u8; NONCE_LEN];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut n))
        .map_err(|e| Status::internal(format!("cannot read /dev/urandom: {e}")))?;
    Ok(n)
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
        check_payload(&payload).map_err(deny)?;
        let nonce = random_nonce()?;
        let challenge = AttestResponse { response: Some(attest_response::Response::Challenge(nonce.clone())) };
        out.send(Ok(challenge)).await.map_err(|_| Status::cancelled("SPIRE closed the stream"))?;
        let answer = incoming.message().await?.ok_or_else(|| Status::invalid_argument("no answer to the challenge"))?;
        let Some(attest_request::Request::ChallengeResponse(evidence)) = answer.request else {
            return Err(deny("malformed challenge response: expected evidence".into()));
        };
        let v = verify(&evidence, &nonce, &config.trust, &config.policy)
            .map_err(|r| deny(format!("zone evidence rejected by check {}: {}", r.check.as_str(), r.detail)))?;
        let spiffe_id = agent_id(&config.trust_domain, &v).map_err(deny)?;
        log(Level::Info, "zone attested", &[("agent_id", &spiffe_id), ("launch_id", &v.record.launch_id)]);
        let attrs = AgentAttributes { spiffe_id, selector_values: selectors(&v), can_reattest: true };
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
        assert!(check_payload(br#"{"zone_attestor":1}"#).is_ok());
        assert!(check_payload(b"garbage").unwrap_err().starts_with("malformed payload"));
        assert!(check_payload(br#"{"zone_attestor":2}"#).unwrap_err().contains("protocol 2"));
        assert!(check_payload(br#"{"zone_attestor":1,"zone":"web"}"#).unwrap_err().starts_with("malformed payload"));
        assert!(check_payload(&[b' '; 2000]).unwrap_err().contains("more than"));
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
