//! The verifier's policy: which kernels, initramfs images and command lines
//! a zone may have booted.
//!
//! ```toml
//! version = 1
//!
//! [[allow]]
//! name = "web-*"             # zone names; `*` matches any run of characters
//! kernel_sha256 = ["<64 hex>"]
//! initrd_sha256 = ["<64 hex>"]  # "none": a zone without initramfs
//! cmdline_sha256 = ["<64 hex>"]  # of the line with zone.net= values elided
//! network = ["10.213.0.0/16", "fd5a::/48"]  # optional: the zone's links lie in these ("none": no network)
//! image_sha256 = ["<64 hex>"]   # optional: the image's manifest digest ("none": no image)
//! rootfs_verity = ["<64 hex>"]  # optional: its dm-verity root hash ("none": no image)
//! ```
//!
//! A zone passes when one rule matches its name and all its digests (an
//! absent `image_sha256`, `rootfs_verity` or `network` allows any). The
//! digests are the ones `zonectl measure` prints and the launch record holds.
//! The command line is matched with the values of its `zone.net=` words
//! elided ([`crate::zone::without_net_addresses`]): the address a zone got
//! from the daemon's pool does not change its digest, so one rule admits the
//! zone whichever link it was given; `network` says where its address may be.

use serde::{Deserialize, Serialize};

use crate::launch::LaunchRecord;

/// Version of the policy file layout.
pub const POLICY_VERSION: u32 = 1;
/// Largest policy file accepted (bytes).
pub const MAX_POLICY_LEN: usize = 1024 * 1024;

/// A policy file that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// Not TOML of this layout.
    #[error("invalid policy: {0}")]
    Parse(String),
    /// Wrong version.
    #[error("policy version {0} is not supported (expected version = {POLICY_VERSION})")]
    Version(u32),
    /// A rule is unusable.
    #[error("policy rule {index}: {detail}")]
    Rule {
        /// 0-based rule number.
        index: usize,
        /// What is wrong.
        detail: String,
    },
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Zone-name pattern (`*` wildcards).
    pub name: String,
    /// Allowed kernel digests.
    pub kernel_sha256: Vec<String>,
    /// Allowed initramfs digests (`none` for no initramfs).
    pub initrd_sha256: Vec<String>,
    /// Allowed command-line digests.
    pub cmdline_sha256: Vec<String>,
    /// Allowed image manifest digests (`none`: no image); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_sha256: Vec<String>,
    /// Allowed verity root hashes of the image root (`none`: no image); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rootfs_verity: Vec<String>,
    /// Networks (`address/prefix`, IPv4 or IPv6) the zone's links must lie
    /// in: its IPv4 link in an IPv4 one and, if it has one, its IPv6 link in
    /// an IPv6 one — each link's address, gateway and prefix (`none`: a zone
    /// without a network interface); empty: any. Nameservers are not bound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network: Vec<String>,
}

/// An entry of [`Rule::network`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Network {
    /// `none`: no network interface.
    None,
    /// An IPv4 network.
    V4(std::net::Ipv4Addr, u8),
    /// An IPv6 network.
    V6(std::net::Ipv6Addr, u8),
}

fn parse_network(entry: &str) -> Option<Network> {
    if entry == "none" {
        return Some(Network::None);
    }
    let (addr, prefix) = entry.split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    match addr.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(a) if prefix <= 32 => Some(Network::V4(a, prefix)),
        std::net::IpAddr::V6(a) if prefix <= 128 => Some(Network::V6(a, prefix)),
        _ => None,
    }
}

/// Whether the link `address`/`prefix` with `gateway` lies in the network
/// `net`/`net_prefix`: both addresses, and the whole prefix it is
/// configured with (not a wider one). Addresses as integers of `bits` bits.
fn link_in(bits: u32, (address, prefix, gateway): (u128, u8, u128), (net, net_prefix): (u128, u8)) -> bool {
    let mask = |p: u8| if p == 0 { 0 } else { (u128::MAX << (128 - u32::from(p))) >> (128 - bits) };
    let m = mask(net_prefix);
    prefix >= net_prefix && address & m == net & m && gateway & m == net & m
}

impl Network {
    /// Whether `p`'s IPv4 link lies in this network.
    fn holds_v4(self, p: &crate::zone::NetParams) -> bool {
        let Self::V4(net, n) = self else { return false };
        link_in(32, (u32::from(p.address).into(), p.prefix, u32::from(p.gateway).into()), (u32::from(net).into(), n))
    }

