//! The zone network's policy, enforced by the host's nftables: one table of
//! the daemon's own (`inet zone_attestor`), rewritten in one atomic
//! `nft -f` transaction (its counters kept, every rule and set element
//! replaced), whenever a zone gets or gives up a link.
//!
//! What it says, for the TAPs of the daemon's zones only:
//! - **prerouting**: a zone sends from its own addresses or not at all (the
//!   TAP's strict reverse-path filter says the same for IPv4, later); from
//!   link-local or unspecified addresses only neighbour discovery and
//!   multicast listener reports; IPv6 only from a zone with an IPv6 link.
//! - **input** (zone → the host itself): replies, neighbour discovery, and
//!   pings to the zone's own gateway; new connections only to the
//!   `host_ports` listed (IPv4 or IPv6). The rest is refused (TCP reset, ICMP
//!   admin-prohibited) and counted.
//! - **forward** (zone → anything routed): replies; zone → zone only for the
//!   pairs `[[network.allow]]` lists (by zone name, the `from` zone opening
//!   the connections); out through `nat` if it is set (IPv4 only). Nothing
//!   routed reaches a zone unless it answers a connection the zone opened.
//!   The daemon never turns on IPv6 forwarding (Linux has it only host-wide);
//!   where the host forwards IPv6, the same rules apply to it.
//! - **postrouting**: with `nat`, what leaves through that interface from
//!   the pool takes the interface's address (masquerade).
//!
//! The daemon's published ports (`--publish`) are not forwarded: the daemon
//! connects to the zone itself, so they need no rule here.
//!
//! Each drop is counted in a named counter (`nft list counters table inet
//! zone_attestor`), so a test — or an operator — can see what was refused.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::network::NetAssignment;

/// The daemon's nftables table (family `inet`).
pub const TABLE: &str = "zone_attestor";

/// A transport port: `tcp/5432`, `udp/53`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Port {
    /// TCP (else UDP).
    pub tcp: bool,
    /// The port.
    pub port: u16,
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", if self.tcp { "tcp" } else { "udp" }, self.port)
    }
}

impl std::str::FromStr for Port {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a port: use tcp/PORT or udp/PORT (PORT 1-65535)");
        let (proto, port) = s.split_once('/').ok_or_else(bad)?;
        let tcp = match proto {
            "tcp" => true,
            "udp" => false,
            _ => return Err(bad()),
        };
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0 {
            return Err(bad());
        }
        Ok(Self { tcp, port })
    }
}

impl Serialize for Port {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `[[network.allow]]`: zone `from` may open connections to zone `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    /// The zone that connects.
    pub from: String,
    /// The zone it connects to.
    pub to: String,
    /// To these ports of `to` only (absent or empty: every port).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
}

/// The policy part of `[network]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Outbound NAT through this host interface.
    pub nat: Option<String>,
    /// Host services zones may reach.
    pub host_ports: Vec<Port>,
    /// Zone-to-zone connections allowed.
    pub allow: Vec<Allow>,
}

/// Checks a host interface name (`IFNAMSIZ`, and nothing nft would parse).
pub fn valid_ifname(s: &str) -> bool {
    !s.is_empty() && s.len() < libc::IFNAMSIZ && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl Policy {
    /// What the launch record lists for zone `name` (measured): `:nat=IF`,
    /// `:host=PORT+…`, `:to=ZONE(PORT+…)+…`, `:from=ZONE(…)+…`.
    pub fn describe(&self, name: &str) -> String {
        let ports = |p: &[Port]| {
            if p.is_empty() { String::new() } else { format!("({})", p.iter().map(Port::to_string).collect::<Vec<_>>().join("+")) }
        };
        let mut s = String::new();
        if let Some(nat) = &self.nat {
            let _ = write!(s, ":nat={nat}");
        }
        if !self.host_ports.is_empty() {
            let _ = write!(s, ":host={}", self.host_ports.iter().map(Port::to_string).collect::<Vec<_>>().join("+"));
        }
        for (key, peers) in [
            ("to", self.allow.iter().filter(|a| a.from == name).map(|a| format!("{}{}", a.to, ports(&a.ports))).collect::<Vec<_>>()),
            ("from", self.allow.iter().filter(|a| a.to == name).map(|a| format!("{}{}", a.from, ports(&a.ports))).collect()),
        ] {
            if !peers.is_empty() {
                let _ = write!(s, ":{key}={}", peers.join("+"));
            }
        }
        s
    }

    /// Whether packets from zones are ever routed (so the TAPs forward).
    pub fn forwards(&self) -> bool {
        self.nat.is_some() || !self.allow.is_empty()
    }
}

/// A zone's link as the ruleset needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneLink {
    /// The zone's name.
    pub name: String,
    /// Its TAP.
    pub tap: String,
    /// Its address.
    pub address: Ipv4Addr,
    /// Its gateway (the host side).
    pub gateway: Ipv4Addr,
    /// Its IPv6 address and gateway, if it has an IPv6 link.
    pub ipv6: Option<(Ipv6Addr, Ipv6Addr)>,
}

