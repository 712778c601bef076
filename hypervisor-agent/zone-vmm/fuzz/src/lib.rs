//! Shared rig of the VMM fuzz targets: guest memory, a vsock muxer whose host
//! side is a Unix socket in a private temporary directory (with a listener
//! on host port 1024, so guest connections can succeed and carry data), and
//! a host peer that can open connections to the guest; a TAP for the
//! virtio-net target ([`tap_rig`]).

pub mod tap_rig;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::EpollEvent;
use vmm_sys_util::eventfd::EventFd;
use zone_vmm::devices::virtio::Interrupt;
use zone_vmm::devices::virtio::vsock::backend::Backend;
use zone_vmm::devices::virtio::vsock::muxer::Muxer;
use zone_vmm::devices::virtio::vsock::queues::Queues;
use zone_vmm::devices::virtio::vsock::worker;

/// Guest memory of the rigs.
pub const MEM_SIZE: usize = 256 * 1024;
/// The guest's CID.
pub const GUEST_CID: u64 = 3;
/// The host port with a listener.
pub const LISTENING_PORT: u32 = 1024;

/// A muxer and the host side around it, made once per process and reset per input.
pub struct Host {
    /// The device's connection table.
    pub muxer: Muxer,
    /// `U` (host processes connect here to reach the guest).
    pub uds: PathBuf,
    listener: UnixListener,
    accepted: Vec<UnixStream>,
    peers: Vec<UnixStream>,
    _dir: PathBuf,
}

impl Host {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("zone-vmm-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let uds = dir.join("v.sock");
        let backend = Backend::bind(&uds).expect("bind U");
        let listener = UnixListener::bind(dir.join(format!("v.sock_{LISTENING_PORT}"))).expect("bind U_1024");
        listener.set_nonblocking(true).expect("non-blocking");
        Self { muxer: Muxer::new(GUEST_CID, backend), uds, listener, accepted: Vec::new(), peers: Vec::new(), _dir: dir }
    }

    /// Back to no connections (and nothing left in `U`'s backlog).
    pub fn reset(&mut self) {
        self.muxer.backend_mut().accept(Instant::now());
        self.muxer.reset();
        self.accepted.clear();
        self.peers.clear();
        while self.listener.accept().is_ok() {}
    }

    /// Serves the host sockets once, through the worker's own dispatch of
    /// its epoll events (new `U` connections, handshakes, connection
    /// streams); the peers of port 1024 echo a little.
    pub fn serve(&mut self, now: Instant) {
        let mut ready = [EpollEvent::default(); 32];
        let n = self.muxer.backend().epoll().wait(0, &mut ready).unwrap_or(0);
        for ev in &ready[..n] {
            worker::on_host_event(&mut self.muxer, ev.data(), ev.event_set(), true, now);
        }
        while let Ok((s, _)) = self.listener.accept() {
            let _ = s.set_nonblocking(true);
            if self.accepted.len() < 8 {
                self.accepted.push(s);
            }
        }
        let mut buf = [0u8; 512];
        for s in &mut self.accepted {
            if let Ok(n) = s.read(&mut buf) {
                let _ = s.write(&buf[..n.min(64)]);
            }
        }
        self.muxer.expire(now);
    }

    /// A host process connects to `U` and asks for guest port `port`, then sends `data`.
    pub fn connect_to_guest(&mut self, port: u32, data: &[u8]) {
        if self.peers.len() >= 8 {
            return;
        }
        if let Some(mut s) = connect_nonblocking(&self.uds) {
            let _ = s.write_all(format!("CONNECT {port}\n").as_bytes());
            let _ = s.write(data);
            self.peers.push(s);
        }
    }
}

/// `connect(2)` that fails instead of waiting when the listener's backlog is full.
fn connect_nonblocking(path: &std::path::Path) -> Option<UnixStream> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all-zero is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return None;
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is ours.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    let rc = unsafe { libc::connect(fd, (&raw const addr).cast(), len) };
    (rc == 0).then_some(stream)
}

thread_local! {
    static HOST: RefCell<Option<Host>> = const { RefCell::new(None) };
}

/// Runs `f` with the process's host rig, reset.
pub fn with_host<T>(f: impl FnOnce(&mut Host) -> T) -> T {
    HOST.with(|h| {
        let mut h = h.borrow_mut();
        let host = h.get_or_insert_with(Host::new);
        host.reset();
        f(host)
    })
}

/// Fresh guest memory holding `image` from address 0.
pub fn memory(image: &[u8]) -> GuestMemoryMmap {
    use vm_memory::Bytes;
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory");
    let n = image.len().min(MEM_SIZE);
    mem.write_slice(&image[..n], GuestAddress(0)).expect("fits");
    mem
}

/// An interrupt line whose eventfd nobody reads (it saturates harmlessly).
pub fn interrupt() -> Arc<Interrupt> {
    Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).expect("eventfd")))
}

/// Runs the queues a few rounds against the host, as the worker would;
/// false when the guest broke its own device (the worker then resets the
/// connections and stops using the queues).
pub fn process(queues: &mut Queues, host: &mut Host) -> bool {
    let now = Instant::now();
    for _ in 0..3 {
        host.serve(now);
        if queues.process(&mut host.muxer, now).is_err() {
            host.muxer.reset();
            return false;
        }
    }
    true
}
