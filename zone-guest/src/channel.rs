//! zone-guest's end of the host channel: an `AF_VSOCK` stream to the host
//! (CID 2), port [`HOST_CHANNEL_PORT`], framed as in
//! `attestation_proto::channel`.
//!
//! The connection is made in the background and remade whenever it drops
//! (the daemon may restart while the zone runs); every new connection starts
//! with `Hello`. Three kinds of thread touch it, and none waits on another's
//! I/O:
//!
//! - the **writer** sends queued frames: control frames (`Hello`, `Pong`)
//!   first, then output and the final `Exited` in order. A write error shuts
//!   the socket down (so the reader ends and a new connection is made) and
//!   keeps the output frame for the next connection;
//! - the **reader** answers pings by queueing a `Pong`; it never writes;
//! - producers ([`Channel::send_output`]) wait while more than
//!   [`MAX_QUEUED`] bytes of output are queued: the host's throttle reaches
//!   the workload as back-pressure on its pipe, and output is never dropped
//!   or diverted to the console.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use attestation_proto::channel::{Decoder, HOST_CHANNEL_PORT, encode};
use attestation_proto::guest::{GuestMessage, Hello, HostMessage, Pong, guest_message, host_message};

/// vsock CID of the host.
const HOST_CID: u32 = 2;
/// Pause between connection attempts.
const RETRY: Duration = Duration::from_secs(1);
/// Output bytes queued for the host before producers wait.
pub const MAX_QUEUED: usize = 256 * 1024;

#[derive(Debug, Default)]
struct State {
    /// The current connection and its number.
    conn: Option<(u64, Arc<File>)>,
    /// The connection number that has had its Hello.
    greeted: u64,
    /// Pongs (sent before output).
    control: VecDeque<Vec<u8>>,
    /// Output and the final Exited, in order.
    data: VecDeque<Vec<u8>>,
    /// Bytes in `data`.
    queued: usize,
    /// A data frame being written (counted until it is out).
    in_flight: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The shared connection.
#[derive(Debug, Clone)]
pub struct Channel {
    shared: Arc<Shared>,
    hello: Vec<u8>,
}

fn shutdown(f: &File, how: libc::c_int) {
    // SAFETY: shutdown(2) on a socket descriptor owned by `f`.
    unsafe { libc::shutdown(f.as_raw_fd(), how) };
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
        let hello = encode(&GuestMessage { message: Some(guest_message::Message::Hello(hello)) }).unwrap_or_default();
        let ch = Self { shared: Arc::new(Shared { state: Mutex::new(State::default()), changed: Condvar::new() }), hello };
        let (bg, writer) = (ch.clone(), ch.clone());
        let _ = std::thread::Builder::new().name("host-channel".into()).spawn(move || bg.keep_connected());
        let _ = std::thread::Builder::new().name("host-channel-writer".into()).spawn(move || writer.write_loop());
        ch
    }

