//! HashiCorp go-plugin, plugin side, as SPIRE uses it: check the magic
//! cookie, listen on a Unix socket, print the handshake line
//! `1|1|unix|<path>|grpc` as the only stdout output, and serve plaintext
//! gRPC with the services every plugin needs next to its own:
//!
//! - `plugin.GRPCBroker/StartStream`: SPIRE sends the host services'
//!   address here before Init; the stream is kept open (closing it fails
//!   the load). This plugin uses no host services.
//! - `plugin.GRPCStdio/StreamStdio`: an open, empty stream (logs go to stderr).
//! - `plugin.GRPCController/Shutdown`: stops serving; the process exits.
//! - `spire.service.private.init.v1.Init`: names the services served.
//! - `spire.service.common.config.v1.Config`: see [`Configurable`].

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::sync::Notify;
use tokio_stream::Stream;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::Router;
use tonic::{Request, Response, Status, Streaming};

use crate::log::{Level, log};
use crate::proto::config::config_server::{Config, ConfigServer};
use crate::proto::config::{ConfigureRequest, ConfigureResponse, ValidateRequest, ValidateResponse};
use crate::proto::goplugin::grpc_broker_server::{GrpcBroker, GrpcBrokerServer};
use crate::proto::goplugin::grpc_controller_server::{GrpcController, GrpcControllerServer};
use crate::proto::goplugin::grpc_stdio_server::{GrpcStdio, GrpcStdioServer};
use crate::proto::goplugin::{ConnInfo, Empty, StdioData};
use crate::proto::init::init_server::{Init, InitServer};
use crate::proto::init::{DeinitRequest, DeinitResponse, InitRequest, InitResponse};

/// The magic cookie: SPIRE sets the plugin type as both key and value.
pub const COOKIE: &str = "NodeAttestor";
/// go-plugin's core protocol version and SPIRE's plugin protocol version.
pub const HANDSHAKE_VERSIONS: &str = "1|1";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A stream that stays open and never yields.
fn open_stream<T: Send + 'static>() -> BoxStream<T> {
    Box::pin(tokio_stream::pending())
}

/// Whether SPIRE (a go-plugin host of type NodeAttestor) started us.
pub fn check_cookie() -> Result<(), String> {
    match std::env::var(COOKIE) {
        Ok(v) if v == COOKIE => Ok(()),
        _ => Err(format!(
            "this is a SPIRE plugin: spire-server or spire-agent starts it through `plugin_cmd` in a \
             `NodeAttestor \"{}\"` block; it is not meant to be run by hand",
            crate::PLUGIN_NAME
        )),
    }
}

/// The handshake line for a socket path.
pub fn handshake_line(socket: &std::path::Path) -> String {
    format!("{HANDSHAKE_VERSIONS}|unix|{}|grpc", socket.display())
}

/// go-plugin's broker: keeps SPIRE's stream open and reads what it sends.
#[derive(Debug, Default)]
pub struct Broker;

#[tonic::async_trait]
impl GrpcBroker for Broker {
    type StartStreamStream = BoxStream<ConnInfo>;

    async fn start_stream(&self, request: Request<Streaming<ConnInfo>>) -> Result<Response<Self::StartStreamStream>, Status> {
        let mut incoming = request.into_inner();
        tokio::spawn(async move {
            while let Ok(Some(info)) = incoming.message().await {
                log(Level::Debug, "host service broker offered a connection (unused)", &[("service_id", &info.service_id.to_string())]);
            }
        });
        Ok(Response::new(open_stream()))
    }
}

/// go-plugin's stdio stream: open and empty.
#[derive(Debug, Default)]
pub struct Stdio;

#[tonic::async_trait]
impl GrpcStdio for Stdio {
    type StreamStdioStream = BoxStream<StdioData>;

    async fn stream_stdio(&self, _: Request<()>) -> Result<Response<Self::StreamStdioStream>, Status> {
        Ok(Response::new(open_stream()))
    }
}

/// go-plugin's controller: Shutdown stops the server.
#[derive(Debug)]
pub struct Controller {
    shutdown: Arc<Notify>,
}

#[tonic::async_trait]
impl GrpcController for Controller {
    async fn shutdown(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        log(Level::Debug, "shutdown requested by SPIRE", &[]);
        self.shutdown.notify_one();
        Ok(Response::new(Empty {}))
    }
}

/// SPIRE's Init: returns the names of the services this plugin serves.
#[derive(Debug)]
pub struct InitService {
    names: Vec<String>,
}

#[tonic::async_trait]
impl Init for InitService {
    async fn init(&self, _: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        Ok(Response::new(InitResponse { plugin_service_names: self.names.clone() }))
    }

    async fn deinit(&self, _: Request<DeinitRequest>) -> Result<Response<DeinitResponse>, Status> {
        Ok(Response::new(DeinitResponse {}))
    }
}

/// A plugin that takes `plugin_data`.
pub trait Configurable: Send + Sync + 'static {
    /// Checks and applies a configuration (swapped in atomically); the
    /// error is shown to the operator.
    fn configure(&self, trust_domain: &str, hcl: &str) -> Result<(), String>;
    /// Checks a configuration without applying it.
    fn validate(&self, trust_domain: &str, hcl: &str) -> Result<(), String>;
}

