//! zone-guest's end of the host channel: an `AF_VSOCK` stream to the host
//! (CID 2), port [`HOST_CHANNEL_PORT`], framed as in
//! `attestation_proto::channel`.
//!
//! The connection is made in the background and remade whenever it drops
//! (the daemon may restart while the zone runs); every new connection starts
//! with `Hello`. Pings are answered from a reader thread.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use attestation_proto::channel::{Decoder, HOST_CHANNEL_PORT, encode};
use attestation_proto::guest::{GuestMessage, Hello, HostMessage, Pong, guest_message, host_message};

/// vsock CID of the host.
const HOST_CID: u32 = 2;
/// Pause between connection attempts.
const RETRY: Duration = Duration::from_secs(1);

/// The shared connection.
#[derive(Debug, Clone)]
pub struct Channel {
    inner: Arc<(Mutex<Option<File>>, Condvar)>,
    hello: Hello,
}

/// Opens a new stream to the host channel port.
pub(crate) fn connect() -> std::io::Result<File> {
    connect_port(HOST_CHANNEL_PORT)
}

/// Opens a new vsock stream to host port `port`.
pub(crate) fn connect_port(port: u32) -> std::io::Result<File> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket we own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_vm is valid; the fields are set below.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::sa_family_t::try_from(libc::AF_VSOCK).unwrap_or_default();
    addr.svm_cid = HOST_CID;
    addr.svm_port = port;
    // SAFETY: `addr` is a valid sockaddr_vm and the length matches it.
    let rc = unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_vm).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_vm>()).unwrap_or(libc::socklen_t::MAX),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(File::from(owned))
}

impl Channel {
    /// Starts connecting in the background; `ready_uptime_ms` goes into every Hello.
    pub fn start(ready_uptime_ms: u64) -> Self {
        let hello = Hello { ready_uptime_ms, version: env!("CARGO_PKG_VERSION").into() };
        let ch = Self { inner: Arc::new((Mutex::new(None), Condvar::new())), hello };
        let bg = ch.clone();
        let _ = std::thread::Builder::new().name("host-channel".into()).spawn(move || bg.keep_connected());
        ch
    }

    fn keep_connected(&self) {
        let mut warned = false;
        loop {
            match connect() {
                Ok(conn) => {
                    warned = false;
                    let Ok(reader) = conn.try_clone() else { continue };
                    {
                        let (lock, cv) = &*self.inner;
                        *lock.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
                        cv.notify_all();
                    }
                    self.send(GuestMessage { message: Some(guest_message::Message::Hello(self.hello.clone())) });
                    self.read_until_closed(reader);
                    *self.inner.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                Err(e) => {
                    if !warned {
                        eprintln!("zone-guest: host channel not available yet ({e}); retrying");
                        warned = true;
                    }
                }
            }
            std::thread::sleep(RETRY);
        }
    }

    fn read_until_closed(&self, mut reader: File) {
        let mut decoder = Decoder::new();
        let mut buf = vec![0u8; attestation_proto::channel::MAX_MESSAGE + 4];
        loop {
            let want = decoder.wanted().min(buf.len());
            let n = match reader.read(&mut buf[..want]) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            match decoder.push::<HostMessage>(&buf[..n]) {
                Ok(Some(HostMessage { message: Some(host_message::Message::Ping(p)) })) => {
                    self.send(GuestMessage { message: Some(guest_message::Message::Pong(Pong { seq: p.seq })) });
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }

    /// Whether a connection is up.
    pub fn connected(&self) -> bool {
        self.inner.0.lock().map(|g| g.is_some()).unwrap_or(false)
    }

    /// Waits up to `timeout` for a connection.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        let (lock, cv) = &*self.inner;
        let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = cv.wait_timeout_while(guard, timeout, |c| c.is_none()).unwrap_or_else(|p| p.into_inner());
        guard.is_some()
    }

    /// Sends one message; returns false if there is no connection (the
    /// message is dropped) or it broke.
    pub fn send(&self, msg: GuestMessage) -> bool {
        let Ok(frame) = encode(&msg) else { return false };
        let mut guard = self.inner.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(conn) = guard.as_mut() else { return false };
        if conn.write_all(&frame).is_ok() {
            return true;
        }
        *guard = None;
        false
    }

    /// Sends `msg`, then closes the sending side and waits (up to `timeout`)
    /// for the host to close: the host has then read everything.
    pub fn send_last(&self, msg: GuestMessage, timeout: Duration) {
        if !self.send(msg) {
            return;
        }
        let guard = self.inner.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(conn) = guard.as_ref() {
            use std::os::fd::AsRawFd;
            // SAFETY: shutdown(2) on a socket fd we own.
            unsafe { libc::shutdown(conn.as_raw_fd(), libc::SHUT_WR) };
        }
        drop(guard);
        let deadline = std::time::Instant::now() + timeout;
        while self.connected() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
