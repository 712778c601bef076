//! The zone's network interface: `eth0` (the VMM's virtio-net device, its
//! MAC assigned by the daemon) gets the address, the default route and the
//! nameservers of `zone.net=` on the kernel command line, and its IPv6 link
//! if it has one (no router advertisements, no autoconfiguration, no
//! duplicate address detection: the daemon assigned the address). Plain
//! `ioctl`s on `AF_INET` and `AF_INET6` sockets: the zone's kernel has no
//! netlink users and the zone no `ip` tool.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use attestation_proto::zone::NetParams;

/// The interface the zone's first virtio-net device is.
pub const INTERFACE: &str = "eth0";

/// A step of the configuration failed.
#[derive(Debug, thiserror::Error)]
#[error("{INTERFACE}: {step}: {source}")]
pub struct NetError {
    step: &'static str,
    #[source]
    source: io::Error,
}

fn step(step: &'static str) -> impl FnOnce(io::Error) -> NetError {
    move |source| NetError { step, source }
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: an all-zero ifreq is valid; the name is set below.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &b) in req.ifr_name.iter_mut().zip(name.as_bytes().iter().take(libc::IFNAMSIZ - 1)) {
        *dst = b as libc::c_char;
    }
    req
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(addr).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; every bit pattern is a valid sockaddr.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl(sock: &OwnedFd, request: libc::Ioctl, arg: *mut libc::c_void) -> io::Result<()> {
    // SAFETY: the callers pass a request and the structure it reads or writes.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, arg) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn socket(family: libc::c_int) -> Result<OwnedFd, NetError> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(step("socket")(io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a new socket we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `struct in6_rtmsg` (`linux/ipv6_route.h`), which the libc crate declares
/// without public fields.
#[repr(C)]
struct In6Rtmsg {
    dst: libc::in6_addr,
    src: libc::in6_addr,
    gateway: libc::in6_addr,
    kind: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: libc::c_ulong,
    flags: u32,
    ifindex: libc::c_int,
}

fn in6(addr: Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr { s6_addr: addr.octets() }
}

/// Configures `eth0` from `net` and writes `/etc/resolv.conf`.
pub fn configure(net: &NetParams) -> Result<(), NetError> {
    let sock = socket(libc::AF_INET)?;
    if net.v6.is_some() {
        // Before the interface is up: it takes nothing from the link.
        for key in ["accept_ra", "autoconf", "accept_dad"] {
            std::fs::write(format!("/proc/sys/net/ipv6/conf/{INTERFACE}/{key}"), "0").map_err(step("setting up IPv6 (has the zone kernel IPv6?)"))?;
        }
    }
    let mut req = ifreq(INTERFACE);
    req.ifr_ifru.ifru_addr = sockaddr(net.address);
    ioctl(&sock, libc::SIOCSIFADDR, (&raw mut req).cast()).map_err(step("setting its address (is there a virtio-net device?)"))?;
    let mut req = ifreq(INTERFACE);
    req.ifr_ifru.ifru_netmask = sockaddr(net.netmask());
    ioctl(&sock, libc::SIOCSIFNETMASK, (&raw mut req).cast()).map_err(step("setting its netmask"))?;
    let mut req = ifreq(INTERFACE);
    ioctl(&sock, libc::SIOCGIFFLAGS, (&raw mut req).cast()).map_err(step("reading its flags"))?;
    // SAFETY: the kernel filled the flags member of the union above.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    ioctl(&sock, libc::SIOCSIFFLAGS, (&raw mut req).cast()).map_err(step("bringing it up"))?;
    // The default route through the gateway.
    // SAFETY: an all-zero rtentry is valid; the fields that matter are set below.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = sockaddr(net.gateway);
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    let mut dev = *b"eth0\0";
    rt.rt_dev = dev.as_mut_ptr().cast();
    ioctl(&sock, libc::SIOCADDRT, (&raw mut rt).cast()).map_err(step("adding the default route"))?;
    if let Some(v6) = &net.v6 {
        let mut req = ifreq(INTERFACE);
        ioctl(&sock, libc::SIOCGIFINDEX, (&raw mut req).cast()).map_err(step("reading its index"))?;
        // SAFETY: the kernel filled the index member of the union above.
        let index = unsafe { req.ifr_ifru.ifru_ifindex };
        let sock6 = socket(libc::AF_INET6)?;
        let mut req6 = libc::in6_ifreq { ifr6_addr: in6(v6.address), ifr6_prefixlen: u32::from(v6.prefix), ifr6_ifindex: index };
        ioctl(&sock6, libc::SIOCSIFADDR, (&raw mut req6).cast()).map_err(step("setting its IPv6 address"))?;
        // The default route (::/0) through the gateway.
        let unspecified = in6(Ipv6Addr::UNSPECIFIED);
        let mut rt6 = In6Rtmsg {
            dst: unspecified,
            src: unspecified,
            gateway: in6(v6.gateway),
            kind: 0,
            dst_len: 0,
            src_len: 0,
            metric: 1,
            info: 0,
            flags: u32::from(libc::RTF_UP | libc::RTF_GATEWAY),
            ifindex: index,
        };
        ioctl(&sock6, libc::SIOCADDRT, (&raw mut rt6).cast()).map_err(step("adding the IPv6 default route"))?;
    }
    if !net.nameservers.is_empty() {
        let _ = std::fs::create_dir_all("/etc");
        std::fs::write("/etc/resolv.conf", resolv_conf(net)).map_err(step("writing /etc/resolv.conf"))?;
    }
    Ok(())
}

/// `/etc/resolv.conf` for `net`'s nameservers.
pub fn resolv_conf(net: &NetParams) -> String {
    net.nameservers.iter().map(|n| format!("nameserver {n}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_lists_the_nameservers() {
        let n = NetParams::parse("10.0.0.3/31,10.0.0.2,10.0.0.2,192.0.2.53").unwrap();
        assert_eq!(resolv_conf(&n), "nameserver 10.0.0.2\nnameserver 192.0.2.53\n");
        let s = sockaddr(Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(s.sa_family, libc::AF_INET as libc::sa_family_t);
        assert_eq!(&s.sa_data[2..6], &[10, 0, 0, 3].map(|b: u8| b as libc::c_char));
        // The kernel's struct in6_rtmsg: 3 x 16 + 4 + 2 + 2 + 4 (+ 4 padding) + 8 + 4 + 4.
        assert_eq!(std::mem::size_of::<In6Rtmsg>(), 80);
    }
}
