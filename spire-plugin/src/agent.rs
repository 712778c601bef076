//! The agent-side `zone` NodeAttestor, run by `spire-agent` inside a zone:
//! sends [`crate::server::AgentHello`] as the payload, then answers each
//! challenge (the server's nonce) with fresh evidence about this zone,
//! asked for over the zone's host channel (`zone_guest::evidence`).

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
use crate::server::{AgentHello, PROTOCOL_VERSION};

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

/// The payload the agent plugin sends first.
pub fn payload() -> Vec<u8> {
    serde_json::to_vec(&AgentHello { zone_attestor: PROTOCOL_VERSION }).unwrap_or_default()
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
            let first = settings.payload.clone().unwrap_or_else(payload);
            if tx.send(Ok(message(payload_or_challenge_response::Data::Payload(first)))).await.is_err() {
                return;
            }
            while let Ok(Some(Challenge { challenge: nonce })) = challenges.message().await {
                let (timeout, canned) = (settings.timeout, settings.canned_evidence.clone());
                let got = tokio::task::spawn_blocking(move || match canned {
                    Some(bytes) => Ok(bytes),
                    None => zone_guest::evidence::request(&nonce, timeout),
                })
                .await;
                let reply = match got {
                    Ok(Ok(evidence)) => {
                        log(Level::Info, "evidence obtained from the host", &[("bytes", &evidence.len().to_string())]);
                        Ok(message(payload_or_challenge_response::Data::ChallengeResponse(evidence)))
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
        crate::server::check_payload(&payload()).unwrap();
    }

    #[test]
    fn timeouts_are_configurable() {
        assert_eq!(timeout_of("").unwrap(), DEFAULT_TIMEOUT);
        assert_eq!(timeout_of("evidence_timeout_seconds = 5").unwrap(), Duration::from_secs(5));
        assert!(timeout_of("evidence_timeout_seconds = 0").is_err());
        assert!(timeout_of("other = 1").is_err());
    }
}
