//! The boot contract between the host and `zone-guest`: how the zone's
//! command travels on the kernel command line, the markers zone-guest prints
//! on the console, and the port it powers the zone off through.
//!
//! The host (daemon, `zonectl run`) encodes the command with
//! [`encode_command`]; zone-guest reads `/proc/cmdline` back with
//! [`parse_cmdline`]. Both live here so the two sides cannot drift: a
//! round-trip test holds them together.
//!
//! | item | value |
//! |---|---|
//! | zone command | the words after the first ` -- ` of the kernel command line; arguments with whitespace (or empty) in double quotes |
//! | [`ONESHOT_PARAM`] | `zone.oneshot` before ` -- `: power off right after readiness when there is no command |
//! | [`ROOT_PARAM`] | `zone.root=<fstype>`: run the command in the image root on [`ROOT_DEVICE`] (the verity device the kernel set up), under a tmpfs overlay |
//! | [`ENV_PARAM`], [`WORKDIR_PARAM`], [`USER_PARAM`] | the image's process: `zone.env=NAME=value` (one per variable, in order), `zone.workdir=/dir`, `zone.user=name[:group]` or `uid[:gid]` |
//! | [`READY_MARKER`] | `ZONE-GUEST-READY uptime_ms=<ms>` on the console once userspace is up |
//! | [`EXIT_MARKER`] | `ZONE-GUEST-EXIT status=<0..=255>` before power-off |
//! | [`POWER_PORT`] | I/O port 0x501: one byte written = power off with that status |
//! | host channel | vsock host port [`crate::channel::HOST_CHANNEL_PORT`] |

/// Printed on the console once the zone's userspace is up:
/// `ZONE-GUEST-READY uptime_ms=<ms since boot>`.
pub const READY_MARKER: &str = "ZONE-GUEST-READY";
/// Printed before power-off: `ZONE-GUEST-EXIT status=<0..=255>`.
pub const EXIT_MARKER: &str = "ZONE-GUEST-EXIT";
/// Kernel parameter that makes a zone without a command power off right
/// after it is ready (instead of staying up).
pub const ONESHOT_PARAM: &str = "zone.oneshot";
/// The zone power port: a byte written there powers the zone off with that
/// status (QEMU's `isa-debug-exit` port, so images also power off under QEMU).
pub const POWER_PORT: u16 = 0x501;
/// The word that separates the kernel's parameters from the zone's command.
pub const COMMAND_SEPARATOR: &str = "--";
/// Kernel parameter: the zone's command runs in the image root (value: its file system type).
pub const ROOT_PARAM: &str = "zone.root";
/// Kernel parameter, repeated: one `NAME=value` of the image's environment.
pub const ENV_PARAM: &str = "zone.env";
/// Kernel parameter: the image's working directory.
pub const WORKDIR_PARAM: &str = "zone.workdir";
/// Kernel parameter: the image's user.
pub const USER_PARAM: &str = "zone.user";
/// The image root's device in the zone (dm-verity over the root disk).
pub const ROOT_DEVICE: &str = "/dev/dm-0";
/// Kernel parameter with the zone's network interface (`eth0`):
/// `zone.net=<address>/<prefix>,<gateway>[,<nameserver>…][,<address6>/<prefix6>,<gateway6>]`:
/// IPv4, IPv4 nameservers, and an IPv6 link when the daemon has one. Written by
/// the daemon from the addresses it assigned, so it is part of the measured
/// command line; zone-guest configures the interface from it.
pub const NET_PARAM: &str = "zone.net";
/// Most nameservers `zone.net=` may name (`/etc/resolv.conf` reads three).
pub const MAX_NAMESERVERS: usize = 3;