impl ZoneLink {
    /// The link of zone `name`.
    pub fn of(name: &str, a: &NetAssignment) -> Self {
        Self { name: name.to_owned(), tap: a.tap.clone(), address: a.address, gateway: a.gateway, ipv6: a.ipv6.map(|l| (l.address, l.gateway)) }
    }
}

/// The sets: name, type, elements.
fn sets(policy: &Policy, zones: &[ZoneLink]) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let q = |s: &str| format!("\"{s}\"");
    let tap_of = |name: &str| zones.iter().find(|z| z.name == name).map(|z| q(&z.tap));
    let mut pairs = Vec::new();
    let mut pair_ports = Vec::new();
    for a in &policy.allow {
        let (Some(from), Some(to)) = (tap_of(&a.from), tap_of(&a.to)) else { continue };
        if a.ports.is_empty() {
            pairs.push(format!("{from} . {to}"));
        }
        for p in &a.ports {
            pair_ports.push(format!("{from} . {to} . {} . {}", proto(p), p.port));
        }
    }
    vec![
        ("zone_ifs", "ifname", zones.iter().map(|z| q(&z.tap)).collect()),
        ("zone_sources", "ifname . ipv4_addr", zones.iter().map(|z| format!("{} . {}", q(&z.tap), z.address)).collect()),
        ("zone_gateways", "ifname . ipv4_addr", zones.iter().map(|z| format!("{} . {}", q(&z.tap), z.gateway)).collect()),
        ("zone_sources6", "ifname . ipv6_addr", zones.iter().filter_map(|z| z.ipv6.map(|(a, _)| format!("{} . {a}", q(&z.tap)))).collect()),
        ("zone_gateways6", "ifname . ipv6_addr", zones.iter().filter_map(|z| z.ipv6.map(|(_, g)| format!("{} . {g}", q(&z.tap)))).collect()),
        ("host_ports", "inet_proto . inet_service", policy.host_ports.iter().map(|p| format!("{} . {}", proto(p), p.port)).collect()),
        ("zone_pairs", "ifname . ifname", pairs),
        ("zone_pair_ports", "ifname . ifname . inet_proto . inet_service", pair_ports),
    ]
}

fn proto(p: &Port) -> &'static str {
    if p.tcp { "tcp" } else { "udp" }
}

/// The named counters (kept across rewrites).
pub const COUNTERS: [&str; 3] = ["spoofed", "to_host_refused", "forward_refused"];

