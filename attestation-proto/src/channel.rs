//! Framing of the host channel: each message is a 4-byte big-endian length
//! followed by that many bytes of protobuf, at most [`MAX_MESSAGE`] bytes.
//!
//! The decoder is incremental and bounded: it never buffers more than one
//! frame, and a length above the limit is an error (the daemon then drops the
//! connection), so a zone cannot make the host allocate without bound.

use prost::Message;

/// Largest message body, in bytes.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// vsock port the daemon listens on for zone-guest (host CID 2).
pub const HOST_CHANNEL_PORT: u32 = 1024;

/// A framing error.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The announced length exceeds [`MAX_MESSAGE`].
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
    /// The body is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Encodes `msg` as one frame.
pub fn encode<M: Message>(msg: &M) -> Result<Vec<u8>, FrameError> {
    let len = msg.encoded_len();
    if len > MAX_MESSAGE {
        return Err(FrameError::TooLarge(len));
    }
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&u32::try_from(len).map_err(|_| FrameError::TooLarge(len))?.to_be_bytes());
    msg.encode(&mut out).map_err(|e| FrameError::Malformed(e.to_string()))?;
    Ok(out)
}

/// Incremental frame decoder.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// A decoder with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many more bytes the decoder wants before it can make progress.
    /// Read at most this many from the connection, so the buffer never holds
    /// more than one frame.
    pub fn wanted(&self) -> usize {
        if self.buf.len() < 4 {
            return 4 - self.buf.len();
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        (4 + len.min(MAX_MESSAGE)).saturating_sub(self.buf.len()).max(1)
    }

    /// Feeds bytes (at most [`Decoder::wanted`] of them); returns a complete
    /// message when one is available.
    pub fn push<M: Message + Default>(&mut self, bytes: &[u8]) -> Result<Option<M>, FrameError> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_MESSAGE {
            return Err(FrameError::TooLarge(len));
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
        assert_eq!(d.push::<GuestMessage>(&huge), Err(FrameError::TooLarge(MAX_MESSAGE + 1)));
        let mut d = Decoder::new();
        let garbage = [0, 0, 0, 3, 0xff, 0xff, 0xff];
        assert!(matches!(d.push::<GuestMessage>(&garbage), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn wanted_never_exceeds_one_frame() {
        let mut d = Decoder::new();
        d.push::<GuestMessage>(&u32::MAX.to_be_bytes()).ok();
        assert!(d.wanted() <= MAX_MESSAGE + 4);
    }
}
