//! One vsock stream connection between a guest port and a host Unix socket:
//! its state machine (virtio 1.1 §5.10.6.3–§5.10.6.6) and credit-based flow
//! control (§5.10.6.3).
//!
//! ```text
//!  guest REQUEST ──(host socket connected)──▶ Established ◀── guest RESPONSE ── Connecting (host CONNECT; REQUEST sent)
//!                                               │  guest SHUTDOWN(RCV|SEND)            │ timeout / anything else
//!                                               ▼                                      ▼
//!                                            Closing ──(flushed / linger timeout)──▶ Reset ──(RST delivered)──▶ gone
//!       any protocol violation, host socket error ──────────────────────────────▶ Reset
//!       guest RST, in any state ────────────────────────────────────────────────▶ gone
//! ```
//!
//! **Flow control, guest → host.** The connection advertises `buf_alloc` =
//! [`BUF_ALLOC`] (64 KiB) and `fwd_cnt` = bytes written to the host socket. A
//! guest that respects its credit never has more than `buf_alloc` bytes
//! outstanding, which is exactly what the connection may hold in its buffer
//! when the host side does not read. A guest that sends beyond its credit is
//! reset: the VMM never buffers more than 64 KiB per connection. Credit is
//! re-advertised (CREDIT_UPDATE) once [`CREDIT_UPDATE_THRESHOLD`] bytes have
//! drained since the last advertisement, and on CREDIT_REQUEST.
//!
//! **Flow control, host → guest.** Data is read from the host socket straight
//! into the guest's RX buffers, never more than the guest's advertised credit
//! (`buf_alloc - (sent - fwd_cnt)`), so nothing is buffered in this direction.
//!
//! **Shutdown.** Guest SHUTDOWN(SEND): once the buffer drains, the host socket's
//! write side is shut (the host reader sees EOF). Guest SHUTDOWN(RCV): no more
//! reads from the host. Both: flush for up to [`CLOSE_LINGER`], then RST (the
//! RST is the close acknowledgement Linux waits for). Host EOF: SHUTDOWN(SEND)
//! to the guest, which keeps sending if it wants (half-close).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use virtio_vsock::packet::VsockPacket;
use vm_memory::bitmap::BitmapSlice;
use vm_memory::{ReadVolatile, VolatileMemoryError, VolatileSlice, WriteVolatile};

use super::packet::{self, HEADER_LEN, Header, MAX_PKT_DATA, Op, SHUTDOWN_RCV, SHUTDOWN_SEND, len_u32};

/// Receive buffer advertised to the guest, and the most the VMM holds for one
/// connection when the host side is not reading.
pub const BUF_ALLOC: u32 = 64 * 1024;
/// Drained bytes after which fresh credit is sent to the guest.
pub const CREDIT_UPDATE_THRESHOLD: u32 = BUF_ALLOC / 4;
/// How long a host-initiated connection waits for the guest's RESPONSE.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection the guest closed may take to flush to the host.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// A connection's identity: the host-side port and the guest-side port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// The port on the host CID (the `P` of `U_P`, or the port allocated for a host CONNECT).
    pub host_port: u32,
    /// The port on the guest CID.
    pub guest_port: u32,
}

/// Connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: REQUEST sent to the guest, waiting for its RESPONSE.
    Connecting {
        /// When the attempt is abandoned.
        deadline: Instant,
    },
    /// Data flows both ways.
    Established,
    /// The guest shut down both directions; flushing what it sent.
    Closing {
        /// When flushing is abandoned.
        deadline: Instant,
    },
    /// Reset: a RST is owed to the guest; the host socket is closed.
    Reset,
}

/// What the connection's owner does after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep the connection.
    Keep,
    /// Forget it (the guest reset it, or its final RST was delivered).
    Remove,
}

/// What [`Connection::fill_rx`] put into an RX buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxFill {
    /// Nothing to send now.
    Nothing,
    /// A packet of `len` bytes (header included).
    Sent {
        /// Bytes written to the buffer.
        len: u32,
        /// What to do with the connection afterwards.
        next: Next,
    },
}

