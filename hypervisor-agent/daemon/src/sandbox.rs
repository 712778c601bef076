//! A CNI zone's network namespace (its "sandbox", as CNI calls it): named
//! `za-<zone>` (`ip netns`), the plugins' interface `eth0` in it, and the
//! zone's TAP `tap0` beside it, joined by traffic-control redirects (as Kata
//! Containers' `tcfilter` model does): what arrives on `eth0` goes out of
//! `tap0` to the zone and the other way round, so the zone's virtio-net
//! interface takes the place of `eth0`, with its MAC and address.
//!
//! The redirect from the zone is an allow-list: IPv4 from the zone's MAC and
//! address, ARP whose sender is the same; anything else the zone sends
//! (another source address or MAC, IPv6) stays in the namespace, whose own
//! stack forwards nothing and answers no ARP on the TAP: it goes nowhere.
//! `tc -n za-<zone> -s filter show dev tap0 parent ffff:` counts what passed.
//!
//! The daemon runs iproute2's `ip` and `tc` (Debian `iproute2`).

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use zone_vmm::devices::virtio::net::Tap;

/// The zone's TAP in its namespace.
pub const TAP: &str = "tap0";

/// Where `ip netns` keeps named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// A CNI zone's namespace could not be made or joined.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// `ip` or `tc` failed or is missing.
    #[error("`{what}` ({doing}) failed: {detail}")]
    Command {
        /// What was being done.
        doing: String,
        /// The command.
        what: String,
        /// Its output, or why it did not run.
        detail: String,
    },
    /// The TAP or the plugins' interface.
    #[error("in the zone's network namespace {netns}: {step}: {detail}")]
    Interface {
        /// The namespace.
        netns: String,
        /// What was being done.
        step: &'static str,
        /// The error.
        detail: String,
    },
}

/// The namespace's name for `zone`.
pub fn name(zone: &str) -> String {
    format!("za-{zone}")
}

/// Its path (`CNI_NETNS`).
pub fn path(zone: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name(zone))
}

fn run(doing: &str, program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), SandboxError> {
    let what = format!("{program} {}", args.join(" "));
    let fail = |detail: String| SandboxError::Command { doing: doing.to_owned(), what: what.clone(), detail };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run {program} ({e}): install iproute2")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

/// Checks that `ip` and `tc` run (at daemon start).
pub fn check_tools() -> Result<(), SandboxError> {
    for tool in ["ip", "tc"] {
        run("the CNI mode's tools", tool, &["-V"], None)?;
    }
    Ok(())
}

/// Creates the zone's namespace (replacing one a crash left behind).
pub fn create(zone: &str) -> Result<PathBuf, SandboxError> {
    let n = name(zone);
    if path(zone).exists() {
        tracing::warn!(zone, netns = %n, "removing a network namespace left from an earlier launch");
        remove(zone)?;
    }
    run(&format!("creating the zone's network namespace {n}"), "ip", &["netns", "add", &n], None)?;
    Ok(path(zone))
}

/// Removes the zone's namespace, with whatever is still in it (none: a no-op).
pub fn remove(zone: &str) -> Result<(), SandboxError> {
    if !path(zone).exists() {
        return Ok(());
    }
    let n = name(zone);
    run(&format!("removing the zone's network namespace {n}"), "ip", &["netns", "delete", &n], None)
}

/// The zone's side, as the plugins left it on `eth0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// `eth0`'s MAC, which the zone takes.
    pub mac: String,
    /// `eth0`'s MTU, which the zone takes.
    pub mtu: u16,
}

