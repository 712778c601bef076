//! The zone network: every zone launched with a network interface gets a
//! routed point-to-point link of its own, a /31 out of the configured pool
//! (`[network] pool`) and, with `pool6`, a /127 out of an IPv6 pool: the host
//! side (the zone's gateway) on a TAP the daemon creates, the zone side on
//! the zone's `eth0`. There is no bridge:
//! the host routes, so nothing a zone sends reaches another zone's link
//! unless the host forwards it, and the TAP's strict reverse-path filter (for
//! IPv6, the daemon's nftables table) drops what a zone sends from an address
//! that is not its own.
//!
//! The assignment (link number, TAP, MAC, addresses) is part of the zone's
//! record: it survives a daemon restart and is released when the zone is
//! destroyed. The TAP lives as long as the VMM holds its descriptor: when the
//! zone stops, the kernel removes it, so no host configuration outlives a zone.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use serde::{Deserialize, Serialize};
use zone_vmm::devices::virtio::net::{Tap, TapError};

/// `[network]` in the daemon's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// The IPv4 pool the links are cut from, `a.b.c.d/prefix` (prefix 8..=30).
    pub pool: String,
    /// An IPv6 pool, `prefix::/len` (len 32..=126): link k also gets the
    /// k-th /127 of it (absent: IPv4 only).
    #[serde(default)]
    pub pool6: Option<String>,
    /// Nameservers for the zones' `/etc/resolv.conf`.
    #[serde(default)]
    pub nameservers: Vec<Ipv4Addr>,
    /// The zones' MTU.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// Per zone: what it may send and receive (`[network.limits]`; absent: unlimited).
    #[serde(default)]
    pub limits: Limits,
    /// Outbound NAT: zones reach what lies beyond this host interface, from
    /// its address (absent: nothing beyond the host).
    #[serde(default)]
    pub nat: Option<String>,
    /// Host services zones may connect to, `tcp/PORT` or `udp/PORT`, on
    /// any of the host's addresses (absent: none).
    #[serde(default)]
    pub host_ports: Vec<crate::firewall::Port>,
    /// Zone-to-zone connections allowed (`[[network.allow]]`; absent: none).
    #[serde(default)]
    pub allow: Vec<crate::firewall::Allow>,
}

/// `[network.limits]`: each zone's traffic in each direction, enforced by its
/// VMM with token buckets refilled every 100 ms (a burst of one period).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Megabits per second the zone may send.
    pub tx_mbit: Option<u32>,
    /// Megabits per second the zone may receive.
    pub rx_mbit: Option<u32>,
    /// Frames per second the zone may send.
    pub tx_pps: Option<u32>,
    /// Frames per second the zone may receive.
    pub rx_pps: Option<u32>,
}

/// The refill period of the buckets.
const REFILL_MS: u64 = 100;

fn rate(mbit: Option<u32>, pps: Option<u32>) -> zone_vmm::devices::virtio::net::RateLimit {
    use zone_vmm::devices::virtio::net::{Bucket, RateLimit};
    let per_period = |per_sec: u64| (per_sec * REFILL_MS / 1000).max(1);
    RateLimit {
        bytes: mbit.map(|m| Bucket { size: per_period(u64::from(m) * 1_000_000 / 8), refill_ms: REFILL_MS }),
        frames: pps.map(|p| Bucket { size: per_period(u64::from(p)), refill_ms: REFILL_MS }),
    }
}

impl Limits {
    /// What the zone receives.
    pub fn rx(&self) -> zone_vmm::devices::virtio::net::RateLimit {
        rate(self.rx_mbit, self.rx_pps)
    }

    /// What the zone sends.
    pub fn tx(&self) -> zone_vmm::devices::virtio::net::RateLimit {
        rate(self.tx_mbit, self.tx_pps)
    }