/// Control packets owed to the guest (each at most once: no queue grows).
mod pending {
    pub const REQUEST: u8 = 1;
    pub const RESPONSE: u8 = 2;
    pub const CREDIT_UPDATE: u8 = 4;
    pub const SHUTDOWN: u8 = 8;
    pub const RST: u8 = 16;
}

/// One connection.
#[derive(Debug)]
pub struct Connection {
    key: ConnKey,
    guest_cid: u64,
    stream: Option<UnixStream>,
    state: State,
    pending: u8,
    // guest → host
    preamble: Vec<u8>,
    tx_buf: VecDeque<u8>,
    fwd_cnt: u32,
    last_fwd_cnt_sent: u32,
    guest_shutdown: u32,
    host_write_shut: bool,
    // host → guest
    readable: bool,
    host_eof: bool,
    sent_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Whether the owner has it in its RX service queue.
    pub(super) queued: bool,
}

fn would_block(e: &VolatileMemoryError) -> bool {
    matches!(e, VolatileMemoryError::IOError(io) if io.kind() == io::ErrorKind::WouldBlock)
}

impl Connection {
    fn new(key: ConnKey, guest_cid: u64, stream: UnixStream, state: State, pending: u8) -> Self {
        Self {
            key,
            guest_cid,
            stream: Some(stream),
            state,
            pending,
            preamble: Vec::new(),
            tx_buf: VecDeque::new(),
            fwd_cnt: 0,
            last_fwd_cnt_sent: 0,
            guest_shutdown: 0,
            host_write_shut: false,
            readable: false,
            host_eof: false,
            sent_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            queued: false,
        }
    }

    /// A guest-initiated connection whose host socket (`U_P`) is connected:
    /// established, RESPONSE owed.
    pub fn accepted(key: ConnKey, guest_cid: u64, stream: UnixStream, request: &Header) -> Self {
        let mut c = Self::new(key, guest_cid, stream, State::Established, pending::RESPONSE);
        c.peer_buf_alloc = request.buf_alloc;
        c.peer_fwd_cnt = request.fwd_cnt;
        c.readable = true;
        c
    }

    /// A host-initiated connection (`CONNECT <port>` on `U`): REQUEST owed.
    pub fn connecting(key: ConnKey, guest_cid: u64, stream: UnixStream, now: Instant) -> Self {
        Self::new(key, guest_cid, stream, State::Connecting { deadline: now + REQUEST_TIMEOUT }, pending::REQUEST)
    }

