//! The connection table of one zone's vsock: routes guest packets to
//! connections, opens connections in both directions, and picks what goes
//! into the guest's next RX buffer.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections (a REQUEST beyond it is
//! refused with a RST, a host CONNECT beyond it is closed); at most
//! [`MAX_ORPHAN_RESETS`] RSTs queued for packets that belong to no connection
//! (beyond it they are dropped: the guest's connect then times out). Every
//! other piece of state is per connection and bounded there.

use std::collections::{HashMap, VecDeque};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use virtio_vsock::packet::VsockPacket;
use vm_memory::VolatileSlice;
use vm_memory::bitmap::BitmapSlice;

use super::backend::{Backend, HandshakeEvent};
use super::connection::{ConnKey, Connection, Next, RxFill};
use super::packet::{self, HEADER_LEN, Header, Op, Reject};

/// Connections per zone.
pub const MAX_CONNECTIONS: usize = 64;
/// RSTs waiting for an RX buffer that belong to no connection.
pub const MAX_ORPHAN_RESETS: usize = 128;
/// First host port given to host-initiated connections (as Firecracker does,
/// far above the ports host services listen on).
pub const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// All connections of one vsock device.
#[derive(Debug)]
pub struct Muxer {
    guest_cid: u64,
    backend: Backend,
    conns: HashMap<ConnKey, Connection>,
    tokens: HashMap<u64, ConnKey>,
    rxq: VecDeque<ConnKey>,
    orphan_resets: VecDeque<Header>,
    next_local_port: u32,
}

impl Muxer {
    /// An empty table for a guest with CID `guest_cid`, host side `backend`.
    pub fn new(guest_cid: u64, backend: Backend) -> Self {
        Self {
            guest_cid,
            backend,
            conns: HashMap::new(),
            tokens: HashMap::new(),
            rxq: VecDeque::new(),
            orphan_resets: VecDeque::new(),
            next_local_port: FIRST_LOCAL_PORT,
        }
    }

    /// The host side.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The host side, mutably.
    pub fn backend_mut(&mut self) -> &mut Backend {
        &mut self.backend
    }

    /// Number of connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether there are no connections.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Bytes held for host sockets, all connections together.
    pub fn buffered(&self) -> usize {
        self.conns.values().map(Connection::buffered).sum()
    }

    /// Whether a packet is waiting for an RX buffer.
    pub fn has_rx_work(&self) -> bool {
        !self.orphan_resets.is_empty() || !self.rxq.is_empty()
    }

    /// The epoll tokens of the connections (tests).
    #[cfg(test)]
    pub(crate) fn tokens_for_tests(&self) -> Vec<u64> {
        self.tokens.keys().copied().collect()
    }

    /// Drops every connection (device reset): host streams are closed.
    pub fn reset(&mut self) {
        self.conns.clear();
        self.tokens.clear();
        self.rxq.clear();
        self.orphan_resets.clear();
    }

    fn queue_reset(&mut self, hdr: &Header) {
        if self.orphan_resets.len() < MAX_ORPHAN_RESETS {
            self.orphan_resets.push_back(hdr.reset_reply(self.guest_cid));
        } else {
            tracing::debug!("vsock: RST queue full; dropping a RST");
        }
    }

    /// Re-evaluates a connection after an event: removes it, or queues it for
    /// RX service if it has something for the guest.
    fn after(&mut self, key: ConnKey, next: Next) {
        if next == Next::Remove {
            self.remove(key);
            return;
        }
        if let Some(c) = self.conns.get_mut(&key) {
            if !c.queued && c.has_rx_work() {
                c.queued = true;
                self.rxq.push_back(key);
            }
        }
    }

    fn remove(&mut self, key: ConnKey) {
        if self.conns.remove(&key).is_some() {
            self.tokens.retain(|_, k| *k != key);
        }
    }

    /// A descriptor chain whose header could be read but that did not parse:
    /// answered with a RST unless it is not the guest's or is itself a RST.
    pub fn reject_malformed(&mut self, hdr: &Header) {
        if hdr.src_cid == self.guest_cid && Op::from_code(hdr.op) != Some(Op::Rst) {
            self.queue_reset(hdr);
        }
    }

