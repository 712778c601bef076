//! Asking the host for evidence about this zone: `zone-guest evidence`.
//!
//! Any process in the zone may open its own connection to the host channel
//! port and send an `EvidenceRequest` with the verifier's nonce; the daemon
//! answers with evidence about this zone only (it knows the zone from the
//! connection, not from the request). The connection is private to the
//! request and closed after the reply.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;

use attestation_proto::channel::{Decoder, encode};
use attestation_proto::evidence::{MAX_NONCE_LEN, MIN_NONCE_LEN};
pub use attestation_proto::guest::{Activation, HostKeys};
use attestation_proto::guest::{EvidenceRequest, GuestMessage, HostMessage, KeysRequest, evidence_reply, guest_message, host_message, keys_reply};

/// Why there is no evidence.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The nonce is out of bounds.
    #[error("the nonce must be {MIN_NONCE_LEN} to {MAX_NONCE_LEN} bytes, got {0}")]
    Nonce(usize),
    /// No host channel.
    #[error(
        "cannot reach the host channel (vsock host port {port}): {0}; evidence is only available inside a zone with a vsock device",
        port = attestation_proto::channel::HOST_CHANNEL_PORT
    )]
    Connect(std::io::Error),
    /// The connection failed or timed out.
    #[error("host channel: {0}")]
    Io(std::io::Error),
    /// The host sent something that is not a valid frame.
    #[error("host channel: {0}")]
    Frame(#[from] attestation_proto::channel::FrameError),
    /// The host closed the connection without answering.
    #[error("the host closed the channel without answering; is the daemon running?")]
    Closed,
    /// The host answered with an error.
    #[error("the host refused: {0}")]
    Refused(String),
}

/// The request ID used on the private connection.
const REQUEST_ID: u64 = 1;

/// Sends `nonce` over a new host channel connection and returns the
/// evidence bytes (`zone.evidence.v1.Evidence`), waiting at most `timeout`
/// for each read.
pub fn request(nonce: &[u8], timeout: Duration) -> Result<Vec<u8>, EvidenceError> {
    request_activated(nonce, None, timeout).map(|(evidence, _)| evidence)
}

/// Like [`request`], with a verifier's credential for the host's AK: returns
/// the evidence and the secret the host's TPM released.
pub fn request_activated(
    nonce: &[u8],
    activation: Option<Activation>,
    timeout: Duration,
) -> Result<(Vec<u8>, Vec<u8>), EvidenceError> {
    if !(MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&nonce.len()) {
        return Err(EvidenceError::Nonce(nonce.len()));
    }
    let req = EvidenceRequest { id: REQUEST_ID, nonce: nonce.to_vec(), activation };
    let reply = exchange(guest_message::Message::EvidenceRequest(req), timeout, |m| match m {
        host_message::Message::EvidenceReply(r) if r.id == REQUEST_ID => Some(r),
        _ => None,
    })?;
    match reply.result {
        Some(evidence_reply::Result::Evidence(bytes)) => Ok((bytes, reply.activated_secret)),
        Some(evidence_reply::Result::Error(e)) => Err(EvidenceError::Refused(e)),
        None => Err(EvidenceError::Refused("an empty reply".into())),
    }
}

/// The host TPM's public keys (AK, EK, EK certificate).
pub fn host_keys(timeout: Duration) -> Result<HostKeys, EvidenceError> {
    let reply = exchange(guest_message::Message::KeysRequest(KeysRequest { id: REQUEST_ID }), timeout, |m| match m {
        host_message::Message::KeysReply(r) if r.id == REQUEST_ID => Some(r),
        _ => None,
    })?;
    match reply.result {
        Some(keys_reply::Result::Keys(k)) => Ok(k),
        Some(keys_reply::Result::Error(e)) => Err(EvidenceError::Refused(e)),
        None => Err(EvidenceError::Refused("an empty reply".into())),
    }
}