    /// Range checks; `table` names the table in the error.
    pub fn validate(&self, table: &str) -> Result<(), NetworkError> {
        let l = self;
        if [l.tx_mbit, l.rx_mbit, l.tx_pps, l.rx_pps].iter().flatten().any(|&v| v == 0 || v > 1_000_000) {
            return Err(NetworkError::Config(format!("{table} values must be 1..=1000000 (leave one out for no limit)")));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let mut s = String::new();
        for (k, v, unit) in [
            ("tx", self.tx_mbit, "Mbit/s"),
            ("rx", self.rx_mbit, "Mbit/s"),
            ("tx", self.tx_pps, "pps"),
            ("rx", self.rx_pps, "pps"),
        ] {
            if let Some(v) = v {
                s.push_str(&format!(":{k}={v}{unit}"));
            }
        }
        s
    }
}

fn default_mtu() -> u16 {
    zone_vmm::devices::virtio::net::DEFAULT_MTU
}

/// The zone network cannot be used as configured or asked for.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The pool is not an IPv4 network of a usable size.
    #[error("[network] pool = {0:?} is not an IPv4 network a.b.c.d/prefix with a prefix of 8..=30 and no host bits set")]
    Pool(String),
    /// The IPv6 pool is not an IPv6 network of a usable size.
    #[error("[network] pool6 = {0:?} is not an IPv6 network prefix::/len with a len of 32..=126, no host bits set, not link-local or multicast")]
    Pool6(String),
    /// Too many nameservers, or a bad MTU.
    #[error("[network]: {0}")]
    Config(String),
    /// The pool holds an address the host already uses.
    #[error("the [network] pool {pool} holds {addr}, an address of the host's interface {ifname}: pick a pool no host interface uses")]
    Overlap {
        /// The pool.
        pool: String,
        /// The interface.
        ifname: String,
        /// Its address.
        addr: std::net::IpAddr,
    },
    /// Every link of the pool (or pools) is assigned.
    #[error("the zone network's pool {pool} is exhausted ({links} links, all assigned to zones); destroy a zone or configure a larger pool")]
    Exhausted {
        /// The pool.
        pool: String,
        /// How many links it has.
        links: u32,
    },
    /// The TAP could not be created.
    #[error("cannot create the zone's TAP: {0}")]
    Tap(#[from] TapError),
    /// The host side of the link could not be configured.
    #[error("cannot configure the host side of {tap} ({step}): {source}")]
    Host {
        /// The TAP.
        tap: String,
        /// What failed.
        step: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The pool, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    base: u32,
    prefix: u8,
}

impl Pool {
    /// Parses `a.b.c.d/prefix`.
    pub fn parse(s: &str) -> Result<Self, NetworkError> {
        let bad = || NetworkError::Pool(s.to_owned());
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let base = u32::from(addr.parse::<Ipv4Addr>().map_err(|_| bad())?);
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) || base & !(u32::MAX << (32 - u32::from(prefix))) != 0 {
            return Err(bad());
        }
        Ok(Self { base, prefix })
    }

    /// How many /31 links it holds.
    pub fn links(&self) -> u32 {
        1 << (31 - u32::from(self.prefix))
    }

    /// Whether `addr` lies in the pool.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & (u32::MAX << (32 - u32::from(self.prefix))) == self.base
    }

    /// Refuses a pool that holds an address of one of the host's interfaces
    /// (other than the zones' own TAPs): its zones' links would clash with it.
    pub fn check_host_addresses(&self) -> Result<(), NetworkError> {
        refuse_host_addresses(self, |a| matches!(a, std::net::IpAddr::V4(a) if self.contains(a)))
    }

    /// Link `k`'s host and zone addresses.
    pub fn link(&self, k: u32) -> (Ipv4Addr, Ipv4Addr) {
        let host = self.base + 2 * k;
        (Ipv4Addr::from(host), Ipv4Addr::from(host + 1))
    }
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// The IPv6 pool, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool6 {
    base: u128,
    prefix: u8,
}

/// Prefix length of an IPv6 link.
pub const LINK6_PREFIX: u8 = 127;

impl Pool6 {
    /// Parses `prefix::/len`.
    pub fn parse(s: &str) -> Result<Self, NetworkError> {
        let bad = || NetworkError::Pool6(s.to_owned());
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv6Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let base = u128::from(addr);
        if !(32..=126).contains(&prefix) || base & !(u128::MAX << (128 - u32::from(prefix))) != 0 || addr.is_multicast() || addr.is_unicast_link_local() {
            return Err(bad());
        }
        Ok(Self { base, prefix })
    }

    /// How many /127 links it holds (at most `u32::MAX`).
    pub fn links(&self) -> u32 {
        u32::try_from(1u128 << (127 - u32::from(self.prefix))).unwrap_or(u32::MAX)
    }

    /// Whether `addr` lies in the pool.
    pub fn contains(&self, addr: Ipv6Addr) -> bool {
        u128::from(addr) & (u128::MAX << (128 - u32::from(self.prefix))) == self.base
    }

    /// Link `k`'s host and zone addresses.
    pub fn link(&self, k: u32) -> (Ipv6Addr, Ipv6Addr) {
        let host = self.base + 2 * u128::from(k);
        (Ipv6Addr::from(host), Ipv6Addr::from(host + 1))
    }

    /// Refuses a pool that holds an address of a host interface (other
    /// than the zones' own TAPs).
    pub fn check_host_addresses(&self) -> Result<(), NetworkError> {
        refuse_host_addresses(self, |a| matches!(a, std::net::IpAddr::V6(a) if self.contains(a)))
    }
}