/// Parses a published port, `[HOST_ADDRESS:]HOST_PORT:ZONE_PORT` (IPv4; the
/// host address defaults to 0.0.0.0): (host address, host port, zone port).
pub fn parse_publish(s: &str) -> Result<(std::net::Ipv4Addr, u16, u16), String> {
    let bad = || format!("--publish {s:?}: use [HOST_ADDRESS:]HOST_PORT:ZONE_PORT, ports 1-65535, an IPv4 host address");
    let parts: Vec<&str> = s.split(':').collect();
    let (addr, host_port, zone_port) = match parts.as_slice() {
        [h, z] => (std::net::Ipv4Addr::UNSPECIFIED, *h, *z),
        [a, h, z] => (a.parse().map_err(|_| bad())?, *h, *z),
        _ => return Err(bad()),
    };
    let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad);
    Ok((addr, port(host_port)?, port(zone_port)?))
}

/// The zone's network interface as the kernel command line gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetParams {
    /// The zone's address.
    pub address: std::net::Ipv4Addr,
    /// Its prefix length (1..=31; a /31 is a point-to-point link to the gateway).
    pub prefix: u8,
    /// The default route's next hop, on the same link.
    pub gateway: std::net::Ipv4Addr,
    /// Nameservers for `/etc/resolv.conf`.
    pub nameservers: Vec<std::net::Ipv4Addr>,
    /// The IPv6 link, if the zone has one.
    pub v6: Option<Net6>,
}

/// The zone's IPv6 link: its address, the prefix and the gateway on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net6 {
    /// The zone's address.
    pub address: std::net::Ipv6Addr,
    /// Its prefix length (1..=127; a /127 is a point-to-point link to the gateway).
    pub prefix: u8,
    /// The default route's next hop, on the same link.
    pub gateway: std::net::Ipv6Addr,
}

impl Net6 {
    /// Parses `<address>/<prefix>` and `<gateway>`: unicast addresses, not
    /// link-local or loopback, on one prefix, different.
    pub fn parse(cidr: &str, gw: &str) -> Result<Self, String> {
        let (addr, prefix) = cidr.split_once('/').ok_or_else(|| format!("{cidr:?} is not address/prefix"))?;
        let unicast = |s: &str, what: &str| {
            let a: std::net::Ipv6Addr = s.parse().map_err(|_| format!("{what} {s:?} is not an IPv6 address"))?;
            if a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_unicast_link_local() {
                return Err(format!("{what} {a} is not a routable unicast IPv6 address"));
            }
            Ok(a)
        };
        let address = unicast(addr, "address")?;
        let prefix: u8 = prefix.parse().ok().filter(|p| (1..=127).contains(p)).ok_or_else(|| format!("IPv6 prefix {prefix:?} is not 1..=127"))?;
        let gateway = unicast(gw, "gateway")?;
        let mask = u128::MAX << (128 - u32::from(prefix));
        if u128::from(address) & mask != u128::from(gateway) & mask || address == gateway {
            return Err(format!("gateway {gateway} is not another address on {address}/{prefix}"));
        }
        Ok(Self { address, prefix, gateway })
    }
}

impl NetParams {
    /// The `zone.net=` parameter.
    pub fn param(&self) -> String {
        let mut v = format!("{NET_PARAM}={}/{},{}", self.address, self.prefix, self.gateway);
        for n in &self.nameservers {
            v.push_str(&format!(",{n}"));
        }
        if let Some(n) = &self.v6 {
            v.push_str(&format!(",{}/{},{}", n.address, n.prefix, n.gateway));
        }
        v
    }