/// The whole table for `zones`, as one `nft -f` transaction: the counters
/// and sets are made if missing (so the counts carry on), then every rule
/// and set element is replaced.
pub fn ruleset(policy: &Policy, pool: &str, zones: &[ZoneLink]) -> String {
    let q = |s: &str| format!("\"{s}\"");
    let sets = sets(policy, zones);
    let mut t = format!("table inet {TABLE} {{\n");
    for c in COUNTERS {
        let _ = writeln!(t, "\tcounter {c} {{ }}");
    }
    for (name, ty, _) in &sets {
        let _ = writeln!(t, "\tset {name} {{ type {ty}; }}");
    }
    let _ = writeln!(t, "}}\nflush table inet {TABLE}");
    for (name, _, elements) in &sets {
        let _ = writeln!(t, "flush set inet {TABLE} {name}");
        if !elements.is_empty() {
            let _ = writeln!(t, "add element inet {TABLE} {name} {{ {} }}", elements.join(", "));
        }
    }
    let _ = writeln!(t, "table inet {TABLE} {{");
    t.push_str(
        "\tchain prerouting {
\t\ttype filter hook prerouting priority raw; policy accept;
\t\tiifname @zone_ifs iifname . ip saddr != @zone_sources counter name spoofed drop
\t\tiifname @zone_ifs ip6 saddr { ::, fe80::/10 } jump zone_link_local
\t\tiifname @zone_ifs meta nfproto ipv6 iifname . ip6 saddr != @zone_sources6 counter name spoofed drop
\t}
\tchain zone_link_local {
\t\tip6 hoplimit 255 icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept
\t\tip6 daddr ff02::/16 icmpv6 type { mld-listener-report, mld-listener-done, mld2-listener-report } accept
\t\tcounter name spoofed drop
\t}
\tchain input {
\t\ttype filter hook input priority filter; policy accept;
\t\tiifname @zone_ifs jump zone_to_host
\t}
\tchain zone_to_host {
\t\tct state established,related accept
\t\ticmp type echo-request iifname . ip daddr @zone_gateways accept
\t\ticmpv6 type echo-request iifname . ip6 daddr @zone_gateways6 accept
\t\tip6 hoplimit 255 icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept
\t\tip6 daddr ff02::/16 icmpv6 type { mld-listener-report, mld-listener-done, mld2-listener-report } accept
\t\tmeta l4proto . th dport @host_ports accept
\t\tmeta l4proto tcp counter name to_host_refused reject with tcp reset
\t\tcounter name to_host_refused reject with icmpx type admin-prohibited
\t}
\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tiifname @zone_ifs jump from_zone
\t\toifname @zone_ifs jump to_zone
\t}
\tchain from_zone {
\t\tct state established,related accept
\t\tiifname . oifname @zone_pairs accept
\t\tiifname . oifname . meta l4proto . th dport @zone_pair_ports accept
",
    );
    if let Some(nat) = &policy.nat {
        let _ = writeln!(t, "\t\tmeta nfproto ipv4 oifname {} accept", q(nat));
    }
    t.push_str(
        "\t\tmeta l4proto tcp counter name forward_refused reject with tcp reset
\t\tcounter name forward_refused reject with icmpx type admin-prohibited
\t}
\tchain to_zone {
\t\tct state established,related accept
\t\tcounter name forward_refused drop
\t}
",
    );
    if let Some(nat) = &policy.nat {
        let _ = write!(
            t,
            "\tchain postrouting {{
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip saddr {pool} oifname {} masquerade
\t}}
",
            q(nat)
        );
    }
    t.push_str("}\n");
    t
}

/// The policy could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// No `nft`.
    #[error("the zone network needs nftables, and `nft` was not found in {0}: install it (apt-get install nftables)")]
    NoNft(String),
    /// `nft` refused the ruleset or could not run.
    #[error("nft could not install the zone network's rules (table inet {TABLE}): {0}")]
    Nft(String),
    /// A sysctl could not be set.
    #[error("cannot set {path}: {source}; is {what}?")]
    Sysctl {
        /// The file.
        path: String,
        /// What it needs.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// `nft`, found on `PATH` or in `/usr/sbin`.
pub fn find_nft() -> Result<PathBuf, FirewallError> {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join("nft"))
        .find(|p| p.is_file())
        .ok_or_else(|| FirewallError::NoNft(format!("PATH={path}:/usr/sbin:/sbin")))
}