impl std::fmt::Display for Pool6 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv6Addr::from(self.base), self.prefix)
    }
}

/// The first address of a host interface other than a zone's TAP that
/// `pool` `holds`, as an error.
fn refuse_host_addresses(pool: &dyn std::fmt::Display, holds: impl Fn(std::net::IpAddr) -> bool) -> Result<(), NetworkError> {
    match host_addresses().into_iter().find(|(ifname, addr)| holds(*addr) && !is_zone_tap(ifname)) {
        Some((ifname, addr)) => Err(NetworkError::Overlap { pool: pool.to_string(), ifname, addr }),
        None => Ok(()),
    }
}

/// Whether `ifname` is a zone's TAP (`zn<k>`).
fn is_zone_tap(ifname: &str) -> bool {
    ifname.strip_prefix("zn").is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
}

/// Every IPv4 and IPv6 address of the host's interfaces (getifaddrs(3));
/// none when they cannot be listed.
fn host_addresses() -> Vec<(String, std::net::IpAddr)> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head to `list`, freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        // SAFETY: ifa_addr, when set, points to a sockaddr of at least sa_family's size.
        let family = (!ifa.ifa_addr.is_null()).then(|| i32::from(unsafe { (*ifa.ifa_addr).sa_family }));
        // SAFETY: ifa_name is a C string.
        let name = || unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_string_lossy().into_owned();
        if family == Some(libc::AF_INET) {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
            out.push((name(), Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).into()));
        } else if family == Some(libc::AF_INET6) {
            // SAFETY: an AF_INET6 address is a sockaddr_in6.
            let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
            out.push((name(), Ipv6Addr::from(sin6.sin6_addr.s6_addr).into()));
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    out
}

impl NetworkConfig {
    /// The IPv6 pool, checked (`None` without one).
    pub fn pool6(&self) -> Result<Option<Pool6>, NetworkError> {
        self.pool6.as_deref().map(Pool6::parse).transpose()
    }

    /// Checks the pools, the nameservers and the MTU.
    pub fn validate(&self) -> Result<Pool, NetworkError> {
        if self.nameservers.len() > attestation_proto::zone::MAX_NAMESERVERS {
            return Err(NetworkError::Config(format!(
                "{} nameservers; at most {}",
                self.nameservers.len(),
                attestation_proto::zone::MAX_NAMESERVERS
            )));
        }
        if !(576..=9000).contains(&self.mtu) {
            return Err(NetworkError::Config(format!("mtu = {} is outside 576..=9000", self.mtu)));
        }
        self.limits.validate("[network.limits]")?;
        if let Some(nat) = &self.nat
            && !crate::firewall::valid_ifname(nat)
        {
            return Err(NetworkError::Config(format!("nat = {nat:?} is not an interface name")));
        }
        if self.host_ports.len() > 64 || self.allow.len() > 1024 {
            return Err(NetworkError::Config("at most 64 host_ports and 1024 [[network.allow]] entries".into()));
        }
        for a in &self.allow {
            for n in [&a.from, &a.to] {
                crate::manager::validate_name(n).map_err(|e| NetworkError::Config(format!("[[network.allow]]: {e}")))?;
            }
            if a.from == a.to || a.ports.len() > 64 {
                return Err(NetworkError::Config(format!(
                    "[[network.allow]] from = {:?}, to = {:?}: name two different zones and at most 64 ports",
                    a.from, a.to
                )));
            }
        }
        let pool = Pool::parse(&self.pool)?;
        pool.check_host_addresses()?;
        if let Some(p) = self.pool6()? {
            p.check_host_addresses()?;
        }
        Ok(pool)
    }

    /// The policy part.
    pub fn policy(&self) -> crate::firewall::Policy {
        crate::firewall::Policy { nat: self.nat.clone(), host_ports: self.host_ports.clone(), allow: self.allow.clone() }
    }
}

/// A zone's network interface and the addresses assigned to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetAssignment {
    /// The link's number in the pool.
    pub link: u32,
    /// The TAP on the host.
    pub tap: String,
    /// The zone's MAC.
    pub mac: String,
    /// The zone's address.
    pub address: Ipv4Addr,
    /// The prefix length of its link (31 on the daemon's own network).
    #[serde(default = "link_prefix")]
    pub prefix: u8,
    /// The host side: the zone's gateway.
    pub gateway: Ipv4Addr,
    /// The IPv6 link (`[network] pool6`), a /127.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Link6>,
    /// Nameservers for the zone.
    pub nameservers: Vec<Ipv4Addr>,
    /// The MTU.
    pub mtu: u16,
    /// The traffic limits the zone was launched with.
    #[serde(default)]
    pub limits: Limits,
    /// Host ports forwarded to the zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<Publish>,
    /// The `[network]` policy for this zone as it was at launch
    /// ([`crate::firewall::Policy::describe`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub policy: String,
    /// On a CNI network (`[cni]`): which, and what its plugins set up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniLink>,
}

