//! The host side of a zone's network device: a TAP interface's descriptor,
//! opened `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` (every frame carries the
//! 12-byte `virtio_net_hdr_v1` in front, so checksum and segmentation
//! offload pass between the guest and the host kernel unchanged).
//!
//! The daemon creates the interface and hands the descriptor to the jailed
//! VMM (which cannot open `/dev/net/tun`); [`Tap::from_fd`] checks that it is
//! what the device needs. [`Tap::open`] creates one (the daemon, tests).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;

use super::VNET_HDR_LEN;

/// A TAP descriptor that cannot back a zone's network device.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// A system call on the TUN device failed.
    #[error("TAP {name}: {op}: {source}")]
    Io {
        /// The interface (or `?` before it is known).
        name: String,
        /// What failed.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The interface name cannot be one.
    #[error("{0:?} is not an interface name (1 to 15 bytes, no '/', ':', whitespace or NUL)")]
    Name(String),
    /// The descriptor is a TUN (layer 3) device, or lacks the flags the device needs.
    #[error("TAP {name}: the descriptor is not a TAP opened with IFF_NO_PI | IFF_VNET_HDR (flags {flags:#x}); open it as `Tap::open` does")]
    Flags {
        /// The interface.
        name: String,
        /// Its flags.
        flags: u16,
    },
}

/// A TAP interface's descriptor (non-blocking).
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

const TUN_PATH: &str = "/dev/net/tun";
const REQUIRED_FLAGS: u16 = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as u16;

/// A `struct ifreq` with `name` and `flags` set.
fn ifreq(name: &str, flags: u16) -> libc::ifreq {
    // SAFETY: all-zero bytes are a valid `ifreq` (a name of NULs, a zero union).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &b) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = b as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    req
}

fn name_of(req: &libc::ifreq) -> String {
    let bytes: Vec<u8> = req.ifr_name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Whether `name` is a valid Linux interface name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name.bytes().any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
}