    /// Parses the value of `zone.net=`.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut parts = value.split(',');
        let cidr = parts.next().unwrap_or_default();
        let (addr, prefix) = cidr.split_once('/').ok_or_else(|| format!("{cidr:?} is not address/prefix"))?;
        let address: std::net::Ipv4Addr = addr.parse().map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().ok().filter(|p| (1..=31).contains(p)).ok_or_else(|| format!("prefix {prefix:?} is not 1..=31"))?;
        let gw = parts.next().ok_or("no gateway")?;
        let gateway: std::net::Ipv4Addr = gw.parse().map_err(|_| format!("gateway {gw:?} is not an IPv4 address"))?;
        let mask = u32::MAX << (32 - u32::from(prefix));
        if u32::from(address) & mask != u32::from(gateway) & mask || address == gateway {
            return Err(format!("gateway {gateway} is not another address on {address}/{prefix}"));
        }
        let rest: Vec<&str> = parts.collect();
        // The IPv6 link, if any, is the last two entries; its address is the only later entry with a prefix.
        let (names, v6) = match rest.iter().position(|p| p.contains('/')) {
            Some(i) if i + 2 == rest.len() => (&rest[..i], Some(Net6::parse(rest[i], rest[i + 1])?)),
            Some(_) => return Err("the IPv6 link must be the last two entries: address6/prefix6,gateway6".into()),
            None => (&rest[..], None),
        };
        let nameservers = names
            .iter()
            .map(|n| n.parse().map_err(|_| format!("nameserver {n:?} is not an IPv4 address")))
            .collect::<Result<Vec<_>, _>>()?;
        if nameservers.len() > MAX_NAMESERVERS {
            return Err(format!("{} nameservers; at most {MAX_NAMESERVERS}", nameservers.len()));
        }
        Ok(Self { address, prefix, gateway, nameservers, v6 })
    }

    /// The netmask of the prefix.
    pub fn netmask(&self) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::from(u32::MAX << (32 - u32::from(self.prefix)))
    }
}

/// How an image zone's command runs: in which root, with what environment,
/// directory and user.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImageProcess {
    /// The root's file system type (`squashfs`).
    pub fstype: String,
    /// `NAME=value` entries, in order.
    pub env: Vec<String>,
    /// Working directory (absolute; empty: `/`).
    pub workdir: String,
    /// User (`name`, `uid`, `name:group`, `uid:gid`; empty: root).
    pub user: String,
}

/// The kernel parameters of `process` (before ` -- `).
pub fn encode_image_params(process: &ImageProcess) -> Result<String, CommandError> {
    let word = |param: &str, value: &str| -> Result<String, CommandError> {
        if value.contains('"') || value.chars().any(char::is_control) {
            return Err(CommandError::Unencodable(value.to_owned()));
        }
        Ok(if value.is_empty() || value.contains(char::is_whitespace) {
            format!("{param}=\"{value}\"")
        } else {
            format!("{param}={value}")
        })
    };
    let mut out = vec![word(ROOT_PARAM, &process.fstype)?];
    for e in &process.env {
        out.push(word(ENV_PARAM, e)?);
    }
    if !process.workdir.is_empty() {
        out.push(word(WORKDIR_PARAM, &process.workdir)?);
    }
    if !process.user.is_empty() {
        out.push(word(USER_PARAM, &process.user)?);
    }
    Ok(out.join(" "))
}

/// A zone command that the kernel command line cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// An argument holds a double quote or a control character.
    #[error(
        "the zone command argument {0:?} contains a double quote or control character, which the kernel command line \
         cannot carry"
    )]
    Unencodable(String),
}

/// `cmdline` followed by ` -- ` and the zone's command, arguments with
/// whitespace (or empty ones) in double quotes. No command: `cmdline` as is.
pub fn encode_command(cmdline: &str, command: &[String]) -> Result<String, CommandError> {
    if command.is_empty() {
        return Ok(cmdline.to_owned());
    }
    let mut out = format!("{cmdline} {COMMAND_SEPARATOR}");
    for arg in command {
        if arg.contains('"') || arg.chars().any(char::is_control) {
            return Err(CommandError::Unencodable(arg.clone()));
        }
        out.push(' ');
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            out.push('"');
            out.push_str(arg);
            out.push('"');
        } else {
            out.push_str(arg);
        }
    }
    Ok(out)
}

/// What the kernel command line asks of zone-guest.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BootRequest {
    /// The zone's command and its arguments (empty: none).
    pub command: Vec<String>,
    /// Power off after readiness when there is no command.
    pub oneshot: bool,
    /// The image root the command runs in, if any.
    pub image: Option<ImageProcess>,
    /// The network interface (`zone.net=`), or why its parameter is unusable.
    pub net: Option<Result<NetParams, String>>,
}

