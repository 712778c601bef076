//! The agent-side `zone` NodeAttestor, run by `spire-agent` inside a zone:
//! sends `zone.spire.v1.AgentPayload` (the protocol version and the host
//! TPM's public keys, asked for over the zone's host channel), then answers
//! each challenge (the server's nonce, and with EK trust a credential for
//! the host's AK) with fresh evidence about this zone and the credential's
//! secret, both from the host (`zone_guest::evidence`).

use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::config::{AgentData, parse};
use crate::goplugin::Configurable;
use crate::log::{Level, log};
use crate::proto::agent_nodeattestor::node_attestor_server::NodeAttestor;
use crate::proto::agent_nodeattestor::{Challenge, PayloadOrChallengeResponse, payload_or_challenge_response};
use crate::server::PROTOCOL_VERSION;
use attestation_proto::spire::{AgentPayload, ChallengeResponse, HostKeys, ServerChallenge};
use prost::Message;

/// Default wait for the host's evidence.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the agent plugin runs with.
#[derive(Debug, Clone)]
struct Settings {
    timeout: Duration,
    /// Testing only: canned evidence.
    canned_evidence: Option<Vec<u8>>,
    /// Testing only: a payload of our choosing.
    payload: Option<Vec<u8>>,
}

/// The agent plugin.
#[derive(Debug)]
pub struct AgentPlugin {
    settings: RwLock<Settings>,
}

impl Default for AgentPlugin {
    fn default() -> Self {
        Self { settings: RwLock::new(Settings { timeout: DEFAULT_TIMEOUT, canned_evidence: None, payload: None }) }
    }
}

fn settings_of(hcl: &str) -> Result<Settings, String> {
    let data: AgentData = parse(hcl).map_err(|e| e.to_string())?;
    let timeout = match data.evidence_timeout_seconds {
        None => DEFAULT_TIMEOUT,
        Some(0) => return Err("evidence_timeout_seconds must be at least 1".into()),
        Some(s) => Duration::from_secs(s),
    };
    let canned_evidence = data
        .test_evidence_path
        .map(|p| std::fs::read(&p).map_err(|e| format!("cannot read test_evidence_path {}: {e}", p.display())))
        .transpose()?;
    Ok(Settings { timeout, canned_evidence, payload: data.test_payload.map(String::into_bytes) })
}

#[cfg(test)]
fn timeout_of(hcl: &str) -> Result<Duration, String> {
    settings_of(hcl).map(|s| s.timeout)
}

impl Configurable for AgentPlugin {
    fn configure(&self, _trust_domain: &str, hcl: &str) -> Result<(), String> {
        let s = settings_of(hcl)?;
        if s.canned_evidence.is_some() || s.payload.is_some() {
            log(Level::Warn, "test settings in use: this agent does not send fresh evidence", &[]);
        }
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = s;
        Ok(())
    }

    fn validate(&self, _trust_domain: &str, hcl: &str) -> Result<(), String> {
        settings_of(hcl).map(|_| ())
    }
}

/// The payload the agent plugin sends first, with the host's keys when it has them.
pub fn payload_with(keys: Option<HostKeys>) -> Vec<u8> {
    AgentPayload { version: PROTOCOL_VERSION, keys }.encode_to_vec()
}

/// The payload without keys (a host trusted by its pinned AK needs none).
pub fn payload() -> Vec<u8> {
    payload_with(None)
}

/// The host's keys over the host channel, in this payload's form.
fn host_keys(timeout: Duration) -> Option<HostKeys> {
    match zone_guest::evidence::host_keys(timeout) {
        Ok(k) => Some(HostKeys { ak_public: k.ak_public, ek_public: k.ek_public, ek_certificate: k.ek_certificate, ek_chain: k.ek_chain }),
        Err(e) => {
            log(Level::Warn, "the host gave no TPM keys (only a pinned AK can attest it)", &[("reason", &e.to_string())]);
            None
        }
    }
}

fn message(data: payload_or_challenge_response::Data) -> PayloadOrChallengeResponse {
    PayloadOrChallengeResponse { data: Some(data) }
}

type AidStream = Pin<Box<dyn Stream<Item = Result<PayloadOrChallengeResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl NodeAttestor for Arc<AgentPlugin> {
    type AidAttestationStream = AidStream;

    async fn aid_attestation(&self, request: Request<Streaming<Challenge>>) -> Result<Response<Self::AidAttestationStream>, Status> {
        let settings = self.settings.read().unwrap_or_else(|p| p.into_inner()).clone();
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let mut challenges = request.into_inner();
        tokio::spawn(async move {
            let first = match settings.payload.clone() {
                Some(p) => p,
                None => {
                    let timeout = settings.timeout;
                    payload_with(tokio::task::spawn_blocking(move || host_keys(timeout)).await.ok().flatten())
                }
            };
            if tx.send(Ok(message(payload_or_challenge_response::Data::Payload(first)))).await.is_err() {
                return;
            }
            while let Ok(Some(Challenge { challenge })) = challenges.message().await {
                let (timeout, canned) = (settings.timeout, settings.canned_evidence.clone());
                let got = tokio::task::spawn_blocking(move || {
                    let c = ServerChallenge::decode(challenge.as_slice())
                        .map_err(|e| zone_guest::evidence::EvidenceError::Refused(format!("a challenge this plugin does not understand: {e}")))?;
                    let activation = c.activation.map(|a| zone_guest::evidence::Activation { id_object: a.id_object, encrypted_secret: a.encrypted_secret });
                    match canned {
                        Some(bytes) => Ok((bytes, Vec::new())),
                        None => zone_guest::evidence::request_activated(&c.nonce, activation, timeout),
                    }
                })
                .await;
                let reply = match got {
                    Ok(Ok((evidence, activated_secret))) => {
                        log(Level::Info, "evidence obtained from the host", &[("bytes", &evidence.len().to_string())]);
                        let answer = ChallengeResponse { evidence, activated_secret }.encode_to_vec();
                        Ok(message(payload_or_challenge_response::Data::ChallengeResponse(answer)))
                    }
                    Ok(Err(e)) => {
                        log(Level::Error, "no evidence from the host", &[("reason", &e.to_string())]);
                        Err(Status::unavailable(format!("no evidence from the host: {e}")))
                    }
                    Err(e) => Err(Status::internal(format!("evidence task failed: {e}"))),
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_what_the_server_expects() {
        crate::server::decode_payload(&payload()).unwrap();
        let keys = HostKeys { ak_public: vec![1], ek_public: vec![2], ek_certificate: vec![3], ek_chain: vec![vec![4]] };
        assert_eq!(crate::server::decode_payload(&payload_with(Some(keys.clone()))).unwrap().keys, Some(keys));
    }

    #[test]
    fn timeouts_are_configurable() {
        assert_eq!(timeout_of("").unwrap(), DEFAULT_TIMEOUT);
        assert_eq!(timeout_of("evidence_timeout_seconds = 5").unwrap(), Duration::from_secs(5));
        assert!(timeout_of("evidence_timeout_seconds = 0").is_err());
        assert!(timeout_of("other = 1").is_err());
    }
}