    /// Whether the IPv6 link `l` lies in this network.
    fn holds_v6(self, l: &crate::zone::Net6) -> bool {
        let Self::V6(net, n) = self else { return false };
        link_in(128, (l.address.into(), l.prefix, l.gateway.into()), (net.into(), n))
    }
}

impl Rule {
    fn allows_image(&self, record: &LaunchRecord) -> bool {
        self.image_sha256.is_empty() || self.image_sha256.iter().any(|d| d == record.image_sha256())
    }
    fn allows_verity(&self, record: &LaunchRecord) -> bool {
        self.rootfs_verity.is_empty() || self.rootfs_verity.iter().any(|d| d == record.rootfs_verity())
    }
    fn allows_network(&self, net: Option<&Result<crate::zone::NetParams, String>>) -> bool {
        if self.network.is_empty() {
            return true;
        }
        let entries: Vec<Network> = self.network.iter().filter_map(|e| parse_network(e)).collect();
        match net {
            None => entries.contains(&Network::None),
            Some(Ok(p)) => {
                entries.iter().any(|e| e.holds_v4(p)) && p.v6.as_ref().is_none_or(|l| entries.iter().any(|e| e.holds_v6(l)))
            }
            Some(Err(_)) => false,
        }
    }
}

/// A whole policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// [`POLICY_VERSION`].
    pub version: u32,
    /// The rules; a zone needs one to match.
    #[serde(default)]
    pub allow: Vec<Rule>,
}

fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p = pattern.as_bytes();
    let n = name.as_bytes();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