/// A zone's IPv6 link: a /127 of `[network] pool6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link6 {
    /// The zone's address.
    pub address: Ipv6Addr,
    /// The host side: the zone's gateway.
    pub gateway: Ipv6Addr,
}

/// A zone's attachment to a CNI network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CniLink {
    /// The network's name (from its configuration list).
    pub network: String,
    /// The zone's network namespace (`CNI_NETNS`).
    pub netns: String,
    /// `CNI_CONTAINERID`: unique per launch.
    pub container_id: String,
    /// Whether ADD was started and DEL has not completed: the plugins may
    /// hold something of the zone's (an address, a veth) until it runs.
    pub attached: bool,
    /// The plugins' final ADD result, given to DEL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The configuration list ADD ran with, which DEL runs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflist: Option<serde_json::Value>,
}

fn link_prefix() -> u8 {
    LINK_PREFIX
}

/// A host TCP port the daemon forwards to a port of the zone (`--publish`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// Where the daemon listens.
    pub host: std::net::SocketAddrV4,
    /// The zone's port.
    pub zone_port: u16,
}

/// Most ports one zone may publish.
pub const MAX_PUBLISHED: usize = 16;

/// Prefix length of a link.
pub const LINK_PREFIX: u8 = 31;

impl NetAssignment {
    /// What zone-guest reads from the kernel command line.
    pub fn params(&self) -> attestation_proto::zone::NetParams {
        attestation_proto::zone::NetParams {
            address: self.address,
            prefix: self.prefix,
            gateway: self.gateway,
            nameservers: self.nameservers.clone(),
            v6: self.ipv6.map(|l| attestation_proto::zone::Net6 { address: l.address, prefix: LINK6_PREFIX, gateway: l.gateway }),
        }
    }

    /// The same with the longest addresses a link or a CNI result can
    /// have, for checking the command line's length before they are known.
    pub fn longest(mut self) -> Self {
        let widest = Ipv4Addr::new(255, 255, 255, 254);
        (self.address, self.gateway, self.prefix) = (widest, Ipv4Addr::new(255, 255, 255, 253), 24);
        self.nameservers = vec![widest; attestation_proto::zone::MAX_NAMESERVERS];
        if let Some(l) = self.ipv6.as_mut() {
            (l.address, l.gateway) = (Ipv6Addr::from(u128::MAX - 1), Ipv6Addr::from(u128::MAX - 2));
        }
        self
    }

    /// The device as the launch record lists it (measured).
    pub fn device(&self) -> String {
        let published: String = self.publish.iter().map(|p| format!(":publish={}->{}", p.host, p.zone_port)).collect();
        let network = self.cni.as_ref().map(|c| format!("cni={}:", c.network)).unwrap_or_default();
        let v6 = self.ipv6.map(|l| format!(":ip6=[{}]/{LINK6_PREFIX}:gw6=[{}]", l.address, l.gateway)).unwrap_or_default();
        format!(
            "virtio-net:{network}mac={}:ip={}/{}:gw={}{v6}:mtu={}{}{published}{}",
            self.mac,
            self.address,
            self.prefix,
            self.gateway,
            self.mtu,
            self.limits.describe(),
            self.policy
        )
    }
}

