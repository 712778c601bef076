//! The daemon's end of each zone's host channel.
//!
//! Every zone has its own listening socket, `vsock.sock_1024` in the zone's
//! directory: the VMM connects there when the guest connects to host port
//! 1024 (hybrid vsock). The zone is therefore known from the socket a
//! connection arrived on, never from what the guest says.
//!
//! A zone can only hurt itself through its channel: frames are bounded
//! ([`attestation_proto::channel::MAX_MESSAGE`]); at most
//! [`MAX_CONNECTIONS`] connections per zone are open at once (more are
//! closed on accept), so a zone holds a bounded number of the daemon's
//! descriptors; the workload's output is throttled to [`OUTPUT_RATE`] bytes
//! per second and its log capped at [`MAX_WORKLOAD_LOG`] bytes **per zone**,
//! across all its connections (the daemon simply stops reading, and vsock
//! flow control then blocks the guest's writer); a malformed frame closes the
//! connection with one log line; at most [`MAX_EVIDENCE_IN_FLIGHT`] evidence
//! requests per zone wait for the TPM (more are refused at once).
//!
//! Evidence requests are answered about the zone the connection belongs to,
//! and only while it is the launch that was current when the connection was
//! accepted. They are served off the session's loop, so heartbeats and
//! output keep flowing while the TPM quotes.

use std::sync::Arc;
use std::time::Duration;

use attestation_proto::channel::{Decoder, encode_host};
use attestation_proto::guest::{
    Activation, EvidenceReply, EvidenceRequest, GuestMessage, HostKeys, HostMessage, KeysReply, Ping, evidence_reply,
    guest_message, host_message, keys_reply,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};

use crate::zone_dir::ZoneDir;

/// What a zone's channel tells the zone manager, and asks of it (the
/// manager implements it; the channel knows nothing else of the daemon).
pub trait ZoneHost: Send + Sync + 'static {
    /// The zone's current launch, if it was measured.
    fn launch_id(&self, zone: &str) -> Option<String>;
    /// zone-guest said hello.
    fn mark_ready(&self, zone: &str, ready_uptime_ms: u64);
    /// The workload exited.
    fn mark_exited(&self, zone: &str, status: i32);
    /// Fresh evidence about the zone's launch `launch_id` for `nonce`, with
    /// the secret of `activation` when there is one (empty otherwise), or why not.
    fn evidence(
        &self,
        zone: &str,
        launch_id: Option<&str>,
        nonce: &[u8],
        activation: Option<Activation>,
    ) -> impl std::future::Future<Output = Result<(Vec<u8>, Vec<u8>), String>> + Send;
    /// The host TPM's public keys.
    fn keys(&self) -> HostKeys;
}

/// Workload output accepted per second and zone (the burst is the same).
pub const OUTPUT_RATE: f64 = 1024.0 * 1024.0;
/// Largest workload log kept per zone.
pub const MAX_WORKLOAD_LOG: u64 = 64 * 1024 * 1024;
/// Evidence requests of one zone that may wait for the TPM at once.
pub const MAX_EVIDENCE_IN_FLIGHT: usize = 4;
/// Credential activations one zone may ask for per minute (each is a TPM
/// decryption with the EK; a verifier needs one per attestation).
pub const MAX_ACTIVATIONS_PER_MINUTE: u32 = 30;
/// Host-channel connections one zone may have open at once.
pub const MAX_CONNECTIONS: usize = 8;
/// Heartbeat period.
const PING_EVERY: Duration = Duration::from_secs(5);

