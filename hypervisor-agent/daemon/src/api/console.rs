//! `AttachConsole`: an interactive serial console through the daemon.
//!
//! Input messages are written to the zone VMM's `console.sock` (which types
//! them into the UART); the output stream follows `console.log` from the
//! moment of attaching, until the zone ends or the client goes away.

use std::sync::Arc;
use std::time::Duration;

use attestation_proto::control::{ConsoleInput, LogChunk};
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::manager::Daemon;

/// Starts the two directions of an attached console.
pub async fn attach(
    daemon: Arc<Daemon>,
    mut input: Streaming<ConsoleInput>,
) -> Result<ReceiverStream<Result<LogChunk, Status>>, Status> {
    let first = input
        .next()
        .await
        .ok_or_else(|| Status::invalid_argument("AttachConsole needs a first message naming the zone"))??;
    let name = first.name;
    let record = daemon.get(&name).map_err(super::status)?;
    if !record.state.is_live() {
        return Err(Status::failed_precondition(format!(
            "zone {name} is {}; only a running zone has a console",
            record.state.as_str()
        )));
    }
    let dir = daemon.dir_of(&name).map_err(super::status)?;
    let mut sock = tokio::net::UnixStream::connect(dir.console_socket())
        .await
        .map_err(|e| Status::unavailable(format!("the zone's console is not reachable ({e}); is its VMM still starting?")))?;
    if !first.data.is_empty() {
        sock.write_all(&first.data).await.map_err(|e| Status::unavailable(e.to_string()))?;
    }
    tokio::spawn(async move {
        while let Some(Ok(msg)) = input.next().await {
            if sock.write_all(&msg.data).await.is_err() {
                return;
            }
        }
    });

    // The zone's output from now on, polled often: a console is interactive.
    let tail = super::logs::Tail { follow: true, from_end: true, poll: Duration::from_millis(50) };
    Ok(super::logs::stream(daemon, name, dir.console_log(), tail))
}