impl Policy {
    /// Parses and checks a policy file's text.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        if text.len() > MAX_POLICY_LEN {
            return Err(PolicyError::Parse(format!("larger than {MAX_POLICY_LEN} bytes")));
        }
        let p: Self = toml::from_str(text).map_err(|e| PolicyError::Parse(e.message().to_owned()))?;
        if p.version != POLICY_VERSION {
            return Err(PolicyError::Version(p.version));
        }
        for (index, r) in p.allow.iter().enumerate() {
            let rule = |detail: String| PolicyError::Rule { index, detail };
            if r.name.is_empty() {
                return Err(rule("name must not be empty (use \"*\" for any zone)".into()));
            }
            for (field, list) in [("kernel_sha256", &r.kernel_sha256), ("cmdline_sha256", &r.cmdline_sha256)] {
                if list.is_empty() {
                    return Err(rule(format!("{field} must list at least one digest")));
                }
                if let Some(bad) = list.iter().find(|d| !is_digest(d)) {
                    return Err(rule(format!("{field} entry {bad:?} is not 64 lower-case hex digits")));
                }
            }
            if r.initrd_sha256.is_empty() {
                return Err(rule("initrd_sha256 must list at least one digest (or \"none\")".into()));
            }
            for (field, list) in [("initrd_sha256", &r.initrd_sha256), ("image_sha256", &r.image_sha256), ("rootfs_verity", &r.rootfs_verity)] {
                if let Some(bad) = list.iter().find(|d| *d != "none" && !is_digest(d)) {
                    return Err(rule(format!("{field} entry {bad:?} is neither 64 lower-case hex digits nor \"none\"")));
                }
            }
            if let Some(bad) = r.network.iter().find(|n| parse_network(n).is_none()) {
                return Err(rule(format!(
                    "network entry {bad:?} is neither a network (e.g. \"10.213.0.0/16\" or \"fd5a::/48\") nor \"none\""
                )));
            }
        }
        Ok(p)
    }

    /// The policy as TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// A policy admitting exactly this launch's name and digests.
    pub fn admitting(record: &LaunchRecord) -> Self {
        Self {
            version: POLICY_VERSION,
            allow: vec![Rule {
                name: record.zone.clone(),
                kernel_sha256: vec![record.kernel.sha256.clone()],
                initrd_sha256: vec![record.initrd_sha256().to_owned()],
                cmdline_sha256: vec![record.policy_cmdline_sha256()],
                image_sha256: record.rootfs.as_ref().map(|_| vec![record.image_sha256().to_owned()]).unwrap_or_default(),
                rootfs_verity: record.rootfs.as_ref().map(|_| vec![record.rootfs_verity().to_owned()]).unwrap_or_default(),
                network: Vec::new(),
            }],
        }
    }

    /// Checks a launch against the rules; the error says which part no rule allows.
    pub fn check(&self, record: &LaunchRecord) -> Result<(), String> {
        let rules: Vec<&Rule> = self.allow.iter().filter(|r| glob_match(&r.name, &record.zone)).collect();
        if rules.is_empty() {
            return Err(format!("no policy rule matches zone name {:?}", record.zone));
        }
        let initrd = record.initrd_sha256();
        let cmdline = record.policy_cmdline_sha256();
        let net = record.net();
        let ok = |r: &&Rule| {
            r.kernel_sha256.contains(&record.kernel.sha256)
                && r.initrd_sha256.iter().any(|d| d == initrd)
                && r.cmdline_sha256.contains(&cmdline)
                && r.allows_image(record)
                && r.allows_verity(record)
                && r.allows_network(net.as_ref())
        };
        if rules.iter().any(ok) {
            return Ok(());
        }
        if !rules.iter().any(|r| r.kernel_sha256.contains(&record.kernel.sha256)) {
            return Err(format!("kernel sha256:{} is not allowed for zone {:?}", record.kernel.sha256, record.zone));
        }
        if !rules.iter().any(|r| r.initrd_sha256.iter().any(|d| d == initrd)) {
            return Err(format!("initrd sha256:{initrd} is not allowed for zone {:?}", record.zone));
        }
        if !rules.iter().any(|r| r.allows_image(record)) {
            return Err(format!("image sha256:{} is not allowed for zone {:?}", record.image_sha256(), record.zone));
        }
        if !rules.iter().any(|r| r.allows_verity(record)) {
            return Err(format!("image root verity {} is not allowed for zone {:?}", record.rootfs_verity(), record.zone));
        }
        if !rules.iter().any(|r| r.cmdline_sha256.contains(&cmdline)) {
            let elided = if cmdline == record.cmdline_sha256 { "" } else { " (with its zone.net= addresses elided)" };
            return Err(format!("cmdline sha256:{cmdline}{elided} is not allowed for zone {:?}", record.zone));
        }
        if !rules.iter().any(|r| r.allows_network(net.as_ref())) {
            let has = match &net {
                None => "no network interface".to_owned(),
                Some(Ok(n)) => {
                    let v6 = n.v6.map(|l| format!(" and address {}/{} (gateway {})", l.address, l.prefix, l.gateway)).unwrap_or_default();
                    format!("address {}/{} (gateway {}){v6}", n.address, n.prefix, n.gateway)
                }
                Some(Err(e)) => format!("an unusable zone.net= parameter ({e})"),
            };
            return Err(format!("zone {:?} has {has}, which no policy rule's network allows", record.zone));
        }
        Err(format!("no single policy rule allows this kernel, initrd, cmdline, image and network together for zone {:?}", record.zone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::{Artifact, RECORD_VERSION, sha256_hex};

    fn record(zone: &str) -> LaunchRecord {
        LaunchRecord {
            version: RECORD_VERSION,
            host: "h".into(),
            zone: zone.into(),
            launch_id: "01".into(),
            kernel: Artifact::measure("/k", b"k"),
            initrd: None,
            cmdline: "c".into(),
            cmdline_sha256: sha256_hex(b"c"),
            vcpus: 1,
            memory_mib: 64,
            devices: vec![],
            launched_unix_ms: 0,
            rootfs: None,
        }
    }

    #[test]
    fn globs() {
        for (p, n, m) in [("*", "a", true), ("web-*", "web-1", true), ("web-*", "db-1", false), ("a*b*c", "aXbYc", true), ("a*b", "ab", true), ("a", "ab", false), ("*-1", "web-1", true), ("", "a", false)] {
            assert_eq!(glob_match(p, n), m, "{p} {n}");
        }
    }

    #[test]
    fn admits_and_names_the_mismatch() {
        let r = record("web-1");
        let p = Policy::parse(&Policy::admitting(&r).to_toml()).unwrap();
        assert_eq!(p.check(&r), Ok(()));
        let mut other = r.clone();
        other.zone = "db".into();
        assert!(p.check(&other).unwrap_err().contains("no policy rule matches"));
        let mut k = r.clone();
        k.kernel.sha256 = sha256_hex(b"other");
        assert!(p.check(&k).unwrap_err().starts_with("kernel sha256:"));
        let mut i = r.clone();
        i.initrd = Some(Artifact::measure("/i", b"i"));
        assert!(p.check(&i).unwrap_err().starts_with("initrd sha256:"));
        let mut c = r;
        c.cmdline = "x".into();
        c.cmdline_sha256 = sha256_hex(b"x");
        assert_eq!(p.check(&c).unwrap_err(), format!("cmdline sha256:{} is not allowed for zone \"web-1\"", sha256_hex(b"x")));
    }

    #[test]
    fn images_and_verity_roots_are_named() {
        let mut r = record("web-1");
        r.rootfs = Some(crate::launch::Rootfs {
            image: format!("sha256:{}", "ef".repeat(32)),
            format: "squashfs".into(),
            verity: crate::launch::Verity { data_blocks: 1, hash_start_block: 1, root: "ab".repeat(32), salt: String::new() },
        });
        let p = Policy::parse(&Policy::admitting(&r).to_toml()).unwrap();
        assert_eq!(p.allow[0].image_sha256, vec!["ef".repeat(32)]);
        assert_eq!(p.check(&r), Ok(()));
        let mut other = r.clone();
        other.rootfs.as_mut().unwrap().image = format!("sha256:{}", "01".repeat(32));
        assert!(p.check(&other).unwrap_err().starts_with("image sha256:0101"));
        let mut root = r.clone();
        root.rootfs.as_mut().unwrap().verity.root = "02".repeat(32);
        assert!(p.check(&root).unwrap_err().starts_with("image root verity 0202"));
        let mut none = r.clone();
        none.rootfs = None;
        assert!(p.check(&none).unwrap_err().starts_with("image sha256:none"), "an image rule does not admit a zone without one");
        // Without the fields, any image (the cmdline digest still binds it).
        let mut open = p.clone();
        open.allow[0].image_sha256.clear();
        open.allow[0].rootfs_verity.clear();
        assert_eq!(open.check(&other), Ok(()));
        assert!(!open.to_toml().contains("image_sha256"));
        let bad = "version = 1\n[[allow]]\nname = \"a\"\nkernel_sha256 = [\"".to_owned()
            + &"a".repeat(64)
            + "\"]\ninitrd_sha256 = [\"none\"]\ncmdline_sha256 = [\""
            + &"a".repeat(64)
            + "\"]\nimage_sha256 = [\"nope\"]\n";
        assert!(Policy::parse(&bad).unwrap_err().to_string().contains("image_sha256"));
    }

    #[test]
    fn networked_zones_match_whichever_address_they_got_and_network_bounds_it() {
        let line = |net: &str| format!("console=ttyS0 {net} virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 -- /bin/sh");
        let mut a = record("web-1");
        a.cmdline = line("zone.net=10.213.0.1/31,10.213.0.0");
        a.cmdline_sha256 = sha256_hex(a.cmdline.as_bytes());
        let p = Policy::parse(&Policy::admitting(&a).to_toml()).unwrap();
        assert_eq!(p.allow[0].cmdline_sha256, vec![sha256_hex(line("zone.net=").as_bytes())], "the digest zonectl measure --net prints");
        assert_eq!(p.check(&a), Ok(()));
        let mut b = a.clone();
        b.cmdline = line("zone.net=10.213.0.9/31,10.213.0.8,10.213.0.8");
        b.cmdline_sha256 = sha256_hex(b.cmdline.as_bytes());
        assert_eq!(p.check(&b), Ok(()), "another link of the pool");
        let mut other = a.clone();
        other.cmdline = line("zone.net=10.213.0.1/31,10.213.0.0 init=/bin/sh");
        other.cmdline_sha256 = sha256_hex(other.cmdline.as_bytes());
        assert!(p.check(&other).unwrap_err().contains("with its zone.net= addresses elided"));

        let mut bounded = p.clone();
        bounded.allow[0].network = vec!["10.213.0.0/29".into()];
        let bounded = Policy::parse(&bounded.to_toml()).unwrap();
        assert_eq!(bounded.check(&a), Ok(()));
        assert_eq!(
            bounded.check(&b).unwrap_err(),
            "zone \"web-1\" has address 10.213.0.9/31 (gateway 10.213.0.8), which no policy rule's network allows"
        );
        // The gateway and the prefix are bound too: no wider link, no gateway outside.
        for link in ["zone.net=10.213.0.1/24,10.213.0.2", "zone.net=10.213.0.1/8,10.99.0.1"] {
            let mut wide = a.clone();
            wide.cmdline = line(link);
            wide.cmdline_sha256 = sha256_hex(wide.cmdline.as_bytes());
            assert!(bounded.check(&wide).unwrap_err().contains("which no policy rule's network allows"), "{link}");
        }
        let mut none = bounded.clone();
        none.allow[0].network = vec!["none".into()];
        assert!(none.check(&a).unwrap_err().contains("has address 10.213.0.1"));
        let plain = record("web-1");
        let mut plain_policy = Policy::admitting(&plain);
        plain_policy.allow[0].network = vec!["none".into()];
        assert_eq!(plain_policy.check(&plain), Ok(()));
        plain_policy.allow[0].network = vec!["0.0.0.0/0".into()];
        assert!(plain_policy.check(&plain).unwrap_err().contains("has no network interface"));
        // An unusable value is not elided: the digest binds it, and no network admits it.
        let mut unusable = a.clone();
        unusable.cmdline = line("zone.net=10.213.0.1/31");
        unusable.cmdline_sha256 = sha256_hex(unusable.cmdline.as_bytes());
        assert!(p.check(&unusable).unwrap_err().starts_with("cmdline sha256:"));
        let mut up = Policy::admitting(&unusable);
        assert_eq!(up.allow[0].cmdline_sha256, vec![unusable.cmdline_sha256.clone()]);
        up.allow[0].network = vec!["0.0.0.0/0".into()];
        assert!(up.check(&unusable).unwrap_err().contains("unusable zone.net= parameter"));
        for bad in ["10.213.0.0", "10.213.0.0/33", "any", "fd5a::/129", "fd5a::"] {
            let mut q = p.clone();
            q.allow[0].network = vec![bad.into()];
            assert!(Policy::parse(&q.to_toml()).unwrap_err().to_string().contains("network entry"), "{bad}");
        }
    }

    #[test]
    fn an_ipv6_link_must_lie_in_an_ipv6_network_of_the_rule() {
        let line = |net: &str| format!("console=ttyS0 {net} -- /bin/sh");
        let mut a = record("web-1");
        a.cmdline = line("zone.net=10.213.0.1/31,10.213.0.0,fd5a::1/127,fd5a::");
        a.cmdline_sha256 = sha256_hex(a.cmdline.as_bytes());
        let mut p = Policy::admitting(&a);
        assert_eq!(p.allow[0].cmdline_sha256, vec![sha256_hex(line("zone.net=").as_bytes())], "the same digest as without IPv6");
        assert_eq!(p.check(&a), Ok(()), "no network bound: any");
        // An IPv4-only bound does not admit a zone that also has IPv6.
        p.allow[0].network = vec!["10.213.0.0/16".into()];
        let p4 = Policy::parse(&p.to_toml()).unwrap();
        assert_eq!(
            p4.check(&a).unwrap_err(),
            "zone \"web-1\" has address 10.213.0.1/31 (gateway 10.213.0.0) and address fd5a::1/127 (gateway fd5a::), which no policy rule's network allows"
        );
        p.allow[0].network = vec!["10.213.0.0/16".into(), "fd5a::/64".into()];
        let both = Policy::parse(&p.to_toml()).unwrap();
        assert_eq!(both.check(&a), Ok(()));
        // An IPv6 network alone does not admit the IPv4 link; another IPv6 network does not admit this one.
        for nets in [vec!["fd5a::/64"], vec!["10.213.0.0/16", "fd5b::/64"], vec!["10.213.0.0/16", "fd5a::/128"]] {
            p.allow[0].network = nets.iter().map(|n| (*n).to_owned()).collect();
            let q = Policy::parse(&p.to_toml()).unwrap();
            assert!(q.check(&a).unwrap_err().contains("which no policy rule's network allows"), "{nets:?}");
        }
        // A zone without IPv6 still passes a rule that lists an IPv6 network.
        let mut v4 = a.clone();
        v4.cmdline = line("zone.net=10.213.0.1/31,10.213.0.0");
        v4.cmdline_sha256 = sha256_hex(v4.cmdline.as_bytes());
        assert_eq!(both.check(&v4), Ok(()));
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(matches!(Policy::parse("version = 2"), Err(PolicyError::Version(2))));
        assert!(matches!(Policy::parse("version = 1\nx = 1"), Err(PolicyError::Parse(_))));
        let bad = "version = 1\n[[allow]]\nname = \"a\"\nkernel_sha256 = [\"zz\"]\ninitrd_sha256 = [\"none\"]\ncmdline_sha256 = []\n";
        assert!(matches!(Policy::parse(bad), Err(PolicyError::Rule { index: 0, .. })));
        assert_eq!(Policy::parse("version = 1").unwrap().allow.len(), 0);
    }
}