/// SPIRE's Config service over a [`Configurable`].
#[derive(Debug)]
pub struct ConfigService<C> {
    plugin: Arc<C>,
}

impl<C> ConfigService<C> {
    /// Serves `plugin`'s configuration.
    pub fn new(plugin: Arc<C>) -> Self {
        Self { plugin }
    }
}

#[tonic::async_trait]
impl<C: Configurable> Config for ConfigService<C> {
    async fn configure(&self, request: Request<ConfigureRequest>) -> Result<Response<ConfigureResponse>, Status> {
        let r = request.into_inner();
        let td = r.core_configuration.map(|c| c.trust_domain).unwrap_or_default();
        match self.plugin.configure(&td, &r.hcl_configuration) {
            Ok(()) => {
                log(Level::Info, "configured", &[("trust_domain", &td)]);
                Ok(Response::new(ConfigureResponse {}))
            }
            Err(e) => {
                log(Level::Error, "configuration refused", &[("reason", &e)]);
                Err(Status::invalid_argument(e))
            }
        }
    }

    async fn validate(&self, request: Request<ValidateRequest>) -> Result<Response<ValidateResponse>, Status> {
        let r = request.into_inner();
        let td = r.core_configuration.map(|c| c.trust_domain).unwrap_or_default();
        Ok(Response::new(match self.plugin.validate(&td, &r.hcl_configuration) {
            Ok(()) => ValidateResponse { valid: true, notes: Vec::new() },
            Err(e) => ValidateResponse { valid: false, notes: vec![e] },
        }))
    }
}

/// The plugin's socket, in a directory of its own (mode 0700, a random
/// name) under `PLUGIN_UNIX_SOCKET_DIR`, `TMPDIR` or `/tmp`: no other user
/// can reach the socket, guess its path ahead of time or put one there first.
pub fn private_socket() -> std::io::Result<(PathBuf, PathBuf)> {
    use std::io::Read;
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::var_os("PLUGIN_UNIX_SOCKET_DIR")
        .or_else(|| std::env::var_os("TMPDIR"))
        .map(PathBuf::from)
        .unwrap_or_else(|| "/tmp".into());
    let mut last = None;
    for _ in 0..8 {
        let mut r = [0u8; 12];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut r)?;
        let dir = base.join(format!("zone-attestor-{}", hex::encode(r)));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok((dir.join("plugin.sock"), dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("cannot create a private socket directory")))
}

/// Serves a plugin: `add` adds its own services to the router, `names` are
/// their full gRPC names (for Init). Returns when SPIRE asks for shutdown.
pub async fn serve<C: Configurable>(
    names: &[&str],
    config: Arc<C>,
    add: impl FnOnce(Router) -> Router,
) -> anyhow::Result<()> {
    check_cookie().map_err(anyhow::Error::msg)?;
    // A Ctrl-C meant for SPIRE's process group must not kill the plugin
    // before SPIRE unloads it.
    // SAFETY: installing SIG_IGN for SIGINT has no preconditions.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let (path, dir) = private_socket().map_err(|e| anyhow::anyhow!("cannot create the plugin's socket directory: {e}"))?;
    let listener = UnixListener::bind(&path).map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let shutdown = Arc::new(Notify::new());
    let mut all: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    all.push(crate::proto::CONFIG.to_owned());
    let router = tonic::transport::Server::builder()
        .add_service(GrpcBrokerServer::new(Broker))
        .add_service(GrpcStdioServer::new(Stdio))
        .add_service(GrpcControllerServer::new(Controller { shutdown: Arc::clone(&shutdown) }))
        .add_service(InitServer::new(InitService { names: all }))
        .add_service(ConfigServer::new(ConfigService::new(config)));
    let router = add(router);
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", handshake_line(&path))?;
        out.flush()?;
    }
    // After Shutdown, exit without waiting for SPIRE's open streams (the
    // broker's never ends): only long enough for the reply to go out.
    let result = tokio::select! {
        r = router.serve_with_incoming(UnixListenerStream::new(listener)) => r.map_err(|e| anyhow::anyhow!("plugin server: {e}")),
        () = async {
            shutdown.notified().await;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        } => Ok(()),
    };
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_socket_directory_is_private_and_unpredictable() {
        use std::os::unix::fs::PermissionsExt;
        let (a, da) = private_socket().unwrap();
        let (b, db) = private_socket().unwrap();
        assert_ne!(da, db);
        assert_eq!(std::fs::metadata(&da).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(a.parent(), Some(da.as_path()));
        assert_eq!(b.file_name(), a.file_name());
        std::fs::remove_dir(da).unwrap();
        std::fs::remove_dir(db).unwrap();
    }

    #[test]
    fn the_handshake_line_is_what_go_plugin_parses() {
        assert_eq!(handshake_line(std::path::Path::new("/tmp/x.sock")), "1|1|unix|/tmp/x.sock|grpc");
    }
}