    /// A packet from the guest's TX queue, with its payload.
    pub fn on_guest_packet<B: BitmapSlice>(&mut self, hdr: &Header, data: Option<&VolatileSlice<'_, B>>, now: Instant) {
        let op = match packet::check(hdr, self.guest_cid) {
            Ok(op) => op,
            Err(Reject::Drop(why)) => {
                tracing::debug!(?hdr, "vsock: dropping a guest packet: {why}");
                return;
            }
            Err(Reject::Reset(why)) => {
                tracing::debug!(?hdr, "vsock: resetting a guest packet: {why}");
                self.queue_reset(hdr);
                return;
            }
        };
        let key = ConnKey { host_port: hdr.dst_port, guest_port: hdr.src_port };
        if let Some(conn) = self.conns.get_mut(&key) {
            let next = conn.on_guest_packet(op, hdr, data, now);
            self.after(key, next);
            return;
        }
        match op {
            Op::Request => self.open_from_guest(key, hdr),
            Op::Rst => {}
            _ => self.queue_reset(hdr),
        }
    }

    fn open_from_guest(&mut self, key: ConnKey, hdr: &Header) {
        if self.conns.len() >= MAX_CONNECTIONS {
            tracing::debug!(port = key.host_port, "vsock: connection limit ({MAX_CONNECTIONS}) reached; refusing");
            self.queue_reset(hdr);
            return;
        }
        let stream = match self.backend.connect(key.host_port) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(
                    path = %self.backend.port_path(key.host_port).display(),
                    "vsock: guest connection to host port {} refused: {e}",
                    key.host_port
                );
                self.queue_reset(hdr);
                return;
            }
        };
        let token = match self.backend.watch_connection(&stream) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("vsock: cannot watch a host socket: {e}");
                self.queue_reset(hdr);
                return;
            }
        };
        self.tokens.insert(token, key);
        self.conns.insert(key, Connection::accepted(key, self.guest_cid, stream, hdr));
        self.after(key, Next::Keep);
    }

    fn alloc_local_port(&mut self) -> Option<u32> {
        // At most MAX_CONNECTIONS ports are in use, so MAX_CONNECTIONS + 1
        // consecutive candidates always contain a free one.
        for _ in 0..=MAX_CONNECTIONS {
            let port = self.next_local_port;
            self.next_local_port = port.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.keys().any(|k| k.host_port == port) {
                return Some(port);
            }
        }
        None
    }

    /// A host stream that sent `CONNECT <port>`: asks the guest to accept it.
    pub fn open_from_host(&mut self, stream: UnixStream, guest_port: u32, now: Instant) {
        if self.conns.len() >= MAX_CONNECTIONS {
            tracing::debug!(guest_port, "vsock: connection limit ({MAX_CONNECTIONS}) reached; closing a host CONNECT");
            return;
        }
        let Some(host_port) = self.alloc_local_port() else { return };
        let key = ConnKey { host_port, guest_port };
        let token = match self.backend.watch_connection(&stream) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("vsock: cannot watch a host socket: {e}");
                return;
            }
        };
        self.tokens.insert(token, key);
        self.conns.insert(key, Connection::connecting(key, self.guest_cid, stream, now));
        self.after(key, Next::Keep);
    }

    /// An epoll event for a handshaking host stream. Completed handshakes
    /// become connections when `accepting` (the device is running); otherwise
    /// the stream is closed.
    pub fn on_handshake_event(&mut self, token: u64, accepting: bool, now: Instant) {
        if let HandshakeEvent::Connect { stream, port } = self.backend.on_handshake_event(token) {
            if accepting {
                self.open_from_host(stream, port, now);
            } else {
                tracing::debug!(port, "vsock: host CONNECT while the guest driver is not running; closing");
            }
        }
    }

    /// An epoll event for a connection's host stream.
    pub fn on_host_event(&mut self, token: u64, readable: bool, writable: bool) {
        let Some(&key) = self.tokens.get(&token) else { return };
        let Some(conn) = self.conns.get_mut(&key) else { return };
        let next = conn.on_host_event(readable, writable);
        self.after(key, next);
    }

    /// Applies timeouts.
    pub fn expire(&mut self, now: Instant) {
        self.backend.expire(now);
        let due: Vec<ConnKey> =
            self.conns.values().filter(|c| c.deadline().is_some_and(|d| d <= now)).map(Connection::key).collect();
        for key in due {
            if let Some(c) = self.conns.get_mut(&key) {
                c.on_deadline(now);
            }
            self.after(key, Next::Keep);
        }
    }

    /// The earliest timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        let conns = self.conns.values().filter_map(Connection::deadline).min();
        match (conns, self.backend.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fills one RX buffer; returns the bytes written, or `None` when there is
    /// nothing to send (the buffer stays with the device).
    pub fn fill_rx<B: BitmapSlice>(&mut self, pkt: &mut VsockPacket<'_, B>) -> Option<u32> {
        if let Some(hdr) = self.orphan_resets.pop_front() {
            return match packet::write_header(pkt, &hdr) {
                Ok(()) => Some(HEADER_LEN),
                Err(_) => None,
            };
        }
        while let Some(key) = self.rxq.pop_front() {
            let Some(conn) = self.conns.get_mut(&key) else { continue };
            conn.queued = false;
            match conn.fill_rx(pkt) {
                RxFill::Nothing => {}
                RxFill::Sent { len, next } => {
                    self.after(key, next);
                    return Some(len);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::vsock::connection::State;
    use crate::devices::virtio::vsock::packet::{HOST_CID, TYPE_STREAM};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    const GUEST: u64 = 3;

    fn hdr(op: Op, src_port: u32, dst_port: u32) -> Header {
        Header {
            src_cid: GUEST,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            type_: TYPE_STREAM,
            op: op as u16,
            buf_alloc: 65536,
            ..Header::default()
        }
    }

    fn send(m: &mut Muxer, h: &Header) {
        m.on_guest_packet(h, None::<&VolatileSlice<'_, ()>>, Instant::now());
    }

    /// Takes the next packet for the guest (header only).
    fn next_rx(m: &mut Muxer) -> Option<Header> {
        let mut h = vec![0u8; HEADER_LEN as usize];
        let mut d = vec![0u8; 4096];
        // SAFETY: both vectors outlive the packet and nothing else accesses them.
        let mut pkt = unsafe { VsockPacket::new(&mut h, Some(&mut d)) }.unwrap();
        m.fill_rx(&mut pkt)?;
        Some(Header::from_bytes(h.as_slice().try_into().unwrap()))
    }

    fn muxer() -> (Muxer, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::bind(&dir.path().join("v.sock")).unwrap();
        (Muxer::new(GUEST, backend), dir)
    }

    #[test]
    fn a_request_to_a_port_nobody_listens_on_is_refused() {
        let (mut m, _d) = muxer();
        send(&mut m, &hdr(Op::Request, 5000, 1025));
        let r = next_rx(&mut m).unwrap();
        assert_eq!((r.op, r.src_port, r.dst_port, r.dst_cid), (Op::Rst as u16, 1025, 5000, GUEST));
        assert!(m.is_empty());
        assert!(next_rx(&mut m).is_none());
    }

    #[test]
    fn a_request_to_a_listening_port_is_accepted() {
        let (mut m, _d) = muxer();
        let l = UnixListener::bind(m.backend().port_path(1024)).unwrap();
        send(&mut m, &hdr(Op::Request, 5000, 1024));
        let r = next_rx(&mut m).unwrap();
        assert_eq!(r.op, Op::Response as u16);
        assert_eq!(m.len(), 1);
        let (mut host, _) = l.accept().unwrap();
        let mut data = b"ping".to_vec();
        let mut h = hdr(Op::Rw, 5000, 1024);
        h.len = 4;
        m.on_guest_packet(&h, Some(&VolatileSlice::from(&mut data[..])), Instant::now());
        let mut got = [0u8; 4];
        host.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        // Guest RST removes it, without an answer.
        send(&mut m, &hdr(Op::Rst, 5000, 1024));
        assert!(m.is_empty());
        assert!(next_rx(&mut m).is_none());
    }

    #[test]
    fn stray_and_bad_packets_get_a_rst_or_nothing() {
        let (mut m, _d) = muxer();
        // Data for a connection that does not exist.
        send(&mut m, &hdr(Op::Rw, 1, 2));
        assert_eq!(next_rx(&mut m).unwrap().op, Op::Rst as u16);
        // A RST for a connection that does not exist: nothing.
        send(&mut m, &hdr(Op::Rst, 1, 2));
        assert!(next_rx(&mut m).is_none());
        // Unknown op, wrong type, another CID: RST. Spoofed source: nothing.
        let mut h = hdr(Op::Request, 1, 2);
        h.op = 99;
        send(&mut m, &h);
        h = hdr(Op::Request, 1, 2);
        h.type_ = 5;
        send(&mut m, &h);
        h = hdr(Op::Request, 1, 2);
        h.dst_cid = 42;
        send(&mut m, &h);
        h = hdr(Op::Request, 1, 2);
        h.src_cid = 77;
        send(&mut m, &h);
        for _ in 0..3 {
            assert_eq!(next_rx(&mut m).unwrap().op, Op::Rst as u16);
        }
        assert!(next_rx(&mut m).is_none());
        // A flood of bad packets queues a bounded number of RSTs.
        for _ in 0..10 * MAX_ORPHAN_RESETS {
            send(&mut m, &hdr(Op::Rw, 1, 2));
        }
        assert_eq!(m.orphan_resets.len(), MAX_ORPHAN_RESETS);
        // A malformed chain whose header was readable.
        m.reset();
        m.reject_malformed(&hdr(Op::Rw, 1, 2));
        m.reject_malformed(&hdr(Op::Rst, 1, 2));
        assert_eq!(m.orphan_resets.len(), 1);
    }

    #[test]
    fn connections_are_capped() {
        let (mut m, _d) = muxer();
        let _l = UnixListener::bind(m.backend().port_path(1024)).unwrap();
        for port in 0..u32::try_from(MAX_CONNECTIONS).unwrap() {
            send(&mut m, &hdr(Op::Request, 10_000 + port, 1024));
        }
        assert_eq!(m.len(), MAX_CONNECTIONS);
        while next_rx(&mut m).is_some() {}
        send(&mut m, &hdr(Op::Request, 9_999, 1024));
        assert_eq!(m.len(), MAX_CONNECTIONS);
        let r = next_rx(&mut m).unwrap();
        assert_eq!((r.op, r.dst_port), (Op::Rst as u16, 9_999));
        // Host CONNECTs beyond the cap are closed.
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        m.open_from_host(ours, 7, Instant::now());
        assert_eq!(m.len(), MAX_CONNECTIONS);
        let mut buf = [0u8; 1];
        assert_eq!(theirs.read(&mut buf).unwrap(), 0, "closed without OK");
    }

    #[test]
    fn host_connect_round_trip() {
        let (mut m, d) = muxer();
        let mut host = UnixStream::connect(d.path().join("v.sock")).unwrap();
        host.write_all(b"CONNECT 5000\n").unwrap();
        m.backend_mut().accept(Instant::now());
        let token = *m.backend.handshakes_tokens().first().unwrap();
        m.on_handshake_event(token, true, Instant::now());
        assert_eq!(m.len(), 1);
        let req = next_rx(&mut m).unwrap();
        assert_eq!((req.op, req.dst_port, req.src_port), (Op::Request as u16, 5000, FIRST_LOCAL_PORT));
        send(&mut m, &hdr(Op::Response, 5000, FIRST_LOCAL_PORT));
        let mut line = [0u8; 32];
        let n = host.read(&mut line).unwrap();
        assert_eq!(&line[..n], format!("OK {FIRST_LOCAL_PORT}\n").as_bytes());
        // Refused by the guest: the host stream is closed.
        let mut host2 = UnixStream::connect(d.path().join("v.sock")).unwrap();
        host2.write_all(b"CONNECT 5001\n").unwrap();
        m.backend_mut().accept(Instant::now());
        let token = *m.backend.handshakes_tokens().first().unwrap();
        m.on_handshake_event(token, true, Instant::now());
        let req = next_rx(&mut m).unwrap();
        assert_eq!(req.src_port, FIRST_LOCAL_PORT + 1, "a fresh host port");
        send(&mut m, &hdr(Op::Rst, 5001, req.src_port));
        assert_eq!(host2.read(&mut line).unwrap(), 0);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn timeouts_reset_connections() {
        let (mut m, _d) = muxer();
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let now = Instant::now();
        m.open_from_host(ours, 5000, now);
        assert!(next_rx(&mut m).is_some());
        let deadline = m.next_deadline().unwrap();
        m.expire(deadline);
        let key = *m.conns.keys().next().unwrap();
        assert_eq!(m.conns[&key].state(), State::Reset);
        assert_eq!(next_rx(&mut m).unwrap().op, Op::Rst as u16);
        assert!(m.is_empty(), "removed once its RST is delivered");
    }
}