/// Creates the zone's TAP in its namespace, with `eth0`'s MTU, up; returns
/// it with `eth0`'s MAC and MTU. Runs on a thread of its own that joins the
/// namespace (TUNSETIFF creates the interface in the caller's namespace),
/// so no other thread of the daemon changes namespace.
pub fn open_tap(zone: &str) -> Result<(Tap, Link), SandboxError> {
    let netns = name(zone);
    let ns_path = path(zone);
    let err = {
        let netns = netns.clone();
        move |step: &'static str, detail: String| SandboxError::Interface { netns: netns.clone(), step, detail }
    };
    let join = std::thread::spawn(move || -> Result<(Tap, Link), SandboxError> {
        let ns = std::fs::File::open(&ns_path).map_err(|e| err("opening it", e.to_string()))?;
        // SAFETY: setns on a namespace descriptor we hold; only this thread
        // moves, and it ends when this closure returns.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
            return Err(err("joining it (setns)", std::io::Error::last_os_error().to_string()));
        }
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(err("socket", std::io::Error::last_os_error().to_string()));
        }
        // SAFETY: `fd` is a new socket we own.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let ioctl = |request: libc::Ioctl, req: &mut libc::ifreq, step: &'static str| {
            // SAFETY: each request reads or writes the `ifreq` it is given.
            if unsafe { libc::ioctl(sock.as_raw_fd(), request, std::ptr::from_mut(req)) } != 0 {
                return Err(err(step, std::io::Error::last_os_error().to_string()));
            }
            Ok(())
        };
        let mut req = crate::network::ifreq(crate::cni::IFNAME);
        ioctl(libc::SIOCGIFHWADDR, &mut req, "reading eth0's MAC (did the plugins create eth0?)")?;
        // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
        let hw = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
        let mac = hw[..6].iter().map(|&b| format!("{:02x}", b as u8)).collect::<Vec<_>>().join(":");
        let mut req = crate::network::ifreq(crate::cni::IFNAME);
        ioctl(libc::SIOCGIFMTU, &mut req, "reading eth0's MTU")?;
        // SAFETY: SIOCGIFMTU filled the mtu member of the union.
        let mtu = unsafe { req.ifr_ifru.ifru_mtu };
        let mtu = u16::try_from(mtu).ok().filter(|m| (576..=9000).contains(m)).ok_or_else(|| err("eth0's MTU", format!("{mtu} is outside 576..=9000")))?;
        let tap = Tap::open(TAP).map_err(|e| err("creating the TAP", e.to_string()))?;
        // The namespace's own stack takes no part: no IPv6 on either side,
        // no forwarding, no ARP answers on the TAP (what the redirects do not
        // pass ends there). This thread's /proc/sys/net is the namespace's.
        for (key, value) in [
            (format!("ipv6/conf/{TAP}/disable_ipv6"), "1"),
            (format!("ipv6/conf/{}/disable_ipv6", crate::cni::IFNAME), "1"),
            ("ipv4/conf/all/forwarding".to_owned(), "0"),
            (format!("ipv4/conf/{TAP}/arp_ignore"), "8"),
        ] {
            let path = format!("/proc/sys/net/{key}");
            if let Err(e) = std::fs::write(&path, value)
                && key.starts_with("ipv4")
            {
                return Err(err("sysctl", format!("{path}: {e}")));
            }
        }
        let mut req = crate::network::ifreq(TAP);
        req.ifr_ifru.ifru_mtu = libc::c_int::from(mtu);
        ioctl(libc::SIOCSIFMTU, &mut req, "setting the TAP's MTU")?;
        let mut req = crate::network::ifreq(TAP);
        ioctl(libc::SIOCGIFFLAGS, &mut req, "reading the TAP's flags")?;
        // SAFETY: the kernel filled the flags member of the union above.
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        ioctl(libc::SIOCSIFFLAGS, &mut req, "setting the TAP up")?;
        Ok((tap, Link { mac, mtu }))
    });
    join.join().map_err(|_| SandboxError::Interface { netns, step: "joining it", detail: "the thread panicked".into() })?
}

/// The traffic-control script that joins `eth0` and the TAP: the ingress
/// qdisc, the u32 classifier and the mirred action only (what the most
/// minimal host kernels build in).
pub fn redirect_script(mac: &str, address: Ipv4Addr) -> Result<String, SandboxError> {
    let (eth, tap) = (crate::cni::IFNAME, TAP);
    let hex: String = mac.split(':').collect();
    if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SandboxError::Interface { netns: String::new(), step: "reading eth0's MAC", detail: format!("{mac:?} is not a MAC") });
    }
    let ip = address.octets();
    let (ip_hi, ip_lo) = (u16::from_be_bytes([ip[0], ip[1]]), u16::from_be_bytes([ip[2], ip[3]]));
    // ARP (from the network header): sender MAC at 8..14, sender address at 14..18
    // (u32 matches are 4-byte aligned: 14 is matched as two halves).
    Ok(format!(
        "qdisc add dev {eth} ingress\n\
         filter add dev {eth} parent ffff: prio 1 protocol all u32 match u8 0 0 action mirred egress redirect dev {tap}\n\
         qdisc add dev {tap} ingress\n\
         filter add dev {tap} parent ffff: prio 1 protocol ip u32 match ip src {address}/32 match ether src {mac} action mirred egress redirect dev {eth}\n\
         filter add dev {tap} parent ffff: prio 2 protocol arp u32 match ether src {mac} match u32 0x{sha_hi} 0xffffffff at 8 match u16 0x{sha_lo} 0xffff at 12 \
         match u16 {ip_hi:#06x} 0xffff at 14 match u16 {ip_lo:#06x} 0xffff at 16 action mirred egress redirect dev {eth}\n",
        sha_hi = &hex[..8],
        sha_lo = &hex[8..],
    ))
}

