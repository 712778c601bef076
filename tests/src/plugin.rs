//! Starting a SPIRE plugin binary the way spire-server does (magic cookie,
//! handshake line on stdout, plaintext gRPC over its Unix socket), for the
//! plugin protocol test and the attestation benchmark.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use tonic::transport::{Channel, Endpoint};

/// A started plugin: its process, the handshake line and a connection.
#[derive(Debug)]
pub struct Started {
    /// The plugin process (the caller stops it).
    pub child: Child,
    /// The handshake line it printed, trimmed.
    pub handshake: String,
    /// Its socket (the handshake's address).
    pub socket: PathBuf,
    /// A gRPC connection to it.
    pub channel: Channel,
}

/// Starts `bin` with the NodeAttestor cookie and `TMPDIR=dir`, reads its
/// handshake line and connects to the socket it names; stderr goes to `stderr`.
pub fn start(bin: &Path, dir: &Path, stderr: Stdio, rt: &tokio::runtime::Runtime) -> anyhow::Result<Started> {
    let mut child = Command::new(bin)
        .env("NodeAttestor", "NodeAttestor")
        .env("TMPDIR", dir)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("the plugin's stdout")?).read_line(&mut line)?;
    let handshake = line.trim().to_owned();
    let socket = PathBuf::from(handshake.split('|').nth(3).with_context(|| format!("not a handshake line: {handshake:?}"))?);
    let path = socket.clone();
    let channel = rt.block_on(Endpoint::try_from("http://plugin")?.connect_with_connector(tower::service_fn(move |_| {
        let path = path.clone();
        async move { tokio::net::UnixStream::connect(path).await.map(hyper_util::rt::TokioIo::new) }
    })))?;
    Ok(Started { child, handshake, socket, channel })
}
