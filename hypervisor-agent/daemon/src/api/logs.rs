//! Streaming a zone's console or workload log, optionally following it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use attestation_proto::control::LogChunk;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_stream::wrappers::ReceiverStream;

use crate::manager::Daemon;

/// Chunk size of a log stream.
const CHUNK: usize = 32 * 1024;

/// How a log is streamed.
#[derive(Debug, Clone, Copy)]
pub struct Tail {
    /// Keep streaming what is appended until the zone has ended.
    pub follow: bool,
    /// Start at the current end instead of the beginning.
    pub from_end: bool,
    /// How often to look for new bytes while following.
    pub poll: Duration,
}

/// Streams `path` as `tail` says, until the end of the file (or, when
/// following, until the zone has ended or the client goes away).
pub fn stream(daemon: Arc<Daemon>, name: String, path: PathBuf, tail: Tail) -> ReceiverStream<Result<LogChunk, tonic::Status>> {
    let follow = tail.follow;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut file = loop {
            // The VMM writes the console log: never follow a link planted there.
            match crate::zone_dir::ZoneDir::open_log(&path) {
                Ok(f) => break tokio::fs::File::from_std(f),
                Err(_) if follow && daemon.get(&name).map(|r| r.state.is_live()).unwrap_or(false) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => return,
            }
        };
        if tail.from_end && file.seek(std::io::SeekFrom::End(0)).await.is_err() {
            return;
        }
        let mut buf = vec![0u8; CHUNK];
        loop {
            match file.read(&mut buf).await {
                Ok(0) => {
                    let live = daemon.get(&name).map(|r| r.state.is_live()).unwrap_or(false);
                    if !follow || !live || tx.is_closed() {
                        // One last read: the zone may have written just before it ended.
                        if let Ok(n) = file.read(&mut buf).await {
                            if n > 0 {
                                let _ = tx.send(Ok(LogChunk { data: buf[..n].to_vec() })).await;
                                continue;
                            }
                        }
                        return;
                    }
                    tokio::time::sleep(tail.poll).await;
                }
                Ok(n) => {
                    if tx.send(Ok(LogChunk { data: buf[..n].to_vec() })).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(tonic::Status::internal(format!("reading the log failed: {e}")))).await;
                    return;
                }
            }
        }
    });
    ReceiverStream::new(rx)
}