/// Joins `eth0` and the TAP in the zone's namespace ([`redirect_script`]).
pub fn redirect(zone: &str, mac: &str, address: Ipv4Addr) -> Result<(), SandboxError> {
    let n = name(zone);
    let script = redirect_script(mac, address).map_err(|_| SandboxError::Interface { netns: n.clone(), step: "reading eth0's MAC", detail: format!("{mac:?} is not a MAC") })?;
    run(&format!("joining the zone's TAP to eth0 in {n}"), "tc", &["-n", &n, "-batch", "-"], Some(&script))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zone_may_send_only_from_its_mac_and_address() {
        let s = redirect_script("aa:bb:cc:dd:ee:03", Ipv4Addr::new(10, 88, 0, 5)).unwrap();
        assert!(s.contains("dev eth0 parent ffff: prio 1 protocol all u32 match u8 0 0 action mirred egress redirect dev tap0"), "{s}");
        assert!(s.contains("protocol ip u32 match ip src 10.88.0.5/32 match ether src aa:bb:cc:dd:ee:03 action mirred"), "{s}");
        assert!(
            s.contains("protocol arp u32 match ether src aa:bb:cc:dd:ee:03 match u32 0xaabbccdd 0xffffffff at 8 match u16 0xee03 0xffff at 12 match u16 0x0a58 0xffff at 14 match u16 0x0005 0xffff at 16"),
            "{s}"
        );
        assert_eq!(s.lines().count(), 5, "nothing else passes: {s}");
        assert!(redirect_script("aa:bb", Ipv4Addr::LOCALHOST).is_err());
        assert_eq!(path("web"), PathBuf::from("/run/netns/za-web"));
    }

    /// An ARP request from `mac`/`sender` for `target`, behind the 12-byte
    /// virtio-net header the TAP carries.
    fn arp_request(mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&sender.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target.octets());
        f
    }

    /// The ARP replies to `mac` that arrive on the TAP within `ms`.
    fn replies(tap: &Tap, mac: [u8; 6], ms: i32) -> usize {
        let mut n = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(ms as u64);
        while std::time::Instant::now() < deadline {
            let mut pfd = libc::pollfd { fd: tap.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one pollfd, valid for the call.
            if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
                continue;
            }
            let mut buf = [0u8; 2048];
            let mut iov = [libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() }];
            let Ok(len) = tap.read_vectored(&mut iov) else { continue };
            let f = &buf[12..len];
            // To us, ARP, a reply.
            if f.len() >= 22 && f[..6] == mac && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2] {
                n += 1;
            }
        }
        n
    }

    /// The real thing on this host (root, /dev/net/tun, iproute2, Debian's
    /// containernetworking-plugins; it fails without them): the `bridge`
    /// plugin with `host-local` IPAM gives the namespace its `eth0`, the
    /// zone's TAP is joined to it, and a frame the zone sends from its own
    /// MAC and address reaches the host's bridge, whose answer comes back to
    /// the TAP; the same request from another address goes nowhere.
    #[test]
    fn a_zones_tap_is_joined_to_the_plugins_interface_and_only_its_own_address_passes() {
        let zone = format!("ut{}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let bridge = format!("zb{}", std::process::id() % 100_000);
        let conflist = dir.path().join("ut.conflist");
        std::fs::write(
            &conflist,
            format!(
                r#"{{"cniVersion":"1.0.0","name":"ut","plugins":[{{"type":"bridge","bridge":"{bridge}","isGateway":true,
                "ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.89.7.0/24"}}]],"dataDir":"{}"}}}}]}}"#,
                dir.path().join("ipam").display()
            ),
        )
        .unwrap();
        let config = crate::cni::CniConfig { conflist, bin_dir: "/usr/lib/cni".into(), nameservers: vec![], limits: Default::default() };
        let list = crate::cni::NetworkList::load(&config).expect("install containernetworking-plugins (Debian) for the CNI tests");
        check_tools().unwrap();
        let netns = create(&zone).unwrap();
        let cleanup = |result: Option<&serde_json::Value>| {
            let _ = list.del("ut", &netns, result);
            let _ = remove(&zone);
            let _ = Command::new("ip").args(["link", "del", &bridge]).status();
        };
        let result = match list.add("ut", &netns) {
            Ok(r) => r,
            Err(e) => {
                cleanup(None);
                panic!("bridge ADD: {e}");
            }
        };
        let checked = (|| {
            let a = crate::cni::address("ut", &result).map_err(|e| e.to_string())?;
            let (tap, link) = open_tap(&zone).map_err(|e| e.to_string())?;
            redirect(&zone, &link.mac, a.address).map_err(|e| e.to_string())?;
            let mut mac = [0u8; 6];
            for (m, h) in mac.iter_mut().zip(link.mac.split(':')) {
                *m = u8::from_str_radix(h, 16).unwrap();
            }
            let send = |f: Vec<u8>| {
                let iov = [libc::iovec { iov_base: f.as_ptr() as *mut _, iov_len: f.len() }];
                tap.write_vectored(&iov).map(|_| ())
            };
            // From another address: nothing comes back.
            send(arp_request(mac, Ipv4Addr::new(10, 89, 7, 200), a.gateway)).map_err(|e| e.to_string())?;
            let spoofed = replies(&tap, mac, 700);
            send(arp_request(mac, a.address, a.gateway)).map_err(|e| e.to_string())?;
            let own = replies(&tap, mac, 3000);
            Ok::<_, String>((a, link, spoofed, own))
        })();
        cleanup(Some(&result));
        let (a, link, spoofed, own) = checked.unwrap();
        assert_eq!((a.prefix, a.gateway), (24, Ipv4Addr::new(10, 89, 7, 1)));
        assert_eq!(link.mtu, 1500);
        assert_eq!(spoofed, 0, "an ARP request from another address was answered");
        assert!(own >= 1, "the bridge's answer to the zone's own ARP request did not reach the TAP");
        assert!(!netns.exists(), "the namespace is gone after removal");
    }
}