/// Serves the zone's channel listener (`sock/vsock.sock_1024`) until aborted
/// (connections already accepted live on until they close: the VMM's end
/// goes with the zone).
pub async fn serve<H: ZoneHost>(daemon: Arc<H>, name: String, zone_dir: ZoneDir, listener: UnixListener) {
    let evidence_slots = Arc::new(Semaphore::new(MAX_EVIDENCE_IN_FLIGHT));
    let connection_slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let output = Arc::new(tokio::sync::Mutex::new(ZoneOutput::new(zone_dir.workload_log())));
    let activations = Arc::new(std::sync::Mutex::new(ActivationBudget::default()));
    let mut refused = 0u64;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let Ok(permit) = Arc::clone(&connection_slots).try_acquire_owned() else {
                    refused += 1;
                    if refused.is_power_of_two() {
                        tracing::warn!(zone = %name, refused, "host channel connection refused: the zone already has {MAX_CONNECTIONS} open");
                    }
                    drop(stream);
                    continue;
                };
                let (daemon, name, output) = (Arc::clone(&daemon), name.clone(), Arc::clone(&output));
                let limits = Limits { evidence_slots: Arc::clone(&evidence_slots), activations: Arc::clone(&activations) };
                tokio::spawn(async move {
                    if let Err(e) = session(daemon, &name, output, stream, limits).await {
                        tracing::warn!(zone = %name, error = %e, "host channel closed");
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(zone = %name, error = %e, "host channel accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What a zone's connections share: evidence slots and the activation budget.
#[derive(Debug, Clone)]
struct Limits {
    evidence_slots: Arc<Semaphore>,
    activations: Arc<std::sync::Mutex<ActivationBudget>>,
}

/// Activations in the current minute.
#[derive(Debug, Default)]
struct ActivationBudget {
    window: Option<std::time::Instant>,
    used: u32,
}

impl ActivationBudget {
    /// Takes one activation; `false` when the zone used this minute's.
    fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        if self.window.is_none_or(|w| now.duration_since(w) >= Duration::from_secs(60)) {
            self.window = Some(now);
            self.used = 0;
        }
        if self.used >= MAX_ACTIVATIONS_PER_MINUTE {
            return false;
        }
        self.used += 1;
        true
    }
}

/// The zone's workload output, shared by all its connections: one throttle,
/// one log and its cap.
#[derive(Debug)]
struct ZoneOutput {
    path: std::path::PathBuf,
    log: Option<tokio::fs::File>,
    log_len: u64,
    dropped_note: bool,
    throttle: Throttle,
}

impl ZoneOutput {
    fn new(path: std::path::PathBuf) -> Self {
        Self { path, log: None, log_len: 0, dropped_note: false, throttle: Throttle::new() }
    }

    /// Appends `data` at the zone's rate, up to the cap.
    async fn write(&mut self, zone: &str, data: &[u8]) -> std::io::Result<()> {
        self.throttle.take(data.len()).await;
        if self.log.is_none() {
            let f = tokio::fs::OpenOptions::new().create(true).append(true).mode(0o640).open(&self.path).await?;
            self.log_len = f.metadata().await?.len();
            self.log = Some(f);
        }
        let Some(log) = self.log.as_mut() else { return Ok(()) };
        if self.log_len + data.len() as u64 <= MAX_WORKLOAD_LOG {
            log.write_all(data).await?;
            self.log_len += data.len() as u64;
        } else if !self.dropped_note {
            self.dropped_note = true;
            log.write_all(b"\n[hypervisor-agent: workload log limit reached; further output dropped]\n").await?;
            tracing::warn!(zone = %zone, "workload log limit reached; dropping output");
        }
        Ok(())
    }
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

/// Serves one evidence request in the background; the reply goes to `replies`.
fn serve_evidence<H: ZoneHost>(
    daemon: &Arc<H>,
    name: &str,
    launch_id: Option<&str>,
    req: EvidenceRequest,
    limits: &Limits,
    replies: &mpsc::Sender<HostMessage>,
) {
    let id = req.id;
    let reply = move |result, activated_secret| {
        HostMessage { message: Some(host_message::Message::EvidenceReply(EvidenceReply { id, result: Some(result), activated_secret })) }
    };
    let Ok(permit) = Arc::clone(&limits.evidence_slots).try_acquire_owned() else {
        let busy = format!("zone {name} already has {MAX_EVIDENCE_IN_FLIGHT} evidence requests waiting for the TPM; retry when one is answered");
        // A full reply queue means the zone is not reading: dropping is fine.
        let _ = replies.try_send(reply(evidence_reply::Result::Error(busy), Vec::new()));
        return;
    };
    if req.activation.is_some() && !limits.activations.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let busy = format!("zone {name} asked for {MAX_ACTIVATIONS_PER_MINUTE} credential activations this minute; retry in a minute");
        let _ = replies.try_send(reply(evidence_reply::Result::Error(busy), Vec::new()));
        return;
    }
    let (daemon, name, launch_id, replies) = (Arc::clone(daemon), name.to_owned(), launch_id.map(str::to_owned), replies.clone());
    tokio::spawn(async move {
        let (result, secret) = match daemon.evidence(&name, launch_id.as_deref(), &req.nonce, req.activation).await {
            Ok((bytes, secret)) => (evidence_reply::Result::Evidence(bytes), secret),
            Err(e) => {
                tracing::warn!(zone = %name, error = %e, "evidence request over the host channel refused");
                (evidence_reply::Result::Error(e), Vec::new())
            }
        };
        let _ = replies.send(reply(result, secret)).await;
        drop(permit);
    });
}

async fn session<H: ZoneHost>(
    daemon: Arc<H>,
    name: &str,
    output: Arc<tokio::sync::Mutex<ZoneOutput>>,
    stream: UnixStream,
    limits: Limits,
) -> std::io::Result<()> {
    // The launch this connection belongs to: evidence is only ever about it.
    let launch_id = daemon.launch_id(name);
    let (replies, mut reply_rx) = mpsc::channel::<HostMessage>(MAX_EVIDENCE_IN_FLIGHT + 1);
    let (mut rd, mut wr) = stream.into_split();
    // Writes (pings, evidence replies) run on a task of their own: a zone
    // that stops reading what the host sends can never keep the host from
    // reading what the zone sends, nor the other way round.
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0u64;
        loop {
            let msg = tokio::select! {
                _ = ping.tick() => {
                    seq += 1;
                    HostMessage { message: Some(host_message::Message::Ping(Ping { seq })) }
                }
                m = reply_rx.recv() => match m { Some(m) => m, None => return Ok::<(), std::io::Error>(()) },
            };
            let frame = encode_host(&msg).map_err(std::io::Error::other)?;
            wr.write_all(&frame).await?;
        }
    });
    let result = read_frames(daemon, name, &output, &mut rd, &limits, launch_id.as_deref(), &replies).await;
    writer.abort();
    result
}

/// The session's read side: frames from the zone until it closes.
async fn read_frames<H: ZoneHost>(
    daemon: Arc<H>,
    name: &str,
    output: &tokio::sync::Mutex<ZoneOutput>,
    rd: &mut tokio::net::unix::OwnedReadHalf,
    limits: &Limits,
    launch_id: Option<&str>,
    replies: &mpsc::Sender<HostMessage>,
) -> std::io::Result<()> {
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; attestation_proto::channel::MAX_MESSAGE + 4];
    loop {
        let want = decoder.wanted().min(buf.len());
        let n = rd.read(&mut buf[..want]).await?;
        if n == 0 {
            return Ok(());
        }
        let msg = decoder
            .push::<GuestMessage>(&buf[..n])
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("zone sent a bad frame: {e}")))?;
        let Some(GuestMessage { message: Some(msg) }) = msg else { continue };
        match msg {
            guest_message::Message::Hello(h) => daemon.mark_ready(name, h.ready_uptime_ms),
            guest_message::Message::Exited(x) => daemon.mark_exited(name, x.status),
            guest_message::Message::Pong(_) => {}
            guest_message::Message::EvidenceRequest(req) => serve_evidence(&daemon, name, launch_id, req, limits, replies),
            guest_message::Message::KeysRequest(k) => {
                let msg = KeysReply { id: k.id, result: Some(keys_reply::Result::Keys(daemon.keys())) };
                // A zone that does not read its replies loses this one.
                let _ = replies.try_send(HostMessage { message: Some(host_message::Message::KeysReply(msg)) });
            }
            guest_message::Message::Output(o) => output.lock().await.write(name, &o.data).await?,
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
