//! The zone attestor's SPIRE plugins.
//!
//! Two binaries that an unmodified `spire-server` and `spire-agent` load as
//! external `NodeAttestor` plugins named `zone` (HashiCorp go-plugin over
//! gRPC, see [`goplugin`]):
//!
//! - [`server`]: issues a fresh nonce as the challenge, verifies the zone's
//!   evidence with `attestation-proto`'s verifier against its configured
//!   trusted AKs and policy, and returns the agent ID
//!   `spiffe://<trust domain>/spire/agent/zone/<host>/<zone>` with `zone:`
//!   selectors. Agents must re-attest (`can_reattest`), so a zone that no
//!   longer runs cannot renew its identity.
//! - [`agent`]: runs inside a zone and answers the challenge with fresh
//!   evidence for that nonce, obtained over the zone's host channel
//!   (`zone_guest::evidence`).
//!
//! | module | what |
//! |---|---|
//! | [`proto`] | SPIRE's and go-plugin's gRPC messages and services |
//! | [`goplugin`] | the go-plugin handshake and the services every plugin serves |
//! | [`config`] | `plugin_data` (HCL) parsing |
//! | [`log`] | hclog JSON lines on stderr, which SPIRE logs at their level |
//! | [`server`], [`agent`] | the two NodeAttestors |

pub mod agent;
pub mod config;
pub mod goplugin;
pub mod log;
pub mod proto;
pub mod server;

/// The plugin name SPIRE is configured with (`NodeAttestor "zone"`): the
/// selector type and the agent ID's first path segment after `/spire/agent/`.
pub const PLUGIN_NAME: &str = "zone";

/// `main` of the server plugin binary: serves until SPIRE shuts it down.
pub fn server_main() -> i32 {
    use proto::server_nodeattestor::node_attestor_server::NodeAttestorServer;
    let plugin = std::sync::Arc::new(server::ServerPlugin::default());
    let served = std::sync::Arc::clone(&plugin);
    // Attestations verify on the runtime's worker threads, one per core.
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    run("zone-attestor-server", workers, goplugin::serve(&[proto::SERVER_NODEATTESTOR], plugin, |r| r.add_service(NodeAttestorServer::new(served))))
}

/// `main` of the agent plugin binary: serves until SPIRE shuts it down.
pub fn agent_main() -> i32 {
    use proto::agent_nodeattestor::node_attestor_server::NodeAttestorServer;
    let plugin = std::sync::Arc::new(agent::AgentPlugin::default());
    let served = std::sync::Arc::clone(&plugin);
    run("zone-attestor-agent", 1, goplugin::serve(&[proto::AGENT_NODEATTESTOR], plugin, |r| r.add_service(NodeAttestorServer::new(served))))
}

/// Serves on a runtime of `workers` threads (1: the current thread only).
fn run(name: &str, workers: usize, serve: impl std::future::Future<Output = anyhow::Result<()>>) -> i32 {
    let built = if workers > 1 {
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    };
    let rt = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(serve) {
        Ok(()) => 0,
        Err(e) => {
            log::log(log::Level::Error, &format!("{name}: {e}"), &[]);
            1
        }
    }
}