/// Splits a kernel command line into words the way the kernel does: on
/// whitespace, with double quotes grouping (and removed).
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Parses `/proc/cmdline` (or any full kernel command line).
pub fn parse_cmdline(line: &str) -> BootRequest {
    let words = split_words(line);
    let (kernel, command) = match words.iter().position(|w| w == COMMAND_SEPARATOR) {
        Some(i) => (&words[..i], words[i + 1..].to_vec()),
        None => (&words[..], Vec::new()),
    };
    let mut image: Option<ImageProcess> = None;
    let value = |w: &str, p: &str| w.strip_prefix(p).and_then(|r| r.strip_prefix('=')).map(str::to_owned);
    for w in kernel {
        if let Some(v) = value(w, ROOT_PARAM) {
            image.get_or_insert_with(ImageProcess::default).fstype = v;
        }
    }
    if let Some(img) = image.as_mut() {
        for w in kernel {
            if let Some(v) = value(w, ENV_PARAM) {
                img.env.push(v);
            } else if let Some(v) = value(w, WORKDIR_PARAM) {
                img.workdir = v;
            } else if let Some(v) = value(w, USER_PARAM) {
                img.user = v;
            }
        }
    }
    let net = kernel.iter().rev().find_map(|w| value(w, NET_PARAM)).map(|v| NetParams::parse(&v));
    BootRequest { command, oneshot: kernel.iter().any(|w| w == ONESHOT_PARAM), image, net }
}

