//! A TAP for the virtio-net target (needs root and /dev/net/tun): up, IPv6
//! off, with an `AF_PACKET` socket on its host side that sends frames the
//! device then reads.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use zone_vmm::devices::virtio::net::Tap;

/// The TAP and its host side.
pub struct TapRig {
    /// What the device reads and writes.
    pub tap: Tap,
    sock: OwnedFd,
    ifindex: i32,
}

fn check(rc: libc::c_int, what: &str) {
    assert!(rc >= 0, "{what}: {} (the net target needs root and /dev/net/tun)", std::io::Error::last_os_error());
}

impl TapRig {
    /// Creates the TAP `zfz<pid>`.
    pub fn new() -> Self {
        let name = format!("zfz{}", std::process::id() % 1_000_000);
        let tap = Tap::open(&name).unwrap_or_else(|e| panic!("{e} (the net target needs root and /dev/net/tun)"));
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
        // SAFETY: an all-zero ifreq is valid; the name is set below.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, &b) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
            *d = b as libc::c_char;
        }
        // SAFETY: plain socket creation, checked.
        let ctl = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        check(ctl, "socket");
        // SAFETY: `ctl` is a new descriptor owned from here on.
        let ctl = unsafe { OwnedFd::from_raw_fd(ctl) };
        // SAFETY: the ioctls read and write the ifreq.
        unsafe {
            check(libc::ioctl(ctl.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req), "SIOCGIFFLAGS");
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            check(libc::ioctl(ctl.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req), "SIOCSIFFLAGS");
            check(libc::ioctl(ctl.as_raw_fd(), libc::SIOCGIFINDEX, &mut req), "SIOCGIFINDEX");
        }
        // SAFETY: SIOCGIFINDEX filled in the index.
        let ifindex = unsafe { req.ifr_ifru.ifru_ifindex };
        // SAFETY: plain socket creation, checked.
        let sock = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
        check(sock, "socket(AF_PACKET)");
        // SAFETY: as above.
        let sock = unsafe { OwnedFd::from_raw_fd(sock) };
        Self { tap, sock, ifindex }
    }

    /// Sends a frame of `len` bytes filled with `fill` from the host side
    /// (dropped by the kernel if it is not a frame it would send).
    pub fn host_send(&self, len: usize, fill: u8) {
        let mut frame = vec![fill; len.clamp(14, 1514)];
        frame[..6].copy_from_slice(&[0x02, 0x5a, 0, 0, 0, 1]);
        frame[12..14].copy_from_slice(&[0x88, 0xb5]);
        // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        // SAFETY: `frame` and `sll` are valid for the lengths given; errors are ignored on purpose.
        unsafe {
            libc::sendto(
                self.sock.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
        }
    }

    /// Reads and drops whatever the TAP holds, so inputs start alike.
    pub fn drain(&self) {
        let mut buf = vec![0u8; 70_000];
        let mut iov = [libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() }];
        while self.tap.read_vectored(&mut iov).is_ok() {}
    }
}

impl Default for TapRig {
    fn default() -> Self {
        Self::new()
    }
}