/// Sends `msg` on a private connection and waits for the reply `pick` accepts.
fn exchange<T>(
    msg: guest_message::Message,
    timeout: Duration,
    pick: impl Fn(host_message::Message) -> Option<T>,
) -> Result<T, EvidenceError> {
    let mut conn = crate::channel::connect().map_err(EvidenceError::Connect)?;
    set_read_timeout(&conn, timeout).map_err(EvidenceError::Io)?;
    conn.write_all(&encode(&GuestMessage { message: Some(msg) })?).map_err(EvidenceError::Io)?;
    let mut decoder = Decoder::for_host_messages();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let want = decoder.wanted().min(buf.len());
        let n = conn.read(&mut buf[..want]).map_err(EvidenceError::Io)?;
        if n == 0 {
            return Err(EvidenceError::Closed);
        }
        // Heartbeats (and anything else) are not for this connection.
        if let Some(HostMessage { message: Some(m) }) = decoder.push::<HostMessage>(&buf[..n])?
            && let Some(reply) = pick(m)
        {
            return Ok(reply);
        }
    }
}

fn set_read_timeout(conn: &std::fs::File, timeout: Duration) -> std::io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    };
    // SAFETY: setsockopt(2) on a socket we own, with a valid timeval and its size.
    let rc = unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::timeval>()).unwrap_or(libc::socklen_t::MAX),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `zone-guest evidence` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceArgs {
    /// The nonce (None: a random 32-byte one, printed to stderr).
    pub nonce: Option<Vec<u8>>,
    /// Output file (None: stdout).
    pub out: Option<String>,
    /// Per-read timeout.
    pub timeout: Duration,
}

/// Usage of `zone-guest evidence`.
pub const USAGE: &str = "usage: zone-guest evidence [--nonce HEX] [--out FILE] [--timeout SECONDS]\n\
    Asks the host for evidence about this zone for the nonce (default: 32 random bytes,\n\
    printed to stderr) and writes it to FILE (default: stdout).";

/// Parses the words after `evidence`.
pub fn parse_args(args: &[String]) -> Result<EvidenceArgs, String> {
    let mut parsed = EvidenceArgs { nonce: None, out: None, timeout: Duration::from_secs(30) };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--nonce" => {
                let v = value("--nonce")?;
                let n = hex::decode(v.trim()).map_err(|e| format!("--nonce is not hex: {e}"))?;
                if !(MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&n.len()) {
                    return Err(format!("--nonce must be {MIN_NONCE_LEN} to {MAX_NONCE_LEN} bytes, got {}", n.len()));
                }
                parsed.nonce = Some(n);
            }
            "--out" | "-o" => parsed.out = Some(value("--out")?),
            "--timeout" => {
                let v = value("--timeout")?;
                let secs: u64 = v.parse().map_err(|_| format!("--timeout must be whole seconds, got {v:?}"))?;
                if secs == 0 {
                    return Err("--timeout must be at least 1 second".into());
                }
                parsed.timeout = Duration::from_secs(secs);
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn arguments_are_checked() {
        let a = parse_args(&words("--nonce 00112233445566778899 --out /tmp/e --timeout 5")).unwrap();
        assert_eq!(a.nonce.as_deref(), Some(&hex::decode("00112233445566778899").unwrap()[..]));
        assert_eq!(a.out.as_deref(), Some("/tmp/e"));
        assert_eq!(a.timeout, Duration::from_secs(5));
        assert_eq!(parse_args(&[]).unwrap().nonce, None);
        assert!(parse_args(&words("--nonce 0011")).unwrap_err().contains("8 to 64 bytes"));
        assert!(parse_args(&words("--nonce zz")).unwrap_err().contains("not hex"));
        assert!(parse_args(&words("--out")).unwrap_err().contains("needs a value"));
        assert!(parse_args(&words("--timeout 0")).is_err());
        assert!(parse_args(&words("stray")).unwrap_err().contains("unexpected"));
    }

    #[test]
    fn a_bad_nonce_is_refused_before_connecting() {
        assert!(matches!(request(&[1; 4], Duration::from_secs(1)), Err(EvidenceError::Nonce(4))));
    }
}
