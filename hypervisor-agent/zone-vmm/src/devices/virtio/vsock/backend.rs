//! The host side of a zone's vsock: Unix sockets, in Firecracker's "hybrid
//! vsock" scheme.
//!
//! The zone has one Unix socket path `U` (e.g. `<zone state dir>/vsock.sock`):
//!
//! - **Guest → host.** A guest `connect(AF_VSOCK, cid 2, port P)` makes the VMM
//!   connect to the Unix socket `U_P` (e.g. `vsock.sock_1024`), where a host
//!   process listens. Nobody listening: the guest gets a RST (connection
//!   refused). The connect is non-blocking: a host listener with a full
//!   backlog counts as refused rather than stalling the zone's vsock thread.
//! - **Host → guest.** A host process connects to `U` and writes
//!   `CONNECT <port>\n`. The VMM sends the guest a connection request for that
//!   port; once the guest accepts, the host process reads `OK <host port>\n`
//!   and the stream is connected to the guest socket. If the guest refuses or
//!   does not answer, the VMM closes the host stream without an `OK`.
//!
//! This module owns the listener on `U`, the host streams still sending their
//! `CONNECT` line (at most [`MAX_HANDSHAKES`], each for at most
//! [`HANDSHAKE_TIMEOUT`], the line at most [`MAX_LINE`] bytes), and the epoll
//! set every socket of the zone's vsock is registered in.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// Host streams allowed to be in the middle of their `CONNECT` line at once.
pub const MAX_HANDSHAKES: usize = 16;
/// How long a host stream may take to send its `CONNECT` line.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest `CONNECT <port>\n` line accepted.
pub const MAX_LINE: usize = 32;
/// Longest `U` path: `U_<port>` (up to 11 more bytes) must fit `sun_path` (108 bytes, NUL included).
pub const MAX_UDS_PATH: usize = 108 - 1 - 11;

/// epoll token of the listener on `U`.
pub const LISTENER_TOKEN: u64 = 16;
/// epoll tokens of handshaking host streams have this bit.
pub const HANDSHAKE_TAG: u64 = 1 << 62;
/// epoll tokens of connections have this bit.
pub const CONN_TAG: u64 = 1 << 63;