/// The command line with the value of every `zone.net=` word before the
/// command elided (each becomes `zone.net=`): the line as a policy names it,
/// the same whichever link the daemon's pool assigned. Everything else, the
/// number of devices and that the zone has a network interface included,
/// stays. Only what the kernel and zone-guest read alike is elided: a line of
/// printable ASCII (what the VMM boots), an unquoted word delimited by spaces
/// whose value [`NetParams::parse`] accepts. So two lines map to the same
/// result only if they differ in nothing but usable `zone.net=` values; a
/// line without one is returned unchanged.
pub fn without_net_addresses(line: &str) -> std::borrow::Cow<'_, str> {
    let prefix = format!("{NET_PARAM}=");
    if !line.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut chars = line.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        // One word, as split_words (and the kernel) delimit it.
        let (mut end, mut quoted, mut has_quote) = (start, false, false);
        while let Some(&(i, c)) = chars.peek() {
            if c.is_whitespace() && !quoted {
                break;
            }
            if c == '"' {
                quoted = !quoted;
                has_quote = true;
            }
            end = i + c.len_utf8();
            chars.next();
        }
        let word = &line[start..end];
        if word.replace('"', "") == COMMAND_SEPARATOR {
            break;
        }
        if !has_quote && word.strip_prefix(prefix.as_str()).is_some_and(|v| NetParams::parse(v).is_ok()) {
            let o = out.get_or_insert_with(|| String::with_capacity(line.len()));
            o.push_str(&line[copied..start + prefix.len()]);
            copied = end;
        }
    }
    match out {
        Some(mut o) => {
            o.push_str(&line[copied..]);
            std::borrow::Cow::Owned(o)
        }
        None => std::borrow::Cow::Borrowed(line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_parameters_round_trip_and_bad_ones_say_why() {
        let n = NetParams {
            address: "10.213.0.3".parse().unwrap(),
            prefix: 31,
            gateway: "10.213.0.2".parse().unwrap(),
            nameservers: vec!["10.213.0.2".parse().unwrap()],
            v6: None,
        };
        assert_eq!(n.param(), "zone.net=10.213.0.3/31,10.213.0.2,10.213.0.2");
        let r = parse_cmdline(&format!("console=ttyS0 {} -- /bin/sh", n.param()));
        assert_eq!(r.net, Some(Ok(n.clone())));
        assert_eq!(n.netmask(), std::net::Ipv4Addr::new(255, 255, 255, 254));
        assert_eq!(parse_cmdline("a -- zone.net=10.0.0.1/24,10.0.0.2").net, None, "after -- it is the command's");
        for bad in ["10.0.0.1", "10.0.0.1/32,10.0.0.2", "10.0.0.1/24", "10.0.0.1/24,10.0.1.1", "10.0.0.1/24,10.0.0.1", "x/24,10.0.0.2", "10.0.0.1/24,10.0.0.2,y"] {
            assert!(NetParams::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_ipv6_link_follows_the_nameservers_and_bad_ones_say_why() {
        let mut n = NetParams::parse("10.213.0.3/31,10.213.0.2,10.213.0.2").unwrap();
        n.v6 = Some(Net6::parse("fd5a::3/127", "fd5a::2").unwrap());
        assert_eq!(n.param(), "zone.net=10.213.0.3/31,10.213.0.2,10.213.0.2,fd5a::3/127,fd5a::2");
        assert_eq!(NetParams::parse(n.param().strip_prefix("zone.net=").unwrap()), Ok(n.clone()));
        let no_ns = NetParams::parse("10.213.0.3/31,10.213.0.2,fd5a::3/127,fd5a::2").unwrap();
        assert_eq!((no_ns.nameservers.len(), no_ns.v6.map(|v| v.prefix)), (0, Some(127)));
        for (bad, why) in [
            ("10.0.0.1/24,10.0.0.2,fd5a::3/127", "last two entries"),
            ("10.0.0.1/24,10.0.0.2,fd5a::3/127,fd5a::2,10.0.0.2", "last two entries"),
            ("10.0.0.1/24,10.0.0.2,fd5a::3/128,fd5a::2", "not 1..=127"),
            ("10.0.0.1/24,10.0.0.2,fd5a::3/127,fd5a::4", "not another address"),
            ("10.0.0.1/24,10.0.0.2,fd5a::3/127,fd5a::3", "not another address"),
            ("10.0.0.1/24,10.0.0.2,fe80::3/127,fe80::2", "not a routable"),
            ("10.0.0.1/24,10.0.0.2,ff02::3/127,ff02::2", "not a routable"),
            ("10.0.0.1/24,10.0.0.2,10.0.0.5/127,fd5a::2", "not an IPv6 address"),
            ("10.0.0.1/24,10.0.0.2,fd5a::3/127,x", "not an IPv6 address"),
            ("10.0.0.1/24,10.0.0.2,fd5a::2,fd5a::3/127,fd5a::2", "not an IPv4 address"),
        ] {
            let e = NetParams::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let a = "console=ttyS0 zone.net=10.213.0.1/31,10.213.0.0,fd5a::1/127,fd5a:: -- /bin/sh";
        assert_eq!(without_net_addresses(a), "console=ttyS0 zone.net= -- /bin/sh", "the IPv6 link is elided with the rest");
    }

    #[test]
    fn network_values_are_elided_only_where_the_kernel_reads_them() {
        let a = "console=ttyS0 zone.net=10.213.0.1/31,10.213.0.0 virtio_mmio.device=4K@0xd0000000:5 -- /bin/sh zone.net=x";
        let b = "console=ttyS0 zone.net=10.213.0.7/31,10.213.0.6,1.1.1.1 virtio_mmio.device=4K@0xd0000000:5 -- /bin/sh zone.net=x";
        let want = "console=ttyS0 zone.net= virtio_mmio.device=4K@0xd0000000:5 -- /bin/sh zone.net=x";
        assert_eq!(without_net_addresses(a), want);
        assert_eq!(without_net_addresses(b), want);
        assert_eq!(without_net_addresses(want), want, "already elided");
        assert!(matches!(without_net_addresses("console=ttyS0 -- zone.net=1"), std::borrow::Cow::Borrowed(_)));
        // A quoted word is not elided (the digest binds it as it is), nor is
        // one inside another parameter's quotes, nor one after a quoted `--`.
        // Kept: a quoted word (the digest binds it as it is), one inside
        // another parameter's quotes, one after a quoted `--`, a value zone-guest
        // cannot use, and any line the VMM would not boot (the kernel's idea of
        // whitespace differs from Rust's outside printable ASCII).
        let n = "zone.net=10.0.0.1/24,10.0.0.2";
        for kept in [
            format!("a \"{n}\""),
            format!("a x=\"b {n}\""),
            format!("a \"--\" {n}"),
            "zone.netx=10.0.0.1/24,10.0.0.2".into(),
            format!("x{n}"),
            "a zone.net=banana".into(),
            "a zone.net=10.0.0.1/24".into(),
            format!("a {n}\u{a0}init=/bin/sh"),
            format!("a {n}\tinit=/bin/sh"),
            format!("à {n}"),
        ] {
            assert_eq!(without_net_addresses(&kept), kept);
        }
        assert_eq!(without_net_addresses(&format!("{n} x {n}")), "zone.net= x zone.net=");
    }

    #[test]
    fn command_follows_double_dash() {
        let r = parse_cmdline("console=ttyS0 reboot=k -- /bin/sh -c \"echo hi there\"\n");
        assert_eq!(r.command, vec!["/bin/sh", "-c", "echo hi there"]);
        assert!(!r.oneshot);
        let r = parse_cmdline("console=ttyS0 zone.oneshot");
        assert!(r.command.is_empty());
        assert!(r.oneshot);
        // zone.oneshot after `--` is an argument of the command, not a flag.
        let r = parse_cmdline("a -- echo zone.oneshot");
        assert!(!r.oneshot);
        assert_eq!(r.command, vec!["echo", "zone.oneshot"]);
    }

    #[test]
    fn image_params_round_trip() {
        let p = ImageProcess {
            fstype: "squashfs".into(),
            env: vec!["PATH=/usr/bin:/bin".into(), "GREETING=hello there".into(), "EMPTY=".into()],
            workdir: "/app".into(),
            user: "app:app".into(),
        };
        let params = encode_image_params(&p).unwrap();
        let line = encode_command(&format!("console=ttyS0 {params}"), &["/bin/sh".into(), "-c".into(), "zone.env=X=y".into()]).unwrap();
        let r = parse_cmdline(&line);
        assert_eq!(r.image, Some(p));
        assert_eq!(r.command, vec!["/bin/sh", "-c", "zone.env=X=y"], "parameters after -- belong to the command");
        assert_eq!(parse_cmdline("console=ttyS0 zone.env=A=b -- x").image, None, "no zone.root: no image");
        let bad = ImageProcess { fstype: "squashfs".into(), env: vec!["A=\"q\"".into()], ..Default::default() };
        assert!(encode_image_params(&bad).is_err());
    }

    #[test]
    fn empty_quoted_argument_survives() {
        assert_eq!(split_words("a \"\" b"), vec!["a", "", "b"]);
    }

    #[test]
    fn encoding_quotes_what_needs_it() {
        let c = encode_command("console=ttyS0", &["/bin/sh".into(), "-c".into(), "echo hi".into()]).unwrap();
        assert_eq!(c, "console=ttyS0 -- /bin/sh -c \"echo hi\"");
        assert_eq!(encode_command("x", &[]).unwrap(), "x");
        assert_eq!(encode_command("x", &["a\"b".into()]), Err(CommandError::Unencodable("a\"b".into())));
        assert!(encode_command("x", &["a\nb".into()]).is_err());
    }

    /// What the host encodes is what zone-guest runs, for awkward arguments too.
    #[test]
    fn encode_then_parse_round_trips() {
        let cases: Vec<Vec<String>> = vec![
            vec!["/bin/true".into()],
            vec!["/bin/sh".into(), "-c".into(), "echo hi; exit 3".into()],
            vec!["x".into(), String::new(), "  two  spaces ".into(), "--".into(), "zone.oneshot".into()],
            vec!["ünï".into(), "a=b".into(), "'single'".into()],
        ];
        for command in cases {
            for base in ["console=ttyS0 reboot=k panic=-1", "", "q \"quoted -- param\""] {
                let line = encode_command(base, &command).unwrap();
                let parsed = parse_cmdline(&line);
                assert_eq!(parsed.command, command, "{line}");
                assert!(!parsed.oneshot);
            }
        }
    }
}