/// The lowest link not in `used`, with its TAP name, MAC and addresses.
pub fn assign(config: &NetworkConfig, used: &[u32]) -> Result<NetAssignment, NetworkError> {
    let pool = config.validate()?;
    let pool6 = config.pool6()?;
    // Link k is the k-th /31 and the k-th /127: the smaller pool bounds both.
    let (links, named) = match pool6 {
        Some(p6) if p6.links() < pool.links() => (p6.links(), format!("pool6 {p6}")),
        _ => (pool.links(), config.pool.clone()),
    };
    let link = (0..links).find(|k| !used.contains(k)).ok_or(NetworkError::Exhausted { pool: named, links })?;
    let (gateway, address) = pool.link(link);
    let ipv6 = pool6.map(|p| {
        let (gateway, address) = p.link(link);
        Link6 { address, gateway }
    });
    let o = address.octets();
    // Locally administered, unicast; unique per zone address.
    let mac = format!("02:5a:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]);
    Ok(NetAssignment {
        link,
        tap: format!("zn{link}"),
        mac,
        address,
        prefix: LINK_PREFIX,
        gateway,
        ipv6,
        nameservers: config.nameservers.clone(),
        mtu: config.mtu,
        limits: config.limits,
        publish: Vec::new(),
        policy: String::new(),
        cni: None,
    })
}

/// A zone's interface on the CNI network `list`, before its plugins ran:
/// `link` numbers the launch; the addresses, MAC and MTU come from the
/// plugins ([`crate::cni::address`], [`crate::sandbox::open_tap`]).
pub fn assign_cni(config: &crate::cni::CniConfig, list: &crate::cni::NetworkList, zone: &str, link: u32, launch: &str) -> NetAssignment {
    NetAssignment {
        link,
        tap: crate::sandbox::TAP.into(),
        mac: String::new(),
        address: Ipv4Addr::UNSPECIFIED,
        prefix: 24,
        gateway: Ipv4Addr::UNSPECIFIED,
        ipv6: None,
        nameservers: config.nameservers.clone(),
        mtu: DEFAULT_CNI_MTU,
        limits: config.limits,
        publish: Vec::new(),
        policy: String::new(),
        cni: Some(CniLink {
            network: list.name.clone(),
            netns: crate::sandbox::path(zone).display().to_string(),
            container_id: format!("zone-{zone}-{launch}"),
            attached: false,
            result: None,
            conflist: None,
        }),
    }
}

/// The MTU a CNI zone is measured with until its plugins' `eth0` says.
const DEFAULT_CNI_MTU: u16 = 1500;

/// Binds every published port of `a` (so a port in use fails the launch
/// before the zone boots).
pub fn bind_published(a: &NetAssignment) -> Result<Vec<(Publish, std::net::TcpListener)>, String> {
    a.publish
        .iter()
        .map(|p| {
            let l = std::net::TcpListener::bind(p.host).map_err(|e| {
                format!("cannot publish host port {} ({e}); is it in use? pick another --publish host port", p.host)
            })?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok((*p, l))
        })
        .collect()
}

/// Open connections per published port.
pub const MAX_CONNECTIONS: usize = 64;

/// Forwards every connection to `listener` to `zone`'s `publish.zone_port`
/// until aborted (the zone sees them come from its gateway).
pub async fn serve_published(name: String, zone: Ipv4Addr, publish: Publish, listener: std::net::TcpListener) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        tracing::warn!(zone = %name, host = %publish.host, "cannot serve a published port");
        return;
    };
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let to = std::net::SocketAddrV4::new(zone, publish.zone_port);
    loop {
        let Ok((mut outside, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = std::sync::Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(zone = %name, host = %publish.host, "too many connections to a published port; refusing one");
            continue;
        };
        let name = name.clone();
        tokio::spawn(async move {
            match tokio::net::TcpStream::connect(to).await {
                Ok(mut inside) => {
                    let _ = tokio::io::copy_bidirectional(&mut outside, &mut inside).await;
                }
                Err(e) => tracing::debug!(zone = %name, %to, error = %e, "a published port's zone side is not answering"),
            }
            drop(permit);
        });
    }
}

/// Parses `--publish [HOST_ADDRESS:]HOST_PORT:ZONE_PORT`.
pub fn parse_publish(s: &str) -> Result<Publish, String> {
    let (addr, host_port, zone_port) = attestation_proto::zone::parse_publish(s)?;
    Ok(Publish { host: std::net::SocketAddrV4::new(addr, host_port), zone_port })
}

