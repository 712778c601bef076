//! Framing of the host channel: each message is a 4-byte big-endian length
//! followed by that many bytes of protobuf. A zone's messages are at most
//! [`MAX_MESSAGE`] bytes; the host's at most [`MAX_HOST_MESSAGE`] (an
//! evidence reply carries the event log).
//!
//! The decoder is incremental and bounded: it never buffers more than one
//! frame, and a length above its limit is an error (the daemon then drops the
//! connection), so a zone cannot make the host allocate without bound.

use prost::Message;

/// Largest zone -> host message body, in bytes.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Largest host -> zone message body, in bytes: the largest evidence plus
/// room for the reply around it.
pub const MAX_HOST_MESSAGE: usize = crate::evidence::MAX_EVIDENCE_LEN + MAX_MESSAGE;
/// vsock port the daemon listens on for zone-guest (host CID 2).
pub const HOST_CHANNEL_PORT: u32 = 1024;

/// A framing error.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The announced length exceeds the limit.
    #[error("message of {0} bytes exceeds the {1}-byte limit")]
    TooLarge(usize, usize),
    /// The body is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Encodes a zone's message as one frame (at most [`MAX_MESSAGE`] bytes).
pub fn encode<M: Message>(msg: &M) -> Result<Vec<u8>, FrameError> {
    encode_limited(msg, MAX_MESSAGE)
}

/// Encodes a host message as one frame (at most [`MAX_HOST_MESSAGE`] bytes).
pub fn encode_host<M: Message>(msg: &M) -> Result<Vec<u8>, FrameError> {
    encode_limited(msg, MAX_HOST_MESSAGE)
}

fn encode_limited<M: Message>(msg: &M, limit: usize) -> Result<Vec<u8>, FrameError> {
    let len = msg.encoded_len();
    if len > limit {
        return Err(FrameError::TooLarge(len, limit));
    }
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&u32::try_from(len).map_err(|_| FrameError::TooLarge(len, limit))?.to_be_bytes());
    msg.encode(&mut out).map_err(|e| FrameError::Malformed(e.to_string()))?;
    Ok(out)
}

/// Incremental frame decoder.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    limit: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder of a zone's messages (the daemon's end).
    pub fn new() -> Self {
        Self { buf: Vec::new(), limit: MAX_MESSAGE }
    }

    /// A decoder of the host's messages (the zone's end).
    pub fn for_host_messages() -> Self {
        Self { buf: Vec::new(), limit: MAX_HOST_MESSAGE }
    }

    /// How many more bytes the decoder wants before it can make progress.
    /// Read at most this many from the connection, so the buffer never holds
    /// more than one frame.
    pub fn wanted(&self) -> usize {
        if self.buf.len() < 4 {
            return 4 - self.buf.len();
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        (4 + len.min(self.limit)).saturating_sub(self.buf.len()).max(1)
    }

    /// Feeds bytes (at most [`Decoder::wanted`] of them); returns a complete
    /// message when one is available.
    pub fn push<M: Message + Default>(&mut self, bytes: &[u8]) -> Result<Option<M>, FrameError> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > self.limit {
            return Err(FrameError::TooLarge(len, self.limit));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let msg = M::decode(&self.buf[4..4 + len]).map_err(|e| FrameError::Malformed(e.to_string()));
        self.buf.drain(..4 + len);
        msg.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::{GuestMessage, Hello, guest_message};

    #[test]
    fn round_trip_byte_by_byte() {
        let msg = GuestMessage { message: Some(guest_message::Message::Hello(Hello { ready_uptime_ms: 42, version: "1".into() })) };
        let frame = encode(&msg).unwrap();
        let mut d = Decoder::new();
        let mut got = None;
        for b in &frame {
            assert!(d.wanted() >= 1);
            if let Some(m) = d.push::<GuestMessage>(std::slice::from_ref(b)).unwrap() {
                got = Some(m);
            }
        }
        assert_eq!(got, Some(msg));
        assert_eq!(d.wanted(), 4);
    }

    #[test]
    fn oversized_and_garbage_frames_are_errors() {
        let mut d = Decoder::new();
        let huge = u32::try_from(MAX_MESSAGE + 1).unwrap().to_be_bytes();
        assert_eq!(d.push::<GuestMessage>(&huge), Err(FrameError::TooLarge(MAX_MESSAGE + 1, MAX_MESSAGE)));
        let mut d = Decoder::new();
        let garbage = [0, 0, 0, 3, 0xff, 0xff, 0xff];
        assert!(matches!(d.push::<GuestMessage>(&garbage), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn host_frames_may_carry_evidence_but_zone_frames_may_not() {
        use crate::guest::{EvidenceReply, HostMessage, evidence_reply, host_message};
        let reply = |n: usize| HostMessage {
            message: Some(host_message::Message::EvidenceReply(EvidenceReply {
                id: 1,
                result: Some(evidence_reply::Result::Evidence(vec![7; n])),
                activated_secret: Vec::new(),
            })),
        };
        let frame = encode_host(&reply(1024 * 1024)).unwrap();
        let mut d = Decoder::for_host_messages();
        let mut off = 0;
        let mut got = None;
        while off < frame.len() {
            let n = d.wanted().min(frame.len() - off);
            got = d.push::<HostMessage>(&frame[off..off + n]).unwrap();
            off += n;
        }
        assert_eq!(got, Some(reply(1024 * 1024)));
        assert!(matches!(Decoder::new().push::<HostMessage>(&frame[..4]), Err(FrameError::TooLarge(..))));
        assert!(matches!(encode(&reply(1024 * 1024)), Err(FrameError::TooLarge(..))));
        assert!(matches!(encode_host(&reply(MAX_HOST_MESSAGE)), Err(FrameError::TooLarge(..))));
    }

    #[test]
    fn wanted_never_exceeds_one_frame() {
        let mut d = Decoder::new();
        d.push::<GuestMessage>(&u32::MAX.to_be_bytes()).ok();
        assert!(d.wanted() <= MAX_MESSAGE + 4);
    }
}