    fn keep_connected(&self) {
        let mut warned = false;
        let mut number = 0u64;
        loop {
            match connect() {
                Ok(conn) => {
                    warned = false;
                    number += 1;
                    let conn = Arc::new(conn);
                    {
                        let mut st = self.shared.lock();
                        st.conn = Some((number, Arc::clone(&conn)));
                        st.control.clear();
                    }
                    self.shared.changed.notify_all();
                    self.read_until_closed(&conn);
                    let mut st = self.shared.lock();
                    if st.conn.as_ref().is_some_and(|(n, _)| *n == number) {
                        st.conn = None;
                    }
                    drop(st);
                    shutdown(&conn, libc::SHUT_RDWR);
                    self.shared.changed.notify_all();
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

    fn read_until_closed(&self, conn: &File) {
        let mut decoder = Decoder::new();
        let mut buf = vec![0u8; attestation_proto::channel::MAX_MESSAGE + 4];
        let mut reader = conn;
        loop {
            let want = decoder.wanted().min(buf.len());
            let n = match reader.read(&mut buf[..want]) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            match decoder.push::<HostMessage>(&buf[..n]) {
                Ok(Some(HostMessage { message: Some(host_message::Message::Ping(p)) })) => {
                    let msg = GuestMessage { message: Some(guest_message::Message::Pong(Pong { seq: p.seq })) };
                    if let Ok(frame) = encode(&msg) {
                        let mut st = self.shared.lock();
                        // Only the latest pongs matter: a stalled writer never grows this.
                        if st.control.len() >= 4 {
                            st.control.pop_front();
                        }
                        st.control.push_back(frame);
                        drop(st);
                        self.shared.changed.notify_all();
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }

    /// The writer thread: Hello on each new connection, then control frames, then data.
    fn write_loop(&self) {
        loop {
            let (number, conn, frame, is_data) = {
                let mut st = self.shared.lock();
                loop {
                    if let Some((n, c)) = st.conn.clone() {
                        if st.greeted != n {
                            st.greeted = n;
                            break (n, c, self.hello.clone(), false);
                        }
                        if let Some(f) = st.control.pop_front() {
                            break (n, c, f, false);
                        }
                        if let Some(f) = st.data.pop_front() {
                            st.in_flight = true;
                            break (n, c, f, true);
                        }
                    }
                    st = self.shared.changed.wait(st).unwrap_or_else(|p| p.into_inner());
                }
            };
            let ok = (&*conn).write_all(&frame).is_ok();
            let mut st = self.shared.lock();
            if is_data {
                st.in_flight = false;
                if ok {
                    st.queued -= frame.len();
                } else {
                    st.data.push_front(frame);
                }
            }
            if !ok {
                // The reader ends on the shut-down socket and a new connection is made.
                if st.conn.as_ref().is_some_and(|(n, _)| *n == number) {
                    st.conn = None;
                }
                shutdown(&conn, libc::SHUT_RDWR);
            }
            drop(st);
            self.shared.changed.notify_all();
        }
    }

    /// Whether a connection is up.
    pub fn connected(&self) -> bool {
        self.shared.lock().conn.is_some()
    }

    /// Waits up to `timeout` for a connection.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        let st = self.shared.lock();
        let (st, _) = self.shared.changed.wait_timeout_while(st, timeout, |s| s.conn.is_none()).unwrap_or_else(|p| p.into_inner());
        st.conn.is_some()
    }

    fn enqueue(&self, frame: Vec<u8>) {
        let mut st = self.shared.lock();
        let mut noted = false;
        let since = Instant::now();
        while st.queued > MAX_QUEUED {
            if !noted && since.elapsed() > Duration::from_secs(30) && st.conn.is_none() {
                eprintln!("zone-guest: the host channel is down; the workload's output waits for it");
                noted = true;
            }
            st = self.shared.changed.wait_timeout(st, Duration::from_secs(1)).unwrap_or_else(|p| p.into_inner()).0;
        }
        st.queued += frame.len();
        st.data.push_back(frame);
        drop(st);
        self.shared.changed.notify_all();
    }

    /// Queues output for the host (waiting while [`MAX_QUEUED`] bytes are
    /// already queued); it goes out in order, over this or the next connection.
    pub fn send_output(&self, msg: GuestMessage) {
        if let Ok(frame) = encode(&msg) {
            self.enqueue(frame);
        }
    }

    /// Queues `msg` after all output, waits (up to `timeout`) until it is
    /// written, then closes the sending side and waits for the host to
    /// close: the host has then read everything.
    pub fn send_last(&self, msg: GuestMessage, timeout: Duration) {
        let Ok(frame) = encode(&msg) else { return };
        let deadline = Instant::now() + timeout;
        {
            let mut st = self.shared.lock();
            st.queued += frame.len();
            st.data.push_back(frame);
        }
        self.shared.changed.notify_all();
        let mut st = self.shared.lock();
        while (!st.data.is_empty() || st.in_flight) && Instant::now() < deadline {
            st = self.shared.changed.wait_timeout(st, deadline.saturating_duration_since(Instant::now())).unwrap_or_else(|p| p.into_inner()).0;
        }
        let Some((number, conn)) = st.conn.clone().filter(|_| st.data.is_empty() && !st.in_flight) else { return };
        drop(st);
        shutdown(&conn, libc::SHUT_WR);
        let mut st = self.shared.lock();
        while st.conn.as_ref().is_some_and(|(n, _)| *n == number) && Instant::now() < deadline {
            st = self.shared.changed.wait_timeout(st, deadline.saturating_duration_since(Instant::now())).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}