/// An `ifreq` naming `name` (truncated to IFNAMSIZ - 1), the rest zero.
pub(crate) fn ifreq(name: &str) -> libc::ifreq {
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

/// Creates the zone's TAP and configures the host side of its link: the
/// gateway address on a /31, the MTU, strict reverse-path filtering (a zone
/// cannot send from another address), forwarding if the policy routes zones'
/// packets (`forwards`), up; with an IPv6 link, its gateway on a /127 (no
/// router advertisements taken, no autoconfiguration, no duplicate address
/// detection to wait for), else no IPv6.
pub fn create_tap(a: &NetAssignment, forwards: bool) -> Result<Tap, NetworkError> {
    let tap = Tap::open(&a.tap)?;
    let host = |step| {
        let tap = a.tap.clone();
        move |source| NetworkError::Host { tap, step, source }
    };
    // (key, value, what it is if it fails: None where IPv6 may be compiled out).
    let mut sysctls: Vec<(String, &str, Option<&'static str>)> = vec![(format!("ipv4/conf/{}/rp_filter", a.tap), "1", Some("rp_filter"))];
    if forwards {
        sysctls.push((format!("ipv4/conf/{}/forwarding", a.tap), "1", Some("forwarding")));
    }
    if a.ipv6.is_some() {
        for key in ["accept_ra", "autoconf", "accept_dad"] {
            sysctls.push((format!("ipv6/conf/{}/{key}", a.tap), "0", Some("IPv6 settings (is IPv6 enabled in the host kernel?)")));
        }
        sysctls.push((format!("ipv6/conf/{}/disable_ipv6", a.tap), "0", Some("IPv6 settings (is IPv6 enabled in the host kernel?)")));
    } else {
        sysctls.push((format!("ipv6/conf/{}/disable_ipv6", a.tap), "1", None));
    }
    for (key, value, step) in sysctls {
        let path = format!("/proc/sys/net/{key}");
        if let (Err(e), Some(step)) = (std::fs::write(&path, value), step) {
            return Err(host(step)(e));
        }
    }
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(host("socket")(io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a new socket we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let ioctl = |request: libc::Ioctl, req: &mut libc::ifreq, step: &'static str| {
        // SAFETY: each request reads or writes the `ifreq` it is given.
        if unsafe { libc::ioctl(sock.as_raw_fd(), request, std::ptr::from_mut(req)) } != 0 {
            return Err(host(step)(io::Error::last_os_error()));
        }
        Ok(())
    };
    let mut req = ifreq(&a.tap);
    req.ifr_ifru.ifru_addr = sockaddr(a.gateway);
    ioctl(libc::SIOCSIFADDR, &mut req, "address")?;
    let mut req = ifreq(&a.tap);
    req.ifr_ifru.ifru_netmask = sockaddr(Ipv4Addr::from(u32::MAX << (32 - u32::from(LINK_PREFIX))));
    ioctl(libc::SIOCSIFNETMASK, &mut req, "netmask")?;
    let mut req = ifreq(&a.tap);
    req.ifr_ifru.ifru_mtu = libc::c_int::from(a.mtu);
    ioctl(libc::SIOCSIFMTU, &mut req, "mtu")?;
    let mut req = ifreq(&a.tap);
    ioctl(libc::SIOCGIFFLAGS, &mut req, "flags")?;
    // SAFETY: the kernel filled the flags member of the union above.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ioctl(libc::SIOCSIFFLAGS, &mut req, "up")?;
    if let Some(l) = a.ipv6 {
        let mut req = ifreq(&a.tap);
        ioctl(libc::SIOCGIFINDEX, &mut req, "index")?;
        // SAFETY: the kernel filled the index member of the union above.
        let index = unsafe { req.ifr_ifru.ifru_ifindex };
        add_address6(index, l.gateway, LINK6_PREFIX).map_err(host("IPv6 address"))?;
    }
    Ok(tap)
}

/// Adds `addr/prefix` to interface `index` (SIOCSIFADDR on an IPv6 socket).
pub(crate) fn add_address6(index: libc::c_int, addr: Ipv6Addr, prefix: u8) -> io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = libc::in6_ifreq {
        ifr6_addr: libc::in6_addr { s6_addr: addr.octets() },
        ifr6_prefixlen: u32::from(prefix),
        ifr6_ifindex: index,
    };
    // SAFETY: SIOCSIFADDR on an AF_INET6 socket reads an in6_ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFADDR, std::ptr::from_mut(&mut req)) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pool: &str) -> NetworkConfig {
        NetworkConfig {
            pool: pool.into(),
            pool6: None,
            nameservers: vec![],
            mtu: 1500,
            limits: Limits::default(),
            nat: None,
            host_ports: vec![],
            allow: vec![],
        }
    }

    #[test]
    fn links_are_cut_from_the_pool_lowest_free_first() {
        let c = config("10.213.0.0/29");
        let a = assign(&c, &[]).unwrap();
        assert_eq!((a.link, a.tap.as_str()), (0, "zn0"));
        assert_eq!((a.gateway, a.address), (Ipv4Addr::new(10, 213, 0, 0), Ipv4Addr::new(10, 213, 0, 1)));
        assert_eq!(a.mac, "02:5a:0a:d5:00:01");
        assert_eq!(a.params().param(), "zone.net=10.213.0.1/31,10.213.0.0");
        let b = assign(&c, &[0, 2]).unwrap();
        assert_eq!((b.link, b.address), (1, Ipv4Addr::new(10, 213, 0, 3)));
        let e = assign(&c, &[0, 1, 2, 3]).unwrap_err();
        assert!(e.to_string().contains("exhausted (4 links"), "{e}");
        assert!(b.device().starts_with("virtio-net:mac=02:5a:0a:d5:00:03:ip=10.213.0.3/31:gw=10.213.0.2"), "{}", b.device());
    }

    #[test]
    fn an_ipv6_pool_gives_link_k_its_kth_127_and_bounds_the_links() {
        let mut c = config("10.213.0.0/24");
        c.pool6 = Some("fd5a:0:0:1::/125".into());
        let a = assign(&c, &[]).unwrap();
        assert_eq!(a.ipv6, Some(Link6 { address: "fd5a:0:0:1::1".parse().unwrap(), gateway: "fd5a:0:0:1::".parse().unwrap() }));
        let b = assign(&c, &[0, 1]).unwrap();
        assert_eq!((b.link, b.address, b.ipv6.map(|l| l.address)), (2, Ipv4Addr::new(10, 213, 0, 5), Some("fd5a:0:0:1::5".parse().unwrap())));
        assert_eq!(b.params().param(), "zone.net=10.213.0.5/31,10.213.0.4,fd5a:0:0:1::5/127,fd5a:0:0:1::4");
        assert!(b.device().starts_with("virtio-net:mac=02:5a:0a:d5:00:05:ip=10.213.0.5/31:gw=10.213.0.4:ip6=[fd5a:0:0:1::5]/127:gw6=[fd5a:0:0:1::4]:mtu=1500"), "{}", b.device());
        // Four /127s in the /125: the IPv6 pool runs out first, and the error names it.
        let e = assign(&c, &[0, 1, 2, 3]).unwrap_err();
        assert!(e.to_string().contains("pool6 fd5a:0:0:1::/125 is exhausted (4 links"), "{e}");
        // The widest line a link of the pool can give.
        assert!(b.longest().params().param().len() >= "zone.net=255.255.255.254/24,255.255.255.253".len() + 2 * 40 + 5);
        for bad in ["fd5a::", "fd5a::1/64", "fd5a::/127", "fd5a::/16", "fe80::/64", "ff02::/64", "10.0.0.0/24", "x/64"] {
            c.pool6 = Some(bad.into());
            assert!(matches!(c.validate(), Err(NetworkError::Pool6(_))), "{bad}");
        }
        // The loopback address is the host's: a pool holding it is refused.
        c.pool6 = Some("::/120".into());
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("holds ::1, an address of the host's interface lo"), "{e}");
        // A record from before IPv6 has none.
        let old = r#"{"link":1,"tap":"zn1","mac":"02:5a:0a:d5:00:03","address":"10.213.0.3","gateway":"10.213.0.2","nameservers":[],"mtu":1500}"#;
        assert_eq!(serde_json::from_str::<NetAssignment>(old).unwrap().ipv6, None);
    }

    #[test]
    fn bad_pools_and_settings_are_refused() {
        for bad in ["10.213.0.0", "10.213.0.1/24", "10.213.0.0/31", "10.0.0.0/7", "x/24"] {
            assert!(matches!(config(bad).validate(), Err(NetworkError::Pool(_))), "{bad}");
        }
        let mut c = config("10.213.0.0/24");
        c.mtu = 100;
        assert!(matches!(c.validate(), Err(NetworkError::Config(_))));
        c.mtu = 1500;
        c.nameservers = vec![Ipv4Addr::LOCALHOST; 4];
        assert!(matches!(c.validate(), Err(NetworkError::Config(_))));
        c.nameservers = vec![];
        c.limits.tx_mbit = Some(0);
        assert!(matches!(c.validate(), Err(NetworkError::Config(_))));
    }

    #[test]
    fn a_pool_that_holds_a_host_address_is_refused() {
        let e = config("127.0.0.0/8").validate().unwrap_err();
        assert!(matches!(e, NetworkError::Overlap { .. }), "{e}");
        assert!(e.to_string().contains("127.0.0.1, an address of the host's interface lo"), "{e}");
        assert!(is_zone_tap("zn12") && !is_zone_tap("zn") && !is_zone_tap("znx") && !is_zone_tap("eth0"));
    }

    #[test]
    fn the_policy_is_configured_checked_and_measured() {
        let toml = "pool = \"10.213.0.0/24\"\nnat = \"eth1\"\nhost_ports = [\"tcp/8090\"]\n\
                    [[allow]]\nfrom = \"web\"\nto = \"db\"\nports = [\"tcp/5432\"]\n";
        let c: NetworkConfig = toml::from_str(toml).unwrap();
        c.validate().unwrap();
        let mut a = assign(&c, &[]).unwrap();
        a.policy = c.policy().describe("web");
        assert!(a.device().ends_with(":mtu=1500:nat=eth1:host=tcp/8090:to=db(tcp/5432)"), "{}", a.device());
        for bad in [
            "nat = \"eth1; flush ruleset\"",
            "host_ports = [\"tcp/0\"]",
            "[[allow]]\nfrom = \"web\"\nto = \"web\"",
            "[[allow]]\nfrom = \"Web\"\nto = \"db\"",
            "[[allow]]\nfrom = \"web\"\nto = \"db\"\nproto = \"tcp\"",
        ] {
            let toml = format!("pool = \"10.213.0.0/24\"\n{bad}\n");
            let refused = toml::from_str::<NetworkConfig>(&toml).map_err(|e| e.to_string()).and_then(|c| c.validate().map_err(|e| e.to_string()));
            assert!(refused.is_err(), "{bad}");
        }
    }

    #[test]
    fn published_ports_parse_bind_and_are_measured() {
        assert_eq!(parse_publish("8080:80").unwrap().host, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(parse_publish("127.0.0.1:8080:80").unwrap().zone_port, 80);
        for bad in ["80", "0:80", "8080:0", "8080:70000", "x:1:2", "1:2:3:4", "::1:80:80"] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
        let mut a = assign(&config("10.213.0.0/24"), &[]).unwrap();
        a.publish = vec![Publish { host: "127.0.0.1:1".parse().unwrap(), zone_port: 80 }];
        assert!(a.device().ends_with(":publish=127.0.0.1:1->80"), "{}", a.device());
        // A port in use is refused, naming it.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        a.publish = vec![Publish { host: match taken.local_addr().unwrap() { std::net::SocketAddr::V4(v) => v, _ => unreachable!() }, zone_port: 80 }];
        let e = bind_published(&a).unwrap_err();
        assert!(e.contains("is it in use"), "{e}");
    }

    #[test]
    fn limits_become_buckets_and_are_measured() {
        let mut c = config("10.213.0.0/24");
        c.limits = Limits { tx_mbit: Some(80), rx_mbit: None, tx_pps: Some(5), rx_pps: Some(20_000) };
        c.validate().unwrap();
        let a = assign(&c, &[]).unwrap();
        let tx = a.limits.tx();
        // 80 Mbit/s = 10 MB/s: 1 MB per 100 ms; 5 pps: at least one frame per period.
        assert_eq!(tx.bytes.map(|b| (b.size, b.refill_ms)), Some((1_000_000, 100)));
        assert_eq!(tx.frames.map(|b| b.size), Some(1));
        assert_eq!(a.limits.rx().bytes, None);
        assert_eq!(a.limits.rx().frames.map(|b| b.size), Some(2_000));
        assert!(a.device().ends_with(":mtu=1500:tx=80Mbit/s:tx=5pps:rx=20000pps"), "{}", a.device());
        let toml = "pool = \"10.213.0.0/24\"\n[limits]\ntx_mbit = 80\n";
        let parsed: NetworkConfig = toml::from_str(toml).unwrap();
        assert_eq!(parsed.limits.tx_mbit, Some(80));
        assert!(toml::from_str::<NetworkConfig>("pool = \"10.213.0.0/24\"\n[limits]\ntx_gbit = 1\n").is_err(), "unknown keys are refused");
    }

    #[test]
    fn cni_assignments_are_measured_with_their_network_and_old_records_keep_their_31() {
        let list = crate::cni::NetworkList::parse(br#"{"cniVersion":"1.0.0","name":"zones","plugins":[{"type":"bridge"}]}"#, std::path::Path::new("/usr/lib/cni")).unwrap();
        let c = crate::cni::CniConfig { conflist: "/x".into(), bin_dir: "/usr/lib/cni".into(), nameservers: vec![Ipv4Addr::new(10, 88, 0, 1)], limits: Limits::default() };
        let mut a = assign_cni(&c, &list, "web", 0, "1700000000000");
        let link = a.cni.clone().unwrap();
        assert_eq!((link.netns.as_str(), link.container_id.as_str(), link.attached), ("/run/netns/za-web", "zone-web-1700000000000", false));
        (a.address, a.prefix, a.gateway, a.mac) = (Ipv4Addr::new(10, 88, 0, 2), 30, Ipv4Addr::new(10, 88, 0, 1), "aa:bb:cc:dd:ee:03".into());
        assert_eq!(a.device(), "virtio-net:cni=zones:mac=aa:bb:cc:dd:ee:03:ip=10.88.0.2/30:gw=10.88.0.1:mtu=1500");
        assert_eq!(a.params().param(), "zone.net=10.88.0.2/30,10.88.0.1,10.88.0.1");
        // The length check before the plugins ran assumes the longest line they can cause.
        let longest = assign_cni(&c, &list, "web", 0, "0").longest();
        assert!(longest.params().param().len() >= "zone.net=255.255.255.254/24,255.255.255.253".len() + 3 * 16, "{}", longest.params().param());
        // A record written before CNI mode: no prefix, no cni.
        let old = r#"{"link":1,"tap":"zn1","mac":"02:5a:0a:d5:00:03","address":"10.213.0.3","gateway":"10.213.0.2","nameservers":[],"mtu":1500}"#;
        let a: NetAssignment = serde_json::from_str(old).unwrap();
        assert_eq!((a.prefix, a.cni), (31, None));
    }
}
