//! Connecting `zonectl` to the daemon's control socket.

use std::path::{Path, PathBuf};

use attestation_proto::control::zone_control_client::ZoneControlClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// The control socket: `--socket`, else `$ZONE_SOCKET`, else the default.
pub fn socket_path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_owned)
        .or_else(|| std::env::var_os("ZONE_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| attestation_proto::DEFAULT_CONTROL_SOCKET.into())
}

/// Connects to the daemon, with an error that says how to start it.
pub async fn connect(socket: &Path) -> anyhow::Result<ZoneControlClient<Channel>> {
    if let Err(e) = tokio::net::UnixStream::connect(socket).await {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                "run zonectl as root or as a member of the daemon's socket_group".to_string()
            }
            _ => "start the daemon: `systemctl start hypervisor-agent`, or run `hypervisor-agent daemon --config FILE` \
                  (pass --socket or set ZONE_SOCKET if it listens elsewhere)"
                .to_string(),
        };
        anyhow::bail!("cannot reach hypervisor-agent at {} ({e}); {hint}", socket.display());
    }
    let path = socket.to_owned();
    let channel = Endpoint::try_from("http://hypervisor-agent.invalid")?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { tokio::net::UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await?;
    Ok(ZoneControlClient::new(channel))
}

/// Turns a gRPC status into a plain message (the daemon's messages already
/// say what to do).
pub fn explain(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

/// Runs an async command body on a small runtime.
pub fn block_on<T, F: std::future::Future<Output = anyhow::Result<T>>>(f: F) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(f)
}
