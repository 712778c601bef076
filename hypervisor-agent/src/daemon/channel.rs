//! The daemon's end of each zone's host channel.
//!
//! Every zone has its own listening socket, `vsock.sock_1024` in the zone's
//! directory: the VMM connects there when the guest connects to host port
//! 1024 (hybrid vsock). The zone is therefore known from the socket a
//! connection arrived on, never from what the guest says.
//!
//! A zone can only hurt itself through its channel: frames are bounded
//! ([`attestation_proto::channel::MAX_MESSAGE`]), the workload's output is
//! throttled to [`OUTPUT_RATE`] bytes per second (the daemon simply stops
//! reading, and vsock flow control then blocks the guest's writer), its log
//! is capped at [`MAX_WORKLOAD_LOG`] bytes, and a malformed frame closes the
//! connection with one log line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use attestation_proto::channel::{Decoder, HOST_CHANNEL_PORT, encode};
use attestation_proto::guest::{GuestMessage, HostMessage, Ping, guest_message, host_message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use super::Daemon;

/// Workload output accepted per second and zone (the burst is the same).
pub const OUTPUT_RATE: f64 = 1024.0 * 1024.0;
/// Largest workload log kept per zone.
pub const MAX_WORKLOAD_LOG: u64 = 64 * 1024 * 1024;
/// Heartbeat period.
const PING_EVERY: Duration = Duration::from_secs(5);

/// The listening socket of a zone's host channel.
pub fn socket_path(zone_dir: &Path) -> PathBuf {
    zone_dir.join(format!("vsock.sock_{HOST_CHANNEL_PORT}"))
}

/// Listens on the zone's channel socket until aborted.
pub fn spawn(daemon: Arc<Daemon>, name: String, zone_dir: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let path = socket_path(&zone_dir);
        let _ = std::fs::remove_file(&path);
        let listener = match UnixListener::bind(&path) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(zone = %name, path = %path.display(), error = %e, "cannot listen for the host channel");
                return;
            }
        };
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let (daemon, name, dir) = (Arc::clone(&daemon), name.clone(), zone_dir.clone());
                    tokio::spawn(async move {
                        if let Err(e) = session(&daemon, &name, &dir, stream).await {
                            tracing::warn!(zone = %name, error = %e, "host channel closed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(zone = %name, error = %e, "host channel accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// A token bucket in bytes.
#[derive(Debug)]
struct Throttle {
    tokens: f64,
    last: tokio::time::Instant,
}

impl Throttle {
    fn new() -> Self {
        Self { tokens: OUTPUT_RATE, last: tokio::time::Instant::now() }
    }

    /// Waits until `n` bytes may pass.
    async fn take(&mut self, n: usize) {
        let n = n as f64;
        loop {
            let now = tokio::time::Instant::now();
            self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * OUTPUT_RATE).min(OUTPUT_RATE);
            self.last = now;
            if self.tokens >= n.min(OUTPUT_RATE) {
                self.tokens -= n;
                return;
            }
            tokio::time::sleep(Duration::from_secs_f64((n.min(OUTPUT_RATE) - self.tokens) / OUTPUT_RATE)).await;
        }
    }
}

async fn session(daemon: &Daemon, name: &str, dir: &Path, stream: UnixStream) -> std::io::Result<()> {
    let (mut rd, mut wr) = stream.into_split();
    let mut log = tokio::fs::OpenOptions::new().create(true).append(true).open(dir.join("workload.log")).await?;
    let mut log_len = log.metadata().await?.len();
    let mut dropped_note = false;
    let mut decoder = Decoder::new();
    let mut throttle = Throttle::new();
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut seq = 0u64;
    let mut buf = vec![0u8; attestation_proto::channel::MAX_MESSAGE + 4];
    loop {
        let want = decoder.wanted().min(buf.len());
        tokio::select! {
            _ = ping.tick() => {
                seq += 1;
                let msg = HostMessage { message: Some(host_message::Message::Ping(Ping { seq })) };
                let frame = encode(&msg).map_err(std::io::Error::other)?;
                wr.write_all(&frame).await?;
            }
            n = rd.read(&mut buf[..want]) => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                let msg = decoder.push::<GuestMessage>(&buf[..n]).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("zone sent a bad frame: {e}"))
                })?;
                let Some(GuestMessage { message: Some(msg) }) = msg else { continue };
                match msg {
                    guest_message::Message::Hello(h) => daemon.mark_ready(name, h.ready_uptime_ms),
                    guest_message::Message::Exited(x) => daemon.mark_exited(name, x.status),
                    guest_message::Message::Pong(_) => {}
                    guest_message::Message::Output(o) => {
                        throttle.take(o.data.len()).await;
                        if log_len + o.data.len() as u64 <= MAX_WORKLOAD_LOG {
                            log.write_all(&o.data).await?;
                            log_len += o.data.len() as u64;
                        } else if !dropped_note {
                            dropped_note = true;
                            log.write_all(b"\n[hypervisor-agent: workload log limit reached; further output dropped]\n").await?;
                            tracing::warn!(zone = %name, "workload log limit reached; dropping output");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn throttle_limits_the_rate() {
        let mut t = Throttle::new();
        let start = tokio::time::Instant::now();
        for _ in 0..4 {
            t.take(1024 * 1024).await;
        }
        // 1 MiB burst, then 1 MiB/s: 4 MiB take about 3 s.
        let took = start.elapsed().as_secs_f64();
        assert!((2.9..3.5).contains(&took), "{took}");
    }
}