/// Runs `nft -f -` with `rules`.
pub fn apply(nft: &std::path::Path, rules: &str) -> Result<(), FirewallError> {
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| FirewallError::Nft(format!("cannot run {}: {e}", nft.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(rules.as_bytes()).map_err(|e| FirewallError::Nft(format!("writing the rules: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| FirewallError::Nft(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(FirewallError::Nft(err.lines().take(12).collect::<Vec<_>>().join("; ")))
    }
}

/// Sets `/proc/sys/net/ipv4/conf/<ifname>/forwarding`.
pub fn enable_forwarding(ifname: &str, what: &str) -> Result<(), FirewallError> {
    let path = format!("/proc/sys/net/ipv4/conf/{ifname}/forwarding");
    std::fs::write(&path, "1").map_err(|source| FirewallError::Sysctl { path, what: what.to_owned(), source })
}

/// The daemon's half: the policy, and one writer of the table at a time.
#[derive(Debug)]
pub struct Firewall {
    nft: PathBuf,
    policy: Policy,
    pool: String,
    lock: std::sync::Mutex<()>,
}

impl Firewall {
    /// Finds `nft` and, with `nat`, lets the uplink forward.
    pub fn new(policy: Policy, pool: String) -> Result<Self, FirewallError> {
        let nft = find_nft()?;
        if let Some(nat) = &policy.nat {
            enable_forwarding(nat, &format!("[network] nat = {nat:?} an interface of this host"))?;
        }
        Ok(Self { nft, policy, pool, lock: std::sync::Mutex::new(()) })
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Rewrites the table for the zones `zones()` returns, called with the
    /// writer lock held (so the last writer always saw the latest zones).
    pub fn sync(&self, zones: impl FnOnce() -> Vec<ZoneLink>) -> Result<(), FirewallError> {
        let _writer = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let rules = ruleset(&self.policy, &self.pool, &zones());
        apply(&self.nft, &rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, k: u8) -> ZoneLink {
        // Odd links have IPv6 too.
        let ipv6 = (k % 2 == 1).then(|| (Ipv6Addr::new(0xfd5a, 0, 0, 0, 0, 0, 0, 2 * u16::from(k) + 1), Ipv6Addr::new(0xfd5a, 0, 0, 0, 0, 0, 0, 2 * u16::from(k))));
        ZoneLink { name: name.into(), tap: format!("zn{k}"), address: Ipv4Addr::new(10, 9, 0, 2 * k + 1), gateway: Ipv4Addr::new(10, 9, 0, 2 * k), ipv6 }
    }

    #[test]
    fn ports_parse_and_print() {
        assert_eq!("tcp/5432".parse::<Port>().unwrap(), Port { tcp: true, port: 5432 });
        assert_eq!("udp/53".parse::<Port>().unwrap().to_string(), "udp/53");
        for bad in ["5432", "tcp/0", "sctp/1", "tcp/65536", "tcp/", "/80", "tcp/8o"] {
            assert!(bad.parse::<Port>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_ruleset_names_only_the_daemons_zones_and_what_the_policy_allows() {
        let policy = Policy {
            nat: Some("eth1".into()),
            host_ports: vec!["tcp/8090".parse().unwrap()],
            allow: vec![
                Allow { from: "web".into(), to: "db".into(), ports: vec!["tcp/5432".parse().unwrap()] },
                Allow { from: "web".into(), to: "cache".into(), ports: vec![] },
                Allow { from: "db".into(), to: "gone".into(), ports: vec![] },
            ],
        };
        let r = ruleset(&policy, "10.9.0.0/24", &[link("web", 0), link("db", 1), link("cache", 2)]);
        assert!(r.contains("\nflush table inet zone_attestor\nflush set inet zone_attestor zone_ifs\n"), "{r}");
        assert!(r.contains("add element inet zone_attestor zone_ifs { \"zn0\", \"zn1\", \"zn2\" }"), "{r}");
        assert!(r.contains("\"zn1\" . 10.9.0.3"), "{r}");
        assert!(r.contains("host_ports { tcp . 8090 }"), "{r}");
        assert!(r.contains("zone_pairs { \"zn0\" . \"zn2\" }"), "{r}");
        assert!(r.contains("zone_pair_ports { \"zn0\" . \"zn1\" . tcp . 5432 }"), "{r}");
        assert!(!r.contains("gone"), "a pair with a zone that has no link adds nothing: {r}");
        assert!(r.contains("meta nfproto ipv4 oifname \"eth1\" accept") && r.contains("ip saddr 10.9.0.0/24 oifname \"eth1\" masquerade"), "{r}");
        assert!(r.contains("zone_sources6 { \"zn1\" . fd5a::3 }") && r.contains("zone_gateways6 { \"zn1\" . fd5a::2 }"), "only zn1 has IPv6: {r}");
        // No zones, no policy: empty sets, no NAT chain, still every refusal.
        let r = ruleset(&Policy::default(), "10.9.0.0/24", &[]);
        assert!(!r.contains("add element") && !r.contains("masquerade") && r.contains("counter name spoofed drop"), "{r}");
    }

    #[test]
    fn the_launch_record_lists_the_policy_of_each_zone() {
        let policy = Policy {
            nat: Some("eth1".into()),
            host_ports: vec!["tcp/8090".parse().unwrap(), "udp/53".parse().unwrap()],
            allow: vec![
                Allow { from: "web".into(), to: "db".into(), ports: vec!["tcp/5432".parse().unwrap()] },
                Allow { from: "web".into(), to: "cache".into(), ports: vec![] },
            ],
        };
        assert_eq!(policy.describe("web"), ":nat=eth1:host=tcp/8090+udp/53:to=db(tcp/5432)+cache");
        assert_eq!(policy.describe("db"), ":nat=eth1:host=tcp/8090+udp/53:from=web(tcp/5432)");
        assert_eq!(Policy::default().describe("web"), "");
        assert!(policy.forwards() && !Policy::default().forwards());
    }

    /// The real `nft` and kernel take both rulesets, the second one replaces
    /// the first, and the counts carry on (in a network namespace of the
    /// test's own).
    #[test]
    fn nft_and_the_kernel_take_the_ruleset_and_a_rewrite_replaces_it() {
        let policy = Policy {
            nat: Some("lo".into()),
            host_ports: vec!["udp/53".parse().unwrap()],
            allow: vec![Allow { from: "web".into(), to: "db".into(), ports: vec!["tcp/5432".parse().unwrap()] }],
        };
        let first = ruleset(&policy, "10.9.0.0/24", &[link("web", 0), link("db", 1)]);
        let second = ruleset(&policy, "10.9.0.0/24", &[link("db", 1)]);
        let nft = find_nft().expect("nft (apt-get install nftables; scripts/setup.sh installs it)");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("0.nft"), format!("table inet {TABLE} {{\n\tcounter spoofed {{ packets 5 bytes 300; }}\n}}\n")).unwrap();
        std::fs::write(dir.path().join("1.nft"), &first).unwrap();
        std::fs::write(dir.path().join("2.nft"), &second).unwrap();
        let script = format!(
            "set -e; {nft} -f 0.nft; {nft} -f 1.nft; {nft} -f 2.nft; {nft} list table inet {TABLE}",
            nft = nft.display()
        );
        let out = Command::new("unshare").args(["--net", "sh", "-c", &script]).current_dir(dir.path()).output().expect("unshare (util-linux)");
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "nft refused the rules (needs root and nf_tables): {}", String::from_utf8_lossy(&out.stderr));
        assert!(listed.contains("\"zn1\" . 10.9.0.3") && !listed.contains("\"zn0\""), "the rewrite replaced the table: {listed}");
        assert!(listed.contains("masquerade") && listed.contains("udp . 53"), "{listed}");
        assert!(listed.contains("\"zn1\" . fd5a::3") && listed.contains("chain zone_link_local"), "the IPv6 rules took: {listed}");
        assert!(listed.contains("packets 5 bytes 300"), "a rewrite keeps the counts: {listed}");
        assert_eq!(listed.matches("counter name \"forward_refused\" reject").count(), 2, "rules are replaced, not added: {listed}");
    }

    #[test]
    fn a_missing_nft_or_a_refused_ruleset_is_an_error_that_says_what_to_do() {
        let e = apply(std::path::Path::new("/nonexistent/nft"), "").unwrap_err();
        assert!(e.to_string().contains("cannot run /nonexistent/nft"), "{e}");
        // `false` stands in for an nft that refuses the rules.
        let e = apply(std::path::Path::new("/bin/false"), "table inet x { }").unwrap_err();
        assert!(matches!(e, FirewallError::Nft(_)), "{e}");
        assert!(valid_ifname("eth0") && !valid_ifname("eth0\"; flush ruleset") && !valid_ifname("a-very-long-ifname"));
    }
}