    /// The connection's ports.
    pub fn key(&self) -> ConnKey {
        self.key
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The host socket (none once reset).
    pub fn stream(&self) -> Option<&UnixStream> {
        self.stream.as_ref()
    }

    /// Bytes held for the host side (never more than [`BUF_ALLOC`]).
    pub fn buffered(&self) -> usize {
        self.tx_buf.len()
    }

    /// When the connection times out, if it can.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Connecting { deadline } | State::Closing { deadline } => Some(deadline),
            State::Established | State::Reset => None,
        }
    }

    /// Resets the connection when its deadline has passed.
    pub fn on_deadline(&mut self, now: Instant) {
        if self.deadline().is_some_and(|d| d <= now) {
            tracing::debug!(?self.key, state = ?self.state, "vsock: connection timed out; resetting it");
            self.reset();
        }
    }

    /// Whether the guest may be sent more data now.
    fn peer_credit(&self) -> u32 {
        let in_flight = self.sent_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn can_read_host(&self) -> bool {
        matches!(self.state, State::Established | State::Closing { .. })
            && self.readable
            && !self.host_eof
            && self.guest_shutdown & SHUTDOWN_RCV == 0
            && self.peer_credit() > 0
    }

    /// Whether the connection has a packet for the guest.
    pub fn has_rx_work(&self) -> bool {
        self.pending != 0 || self.can_read_host()
    }

    /// Moves to `Reset`: the host socket is closed, buffered data dropped, a RST owed.
    pub fn reset(&mut self) -> Next {
        self.state = State::Reset;
        self.stream = None;
        self.tx_buf = VecDeque::new();
        self.preamble = Vec::new();
        self.pending = pending::RST;
        Next::Keep
    }

    /// A packet from the guest for this connection (already checked by
    /// [`packet::check`]); `data` is its payload.
    pub fn on_guest_packet<B: BitmapSlice>(
        &mut self,
        op: Op,
        hdr: &Header,
        data: Option<&VolatileSlice<'_, B>>,
        now: Instant,
    ) -> Next {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = hdr.fwd_cnt;
        match (self.state, op) {
            (_, Op::Rst) => Next::Remove,
            (State::Reset, _) => Next::Keep,
            (State::Connecting { .. }, Op::Response) => {
                self.state = State::Established;
                self.preamble = format!("OK {}\n", self.key.host_port).into_bytes();
                self.readable = true;
                self.flush()
            }
            (State::Connecting { .. }, _) => {
                tracing::debug!(?self.key, ?op, "vsock: unexpected packet before RESPONSE; resetting");
                self.reset()
            }
            (_, Op::Rw) => self.guest_data(data),
            (_, Op::Shutdown) => {
                self.guest_shutdown |= hdr.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
                if self.guest_shutdown == SHUTDOWN_RCV | SHUTDOWN_SEND && self.state == State::Established {
                    self.state = State::Closing { deadline: now + CLOSE_LINGER };
                }
                self.flush()
            }
            (_, Op::CreditUpdate) => Next::Keep,
            (_, Op::CreditRequest) => {
                self.pending |= pending::CREDIT_UPDATE;
                Next::Keep
            }
            (_, Op::Request | Op::Response) => {
                tracing::debug!(?self.key, ?op, "vsock: REQUEST/RESPONSE on an established connection; resetting");
                self.reset()
            }
        }
    }

    /// Guest data (RW) for the host socket.
    fn guest_data<B: BitmapSlice>(&mut self, data: Option<&VolatileSlice<'_, B>>) -> Next {
        if self.guest_shutdown & SHUTDOWN_SEND != 0 {
            tracing::debug!(?self.key, "vsock: data after the guest's SHUTDOWN(SEND); resetting");
            return self.reset();
        }
        let Some(data) = data else { return Next::Keep };
        if self.tx_buf.len() + data.len() > BUF_ALLOC as usize {
            tracing::debug!(?self.key, buffered = self.tx_buf.len(), len = data.len(), "vsock: the guest sent beyond its credit; resetting");
            return self.reset();
        }
        let Some(stream) = self.stream.as_mut() else { return self.reset() };
        let mut written = 0;
        if self.preamble.is_empty() && self.tx_buf.is_empty() {
            match stream.write_volatile(data) {
                Ok(n) => written = n,
                Err(e) if would_block(&e) => {}
                Err(e) => {
                    tracing::debug!(?self.key, "vsock: writing to the host socket failed ({e}); resetting");
                    return self.reset();
                }
            }
        }
        if written < data.len() {
            let Ok(rest) = data.offset(written) else { return self.reset() };
            let mut tmp = vec![0u8; rest.len()];
            rest.copy_to(&mut tmp[..]);
            self.tx_buf.extend(tmp);
        }
        self.forwarded(written);
        Next::Keep
    }

    fn forwarded(&mut self, n: usize) {
        // Counters are modulo 2^32 by definition (§5.10.6.3).
        self.fwd_cnt = self.fwd_cnt.wrapping_add(len_u32(n));
        if self.fwd_cnt.wrapping_sub(self.last_fwd_cnt_sent) >= CREDIT_UPDATE_THRESHOLD {
            self.pending |= pending::CREDIT_UPDATE;
        }
    }

    /// The host socket reported readiness (`readable`: data, EOF or error
    /// to read; `writable`: room to write or an error to see).
    pub fn on_host_event(&mut self, readable: bool, writable: bool) -> Next {
        if readable {
            self.readable = true;
        }
        if writable { self.flush() } else { Next::Keep }
    }

    /// Writes what is buffered for the host, then applies the guest's shutdown.
    fn flush(&mut self) -> Next {
        let Some(stream) = self.stream.as_mut() else { return Next::Keep };
        while !self.preamble.is_empty() {
            match stream.write(&self.preamble) {
                Ok(n) => drop(self.preamble.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(?self.key, "vsock: writing to the host socket failed ({e}); resetting");
                    return self.reset();
                }
            }
        }
        let mut drained = 0;
        while !self.tx_buf.is_empty() {
            let (front, _) = self.tx_buf.as_slices();
            match stream.write(front) {
                Ok(0) => break,
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    drained += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(?self.key, "vsock: writing to the host socket failed ({e}); resetting");
                    return self.reset();
                }
            }
        }
        self.forwarded(drained);
        if !self.tx_buf.is_empty() {
            return Next::Keep;
        }
        if self.guest_shutdown & SHUTDOWN_SEND != 0 && !self.host_write_shut {
            if let Some(stream) = &self.stream {
                let _ = stream.shutdown(Shutdown::Write);
            }
            self.host_write_shut = true;
        }
        if matches!(self.state, State::Closing { .. }) {
            // Everything the guest sent is with the host: acknowledge the close.
            return self.reset();
        }
        Next::Keep
    }

    fn header(&mut self, op: Op) -> Header {
        let mut h = Header::to_guest(self.guest_cid, self.key.host_port, self.key.guest_port, op);
        h.buf_alloc = BUF_ALLOC;
        h.fwd_cnt = self.fwd_cnt;
        self.last_fwd_cnt_sent = self.fwd_cnt;
        self.pending &= !pending::CREDIT_UPDATE;
        h
    }

    fn send_control<B: BitmapSlice>(&mut self, pkt: &mut VsockPacket<'_, B>, op: Op, flags: u32, next: Next) -> RxFill {
        let mut h = self.header(op);
        h.flags = flags;
        match packet::write_header(pkt, &h) {
            Ok(()) => RxFill::Sent { len: HEADER_LEN, next },
            Err(e) => {
                tracing::debug!("vsock: cannot write an RX header: {e}");
                RxFill::Nothing
            }
        }
    }

    /// Fills one guest RX buffer with the next packet of this connection:
    /// a control packet if one is owed, otherwise data read from the host
    /// socket within the guest's credit.
    pub fn fill_rx<B: BitmapSlice>(&mut self, pkt: &mut VsockPacket<'_, B>) -> RxFill {
        if self.pending & pending::RST != 0 {
            self.pending = 0;
            return self.send_control(pkt, Op::Rst, 0, Next::Remove);
        }
        if self.pending & pending::REQUEST != 0 {
            self.pending &= !pending::REQUEST;
            return self.send_control(pkt, Op::Request, 0, Next::Keep);
        }
        if matches!(self.state, State::Connecting { .. }) {
            return RxFill::Nothing;
        }
        if self.pending & pending::RESPONSE != 0 {
            self.pending &= !pending::RESPONSE;
            return self.send_control(pkt, Op::Response, 0, Next::Keep);
        }
        if self.can_read_host() {
            if let Some(slice) = pkt.data_slice().cloned() {
                let max = self.peer_credit().min(MAX_PKT_DATA) as usize;
                let max = max.min(slice.len());
                if let (Ok(mut dst), Some(stream)) = (slice.subslice(0, max), self.stream.as_mut()) {
                    match stream.read_volatile(&mut dst) {
                        Ok(0) => {
                            self.host_eof = true;
                            self.readable = false;
                            self.pending |= pending::SHUTDOWN;
                        }
                        Ok(n) => {
                            self.sent_cnt = self.sent_cnt.wrapping_add(len_u32(n));
                            let mut h = self.header(Op::Rw);
                            h.len = len_u32(n);
                            return match packet::write_header(pkt, &h) {
                                Ok(()) => RxFill::Sent { len: HEADER_LEN + len_u32(n), next: Next::Keep },
                                Err(_) => {
                                    self.reset();
                                    RxFill::Nothing
                                }
                            };
                        }
                        Err(e) if would_block(&e) => self.readable = false,
                        Err(e) => {
                            tracing::debug!(?self.key, "vsock: reading the host socket failed ({e}); resetting");
                            self.reset();
                            self.pending = 0;
                            return self.send_control(pkt, Op::Rst, 0, Next::Remove);
                        }
                    }
                }
            }
        }
        if self.pending & pending::SHUTDOWN != 0 {
            self.pending &= !pending::SHUTDOWN;
            return self.send_control(pkt, Op::Shutdown, SHUTDOWN_SEND, Next::Keep);
        }
        if self.pending & pending::CREDIT_UPDATE != 0 {
            return self.send_control(pkt, Op::CreditUpdate, 0, Next::Keep);
        }
        RxFill::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::vsock::packet::{HOST_CID, TYPE_STREAM};
    use std::io::Read;

    const GUEST: u64 = 3;
    const KEY: ConnKey = ConnKey { host_port: 1024, guest_port: 5000 };

    fn guest_hdr(op: Op, len: u32, fwd_cnt: u32) -> Header {
        Header {
            src_cid: GUEST,
            dst_cid: HOST_CID,
            src_port: KEY.guest_port,
            dst_port: KEY.host_port,
            len,
            type_: TYPE_STREAM,
            op: op as u16,
            buf_alloc: 256 * 1024,
            fwd_cnt,
            ..Header::default()
        }
    }

    /// An RX buffer outside guest memory, as `VsockPacket` sees one.
    struct RxBuf {
        hdr: Vec<u8>,
        data: Vec<u8>,
    }

    impl RxBuf {
        fn new(data_len: usize) -> Self {
            Self { hdr: vec![0; packet::HEADER_SIZE], data: vec![0; data_len] }
        }

        /// Lets `conn` fill the buffer; returns what it did and the header written.
        fn fill(&mut self, conn: &mut Connection) -> (RxFill, Header) {
            // SAFETY: both vectors outlive the packet, which is not used after
            // `fill_rx`, and nothing else accesses them meanwhile.
            let mut pkt = unsafe { VsockPacket::new(&mut self.hdr, Some(&mut self.data)) }.unwrap();
            let r = conn.fill_rx(&mut pkt);
            (r, Header::from_bytes(self.hdr.as_slice().try_into().unwrap()))
        }
    }

    fn rw(conn: &mut Connection, bytes: &mut [u8], fwd_cnt: u32) -> Next {
        let h = guest_hdr(Op::Rw, len_u32(bytes.len()), fwd_cnt);
        let slice = VolatileSlice::from(bytes);
        conn.on_guest_packet(Op::Rw, &h, Some(&slice), Instant::now())
    }

    fn established() -> (Connection, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let mut c = Connection::accepted(KEY, GUEST, ours, &guest_hdr(Op::Request, 0, 0));
        let mut rx = RxBuf::new(4096);
        let (r, h) = rx.fill(&mut c);
        assert_eq!(r, RxFill::Sent { len: 44, next: Next::Keep });
        assert_eq!(
            (h.op, h.src_port, h.dst_port, h.dst_cid, h.buf_alloc),
            (Op::Response as u16, 1024, 5000, GUEST, BUF_ALLOC)
        );
        (c, theirs)
    }

    #[test]
    fn data_flows_both_ways() {
        let (mut c, mut host) = established();
        assert_eq!(rw(&mut c, &mut b"hello".to_vec(), 0), Next::Keep);
        let mut got = [0u8; 16];
        assert_eq!(host.read(&mut got).unwrap(), 5);
        assert_eq!(&got[..5], b"hello");

        host.write_all(b"world").unwrap();
        c.on_host_event(true, false);
        let mut rx = RxBuf::new(4096);
        let (r, h) = rx.fill(&mut c);
        assert_eq!(r, RxFill::Sent { len: 44 + 5, next: Next::Keep });
        assert_eq!((h.op, h.len, h.fwd_cnt), (Op::Rw as u16, 5, 5), "the 5 bytes sent to the host are forwarded");
        assert_eq!(&rx.data[..5], b"world");
        // Nothing more to read: the connection notices and goes idle.
        assert_eq!(rx.fill(&mut c).0, RxFill::Nothing);
        assert!(!c.has_rx_work());
    }

    #[test]
    fn host_reads_are_bounded_by_the_guest_credit() {
        let (mut c, mut host) = established();
        // The guest advertised 256 KiB; make it advertise 10 bytes instead.
        let mut h = guest_hdr(Op::CreditUpdate, 0, 0);
        h.buf_alloc = 10;
        c.on_guest_packet(Op::CreditUpdate, &h, None::<&VolatileSlice<'_, ()>>, Instant::now());
        host.write_all(&[7u8; 100]).unwrap();
        c.on_host_event(true, false);
        let mut rx = RxBuf::new(4096);
        assert_eq!(rx.fill(&mut c).1.len, 10);
        assert!(!c.has_rx_work(), "no credit left");
        assert_eq!(rx.fill(&mut c).0, RxFill::Nothing);
        // The guest consumed the 10 bytes: 10 more may flow.
        h.fwd_cnt = 10;
        c.on_guest_packet(Op::CreditUpdate, &h, None::<&VolatileSlice<'_, ()>>, Instant::now());
        assert!(c.has_rx_work());
        assert_eq!(rx.fill(&mut c).1.len, 10);
    }

    #[test]
    fn a_host_that_does_not_read_bounds_the_buffer_and_excess_is_reset() {
        let (mut c, _host) = established();
        // The host socket's own buffer fills first, then the connection's 64 KiB.
        let mut chunk = vec![1u8; 4096];
        let mut total = 0usize;
        while c.buffered() + chunk.len() <= BUF_ALLOC as usize {
            assert_eq!(rw(&mut c, &mut chunk, 0), Next::Keep);
            assert_eq!(c.state(), State::Established);
            total += chunk.len();
            assert!(total < 64 << 20, "the host socket never filled up");
        }
        let fwd = 0;
        assert!(c.buffered() <= BUF_ALLOC as usize);
        // One more packet exceeds the credit: the connection is reset.
        assert_eq!(rw(&mut c, &mut chunk, fwd), Next::Keep);
        assert_eq!(c.state(), State::Reset);
        assert!(c.stream().is_none(), "the host socket is closed");
        assert_eq!(c.buffered(), 0, "buffered data is dropped");
        let mut rx = RxBuf::new(64);
        let (r, h) = rx.fill(&mut c);
        assert_eq!(r, RxFill::Sent { len: 44, next: Next::Remove });
        assert_eq!(h.op, Op::Rst as u16);
    }

    #[test]
    fn draining_sends_a_credit_update() {
        let (mut c, mut host) = established();
        let mut chunk = vec![2u8; 4096];
        // Keep the host socket full so data lands in our buffer.
        while c.buffered() == 0 {
            rw(&mut c, &mut chunk, 0);
        }
        let mut rx = RxBuf::new(64);
        // Drain everything on the host side, then let the connection flush.
        let mut sink = vec![0u8; 1 << 20];
        loop {
            match host.read(&mut sink) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.on_host_event(false, true);
                    if c.buffered() == 0 {
                        break;
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
        let (r, h) = rx.fill(&mut c);
        assert!(matches!(r, RxFill::Sent { .. }));
        assert_eq!(h.op, Op::CreditUpdate as u16);
        assert!(h.fwd_cnt >= CREDIT_UPDATE_THRESHOLD);
        // A CREDIT_REQUEST is answered even without progress.
        c.on_guest_packet(
            Op::CreditRequest,
            &guest_hdr(Op::CreditRequest, 0, 0),
            None::<&VolatileSlice<'_, ()>>,
            Instant::now(),
        );
        assert_eq!(rx.fill(&mut c).1.op, Op::CreditUpdate as u16);
    }

    #[test]
    fn guest_shutdown_closes_the_host_side_and_acknowledges_with_rst() {
        let (mut c, mut host) = established();
        rw(&mut c, &mut b"bye".to_vec(), 0);
        let mut h = guest_hdr(Op::Shutdown, 0, 0);
        h.flags = SHUTDOWN_SEND;
        assert_eq!(c.on_guest_packet(Op::Shutdown, &h, None::<&VolatileSlice<'_, ()>>, Instant::now()), Next::Keep);
        let mut got = Vec::new();
        host.set_nonblocking(false).unwrap();
        host.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"bye", "the host reader sees the data, then EOF");
        // Data after SHUTDOWN(SEND) is a protocol violation.
        let (mut c2, _h2) = established();
        c2.on_guest_packet(Op::Shutdown, &h, None::<&VolatileSlice<'_, ()>>, Instant::now());
        rw(&mut c2, &mut b"x".to_vec(), 0);
        assert_eq!(c2.state(), State::Reset);
        // Full shutdown with nothing buffered: RST right away.
        h.flags = SHUTDOWN_SEND | SHUTDOWN_RCV;
        c.on_guest_packet(Op::Shutdown, &h, None::<&VolatileSlice<'_, ()>>, Instant::now());
        assert_eq!(c.state(), State::Reset);
        let mut rx = RxBuf::new(64);
        assert_eq!(rx.fill(&mut c).1.op, Op::Rst as u16);
    }

    #[test]
    fn host_eof_is_a_shutdown_send_to_the_guest() {
        let (mut c, host) = established();
        drop(host);
        c.on_host_event(true, false);
        let mut rx = RxBuf::new(64);
        let (r, h) = rx.fill(&mut c);
        assert_eq!(r, RxFill::Sent { len: 44, next: Next::Keep });
        assert_eq!((h.op, h.flags), (Op::Shutdown as u16, SHUTDOWN_SEND));
        assert!(!c.has_rx_work());
        // A guest RST ends it without an answer.
        assert_eq!(
            c.on_guest_packet(Op::Rst, &guest_hdr(Op::Rst, 0, 0), None::<&VolatileSlice<'_, ()>>, Instant::now()),
            Next::Remove
        );
    }

    #[test]
    fn host_initiated_connection() {
        let (ours, mut host) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let now = Instant::now();
        let key = ConnKey { host_port: 1 << 30, guest_port: 5000 };
        let mut c = Connection::connecting(key, GUEST, ours, now);
        let mut rx = RxBuf::new(64);
        let (r, h) = rx.fill(&mut c);
        assert_eq!(r, RxFill::Sent { len: 44, next: Next::Keep });
        assert_eq!((h.op, h.src_port, h.dst_port), (Op::Request as u16, 1 << 30, 5000));
        assert_eq!(rx.fill(&mut c).0, RxFill::Nothing, "nothing until the guest answers");
        let mut resp = guest_hdr(Op::Response, 0, 0);
        resp.dst_port = 1 << 30;
        c.on_guest_packet(Op::Response, &resp, None::<&VolatileSlice<'_, ()>>, now);
        assert_eq!(c.state(), State::Established);
        let mut line = [0u8; 32];
        let n = host.read(&mut line).unwrap();
        assert_eq!(&line[..n], format!("OK {}\n", 1u32 << 30).as_bytes());

        // A guest that never answers: the attempt times out with a RST.
        let (ours, _host) = UnixStream::pair().unwrap();
        let mut c = Connection::connecting(key, GUEST, ours, now);
        rx.fill(&mut c);
        c.on_deadline(now + REQUEST_TIMEOUT - Duration::from_millis(1));
        assert!(matches!(c.state(), State::Connecting { .. }));
        c.on_deadline(now + REQUEST_TIMEOUT);
        assert_eq!(c.state(), State::Reset);
        assert_eq!(rx.fill(&mut c).1.op, Op::Rst as u16);
    }
}