/// Why the host side of a vsock cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// `U` is a live socket of some other process.
    #[error(
        "the vsock socket {0} is in use by a running process (another zone?); pass another --vsock-uds path or stop \
         whatever listens there"
    )]
    InUse(PathBuf),
    /// `U` exists and is not a socket.
    #[error("{0} exists and is not a Unix socket; pass another --vsock-uds path or remove the file")]
    NotASocket(PathBuf),
    /// `U` could not be created.
    #[error("cannot create the vsock socket {path}: {source}; check that its directory exists and is writable")]
    Bind {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A host resource the device needs could not be had.
    #[error("vsock device: {op} failed: {source}")]
    Host {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A host stream that has not finished its `CONNECT` line.
#[derive(Debug)]
struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
    deadline: Instant,
}

/// What a handshaking stream produced.
#[derive(Debug)]
pub enum HandshakeEvent {
    /// Still waiting for the rest of the line.
    Pending,
    /// The stream asked to connect to guest port `port`.
    Connect {
        /// The host stream, non-blocking, still registered under the handshake token.
        stream: UnixStream,
        /// The guest port.
        port: u32,
    },
    /// The stream closed or sent something else; it was dropped.
    Dropped,
}

/// Parses `CONNECT <port>` (the line without its newline).
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?;
    let port = text.strip_prefix("CONNECT ")?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

/// The listener on `U`, the epoll set, and the handshakes in progress.
#[derive(Debug)]
pub struct Backend {
    path: PathBuf,
    /// Whether this backend created `U` (and so removes it when dropped).
    owns_path: bool,
    listener: UnixListener,
    epoll: Epoll,
    handshakes: HashMap<u64, Handshake>,
    next_token: u64,
}

impl Backend {
    /// Binds `U` at `path`. A stale socket left by a dead VMM is replaced; a
    /// live one (something accepts connections on it) is an error.
    pub fn bind(path: &Path) -> Result<Self, VsockError> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(VsockError::NotASocket(path.to_owned()));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(VsockError::InUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(|source| VsockError::Bind { path: path.to_owned(), source })?;
        }
        let listener = UnixListener::bind(path).map_err(|source| VsockError::Bind { path: path.to_owned(), source })?;
        Self::new(listener, path, true)
    }

    /// Serves `U` through `listener`, bound by someone else (the daemon, for
    /// a jailed VMM that cannot create files): `path` is where `U` is seen
    /// from this process, so that `U_P` resolves next to it. The socket file
    /// is left in place when the backend is dropped.
    pub fn from_listener(listener: UnixListener, path: &Path) -> Result<Self, VsockError> {
        Self::new(listener, path, false)
    }

    fn new(listener: UnixListener, path: &Path, owns_path: bool) -> Result<Self, VsockError> {
        listener
            .set_nonblocking(true)
            .map_err(|source| VsockError::Host { op: "making the listener non-blocking", source })?;
        let epoll = Epoll::new().map_err(|source| VsockError::Host { op: "epoll_create", source })?;
        let backend =
            Self { path: path.to_owned(), owns_path, listener, epoll, handshakes: HashMap::new(), next_token: 0 };
        backend
            .watch(backend.listener.as_raw_fd(), LISTENER_TOKEN, EventSet::IN)
            .map_err(|source| VsockError::Host { op: "registering the listener with epoll", source })?;
        Ok(backend)
    }

    /// `U`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `U_<port>`: where a host process listens for guest connections to `port`.
    pub fn port_path(&self, port: u32) -> PathBuf {
        let mut p = self.path.as_os_str().to_owned();
        p.push(format!("_{port}"));
        PathBuf::from(p)
    }

    /// The epoll set of this vsock (the worker adds its event fds to it).
    pub fn epoll(&self) -> &Epoll {
        &self.epoll
    }

    /// Adds `fd` to the epoll set, level-triggered, under `token`.
    pub fn watch(&self, fd: RawFd, token: u64, events: EventSet) -> io::Result<()> {
        self.epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
    }

    fn new_token(&mut self, tag: u64) -> u64 {
        self.next_token = (self.next_token + 1) & !(HANDSHAKE_TAG | CONN_TAG);
        tag | self.next_token
    }

    /// Registers a connection's host stream under a fresh connection token
    /// (moving it from its handshake token if it had one), edge-triggered for
    /// reading and writing.
    pub fn watch_connection(&mut self, stream: &UnixStream) -> io::Result<u64> {
        let token = self.new_token(CONN_TAG);
        let events = EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED;
        let fd = stream.as_raw_fd();
        match self.epoll.ctl(ControlOperation::Modify, fd, EpollEvent::new(events, token)) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                self.epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))?
            }
            other => other?,
        }
        Ok(token)
    }

    /// Connects to `U_<port>` without blocking. Refused, missing, or a full
    /// backlog are all errors (the guest gets a RST).
    pub fn connect(&self, port: u32) -> io::Result<UnixStream> {
        connect_nonblocking(&self.port_path(port))
    }

    /// Accepts every pending connection on `U`. Beyond [`MAX_HANDSHAKES`] in
    /// progress, new streams are closed at once.
    pub fn accept(&mut self, now: Instant) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("vsock: accept on {} failed: {e}", self.path.display());
                    return;
                }
            };
            if self.handshakes.len() >= MAX_HANDSHAKES {
                tracing::debug!("vsock: too many host connections waiting to send CONNECT; closing a new one");
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let token = self.new_token(HANDSHAKE_TAG);
            if let Err(e) = self.watch(stream.as_raw_fd(), token, EventSet::IN | EventSet::READ_HANG_UP) {
                tracing::warn!("vsock: cannot watch a host connection: {e}");
                continue;
            }
            self.handshakes.insert(token, Handshake { stream, line: Vec::new(), deadline: now + HANDSHAKE_TIMEOUT });
        }
    }

    /// Reads what a handshaking stream sent. The line is read one byte at a
    /// time so nothing after the newline is consumed: bytes the host sends
    /// after its `CONNECT` line belong to the connection.
    pub fn on_handshake_event(&mut self, token: u64) -> HandshakeEvent {
        let Some(hs) = self.handshakes.get_mut(&token) else { return HandshakeEvent::Pending };
        let mut byte = [0u8; 1];
        loop {
            match hs.stream.read(&mut byte) {
                Ok(0) => break,
                Ok(_) if byte[0] == b'\n' => {
                    let Some(hs) = self.handshakes.remove(&token) else { break };
                    return match parse_connect(&hs.line) {
                        Some(port) => HandshakeEvent::Connect { stream: hs.stream, port },
                        None => {
                            tracing::debug!(line = %String::from_utf8_lossy(&hs.line), "vsock: host sent something other than `CONNECT <port>`; closing");
                            HandshakeEvent::Dropped
                        }
                    };
                }
                Ok(_) if hs.line.len() < MAX_LINE => hs.line.push(byte[0]),
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return HandshakeEvent::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.handshakes.remove(&token);
        HandshakeEvent::Dropped
    }

    /// Closes handshakes that took too long.
    pub fn expire(&mut self, now: Instant) {
        self.handshakes.retain(|_, hs| hs.deadline > now);
    }

    /// Tokens of the handshakes in progress (tests).
    #[cfg(test)]
    pub(crate) fn handshakes_tokens(&self) -> Vec<u64> {
        self.handshakes.keys().copied().collect()
    }

    /// The earliest handshake deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.handshakes.values().map(|h| h.deadline).min()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if self.owns_path {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `connect(2)` on a non-blocking `AF_UNIX` stream socket: for Unix sockets it
/// completes at once or fails (`EAGAIN` when the listener's backlog is full).
fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "socket path too long or invalid"));
    }
    addr.sun_family = libc::sa_family_t::try_from(libc::AF_UNIX).unwrap_or_default();
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "socket path too long"))?;
    // SAFETY: socket(2) takes no pointers; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket just created and owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `addr` is a valid, initialised sockaddr_un and `len` does not exceed its size.
    let rc = unsafe { libc::connect(owned.as_raw_fd(), std::ptr::from_ref(&addr).cast::<libc::sockaddr>(), len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn connect_lines_are_parsed_strictly() {
        assert_eq!(parse_connect(b"CONNECT 1024"), Some(1024));
        assert_eq!(parse_connect(b"CONNECT 4294967295"), Some(u32::MAX));
        for bad in
            [&b"CONNECT"[..], b"CONNECT ", b"connect 1", b"CONNECT -1", b"CONNECT 4294967296", b"CONNECT 1 2", b"\xff"]
        {
            assert_eq!(parse_connect(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn bind_replaces_stale_sockets_and_refuses_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock.sock");
        {
            let _stale = UnixListener::bind(&path).unwrap();
        }
        let b = Backend::bind(&path).unwrap();
        assert!(matches!(Backend::bind(&path), Err(VsockError::InUse(_))));
        assert_eq!(b.port_path(1024), dir.path().join("vsock.sock_1024"));
        drop(b);
        assert!(!path.exists(), "U is removed with the backend");
        std::fs::write(&path, b"x").unwrap();
        assert!(matches!(Backend::bind(&path), Err(VsockError::NotASocket(_))));
        let e = Backend::bind(&dir.path().join("missing/dir/v.sock")).unwrap_err();
        assert!(e.to_string().contains("directory exists"), "{e}");
    }

    #[test]
    fn guest_connects_reach_u_port_and_refusals_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let b = Backend::bind(&dir.path().join("v.sock")).unwrap();
        assert!(b.connect(1024).is_err(), "nobody listens on U_1024");
        let l = UnixListener::bind(b.port_path(1024)).unwrap();
        let s = b.connect(1024).unwrap();
        let (mut peer, _) = l.accept().unwrap();
        (&s).write_all(b"x").unwrap();
        let mut got = [0u8; 1];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"x");
    }

    #[test]
    fn handshakes_parse_connect_and_leave_later_bytes_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let mut b = Backend::bind(&path).unwrap();
        let mut host = UnixStream::connect(&path).unwrap();
        let now = Instant::now();
        b.accept(now);
        let token = *b.handshakes.keys().next().unwrap();
        host.write_all(b"CONNECT 52").unwrap();
        assert!(matches!(b.on_handshake_event(token), HandshakeEvent::Pending));
        host.write_all(b"\nearly data").unwrap();
        match b.on_handshake_event(token) {
            HandshakeEvent::Connect { mut stream, port } => {
                assert_eq!(port, 52);
                stream.set_nonblocking(false).unwrap();
                let mut rest = [0u8; 10];
                stream.read_exact(&mut rest).unwrap();
                assert_eq!(&rest, b"early data");
            }
            other => panic!("{other:?}"),
        }
        // Garbage and overlong lines are dropped; slow ones time out.
        let mut bad = UnixStream::connect(&path).unwrap();
        let mut long = UnixStream::connect(&path).unwrap();
        let _slow = UnixStream::connect(&path).unwrap();
        b.accept(now);
        bad.write_all(b"HELLO\n").unwrap();
        long.write_all(&[b'1'; 64]).unwrap();
        let tokens: Vec<u64> = b.handshakes.keys().copied().collect();
        for t in tokens {
            let _ = b.on_handshake_event(t);
        }
        assert_eq!(b.handshakes.len(), 1, "only the slow one is left");
        b.expire(now + HANDSHAKE_TIMEOUT);
        assert!(b.handshakes.is_empty());
    }

    #[test]
    fn handshakes_in_progress_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let mut b = Backend::bind(&path).unwrap();
        let _hosts: Vec<UnixStream> = (0..MAX_HANDSHAKES + 5).map(|_| UnixStream::connect(&path).unwrap()).collect();
        b.accept(Instant::now());
        assert_eq!(b.handshakes.len(), MAX_HANDSHAKES);
    }
}