impl Tap {
    /// Creates (or attaches to) the TAP interface `name`.
    pub fn open(name: &str) -> Result<Self, TapError> {
        if !valid_name(name) {
            return Err(TapError::Name(name.to_owned()));
        }
        let io = |op| {
            let name = name.to_owned();
            move |source| TapError::Io { name, op, source }
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(io("open /dev/net/tun (is the tun module loaded, and may this user use it?)"))?;
        let mut req = ifreq(name, REQUIRED_FLAGS);
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` is.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            return Err(io("TUNSETIFF (creating a TAP needs CAP_NET_ADMIN)")(io::Error::last_os_error()));
        }
        Self::checked(file, name_of(&req))
    }

    /// Takes over a descriptor opened by someone else (the daemon), checking
    /// that it is a TAP with the flags the device needs.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, TapError> {
        let file = File::from(fd);
        let mut req = ifreq("", 0);
        // SAFETY: TUNGETIFF writes a `struct ifreq`, which `req` is.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNGETIFF, &mut req) } < 0 {
            return Err(TapError::Io { name: "?".into(), op: "TUNGETIFF (is it a TAP descriptor?)", source: io::Error::last_os_error() });
        }
        let name = name_of(&req);
        // SAFETY: TUNGETIFF filled in the flags member of the union.
        let flags = unsafe { req.ifr_ifru.ifru_flags } as u16;
        if flags & REQUIRED_FLAGS != REQUIRED_FLAGS || flags & libc::IFF_TUN as u16 != 0 {
            return Err(TapError::Flags { name, flags });
        }
        set_nonblocking(&file).map_err(|source| TapError::Io { name: name.clone(), op: "fcntl O_NONBLOCK", source })?;
        Self::checked(file, name)
    }

    fn checked(file: File, name: String) -> Result<Self, TapError> {
        let size = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads an int, which `size` is.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size) } < 0 {
            return Err(TapError::Io { name, op: "TUNSETVNETHDRSZ", source: io::Error::last_os_error() });
        }
        let tap = Self { file, name };
        // No offloads until the driver accepts them: frames arrive whole and checksummed.
        tap.set_offload(0).map_err(|source| TapError::Io { name: tap.name.clone(), op: "TUNSETOFFLOAD", source })?;
        Ok(tap)
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which offloads (`TUN_F_*`) the reader of this descriptor (the guest)
    /// accepts in the frames the host sends it.
    pub fn set_offload(&self, flags: libc::c_uint) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        if unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNSETOFFLOAD, libc::c_ulong::from(flags)) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads one frame (header first) into `iov`; `WouldBlock` when none is queued.
    pub fn read_vectored(&self, iov: &mut [libc::iovec]) -> io::Result<usize> {
        let count = libc::c_int::try_from(iov.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: every iovec points at writable guest memory the caller holds for this call.
        let n = unsafe { libc::readv(self.file.as_raw_fd(), iov.as_ptr(), count) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Writes one frame (header first) from `iov`.
    pub fn write_vectored(&self, iov: &[libc::iovec]) -> io::Result<usize> {
        let count = libc::c_int::try_from(iov.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: every iovec points at readable guest memory the caller holds for this call.
        let n = unsafe { libc::writev(self.file.as_raw_fd(), iov.as_ptr(), count) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

fn set_nonblocking(file: &File) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

impl From<Tap> for OwnedFd {
    fn from(t: Tap) -> Self {
        t.file.into()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A TAP for a test, up, IPv6 off (no router solicitations in the way),
    /// with a raw packet socket on its host side.
    pub(crate) struct TestTap {
        pub tap: Tap,
        pub host: HostSide,
        /// A MAC for the guest side's frames.
        pub guest_mac: [u8; 6],
    }

    /// The host side of a test TAP: an `AF_PACKET` socket bound to it.
    pub(crate) struct HostSide {
        sock: OwnedFd,
        ifindex: i32,
        name: String,
    }

    /// The experimental ethertype the tests' frames carry.
    const TEST_ETHERTYPE: [u8; 2] = [0x88, 0xb5];

    fn check(rc: libc::c_int, what: &str) {
        assert!(rc >= 0, "{what}: {}", io::Error::last_os_error());
    }

    impl TestTap {
        pub(crate) fn new() -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let name = format!("zvt{}x{}", std::process::id() % 100_000, N.fetch_add(1, Ordering::SeqCst));
            let tap = Tap::open(&name).unwrap_or_else(|e| {
                panic!("{e}: the virtio-net tests need /dev/net/tun and CAP_NET_ADMIN (run them as root); they never skip")
            });
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
            // SAFETY: plain socket creation; the descriptor is owned below.
            let ctl = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            check(ctl, "socket");
            // SAFETY: `ctl` was just opened and is owned from here on.
            let ctl = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(ctl) };
            let mut req = ifreq(&name, 0);
            // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS/SIOCGIFINDEX read and write an `ifreq`.
            unsafe {
                check(libc::ioctl(ctl.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req), "SIOCGIFFLAGS");
                req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
                check(libc::ioctl(ctl.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req), "SIOCSIFFLAGS");
                check(libc::ioctl(ctl.as_raw_fd(), libc::SIOCGIFINDEX, &mut req), "SIOCGIFINDEX");
            }
            // SAFETY: SIOCGIFINDEX filled in the index member.
            let ifindex = unsafe { req.ifr_ifru.ifru_ifindex };
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket creation; the descriptor is owned below.
            let sock = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::c_int::from(proto)) };
            check(sock, "socket(AF_PACKET)");
            // SAFETY: as above.
            let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(sock) };
            // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex;
            let tv = libc::timeval { tv_sec: 5, tv_usec: 0 };
            // SAFETY: bind and setsockopt with correctly sized arguments.
            unsafe {
                check(
                    libc::bind(sock.as_raw_fd(), (&raw const sll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32),
                    "bind(AF_PACKET)",
                );
                check(
                    libc::setsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&raw const tv).cast(), std::mem::size_of::<libc::timeval>() as u32),
                    "SO_RCVTIMEO",
                );
            }
            Self { tap, host: HostSide { sock, ifindex, name }, guest_mac: [0x02, 0x5a, 0, 0, 0, 1] }
        }
    }

    impl HostSide {
        /// Sends `frame` from the host side (the guest reads it from the TAP).
        pub(crate) fn send(&self, frame: &[u8]) {
            // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = self.ifindex;
            sll.sll_halen = 6;
            // SAFETY: `frame` and `sll` are valid for the lengths given.
            let n = unsafe {
                libc::sendto(
                    self.sock.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const sll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(n, frame.len() as isize, "sendto: {}", io::Error::last_os_error());
        }

        /// The next test frame the guest side sent (other traffic skipped);
        /// fails after 5 s without one.
        pub(crate) fn receive(&self) -> Vec<u8> {
            self.next(0).unwrap_or_else(|| {
                let stat = |s: &str| std::fs::read_to_string(format!("/sys/class/net/{}/statistics/{s}", self.name)).unwrap_or_default();
                panic!("no frame from the guest side within 5 s (the interface counted rx_packets {} rx_dropped {})", stat("rx_packets").trim(), stat("rx_dropped").trim())
            })
        }

        /// Whether no test frame from the guest side is waiting.
        pub(crate) fn nothing_received(&self) -> bool {
            self.next(libc::MSG_DONTWAIT).is_none()
        }

        fn next(&self, flags: libc::c_int) -> Option<Vec<u8>> {
            let mut buf = vec![0u8; 70_000];
            loop {
                // SAFETY: an all-zero sockaddr_ll is valid for recvfrom to fill.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                // SAFETY: `buf` and `from` are valid for the lengths given.
                let n = unsafe {
                    libc::recvfrom(self.sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags, (&raw mut from).cast(), &mut len)
                };
                let n = usize::try_from(n).ok()?;
                // Our own sends come back as outgoing; other protocols are the host's chatter.
                if from.sll_pkttype == libc::PACKET_OUTGOING as u8 || n < 14 || buf[12..14] != TEST_ETHERTYPE {
                    continue;
                }
                return Some(buf[..n].to_vec());
            }
        }
    }

    /// A descriptor that is not a TAP.
    fn not_a_tap() -> OwnedFd {
        tempfile::tempfile().unwrap().into()
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("zt-web0"));
        for bad in ["", "a/b", "a b", "a:0", "sixteen-bytes-xx", ".", ".."] {
            assert!(!valid_name(bad), "{bad}");
            assert!(matches!(Tap::open(bad), Err(TapError::Name(_))));
        }
    }

    #[test]
    fn a_descriptor_that_is_not_a_tap_is_refused() {
        let e = Tap::from_fd(not_a_tap()).unwrap_err();
        assert!(e.to_string().contains("TUNGETIFF"), "{e}");
    }

    #[test]
    fn a_tap_handed_over_as_a_descriptor_is_taken_and_a_tun_is_not() {
        let t = TestTap::new();
        let name = t.tap.name().to_owned();
        let again = Tap::from_fd(OwnedFd::from(t.tap)).unwrap();
        assert_eq!(again.name(), name);
        // A layer-3 TUN device with the same flags otherwise.
        let file = std::fs::OpenOptions::new().read(true).write(true).open(TUN_PATH).unwrap();
        let mut req = ifreq(&format!("zvtun{}", std::process::id() % 100_000), (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as u16);
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` is.
        check(unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) }, "TUNSETIFF");
        let e = Tap::from_fd(file.into()).unwrap_err();
        assert!(matches!(e, TapError::Flags { .. }), "{e}");
    }
}
