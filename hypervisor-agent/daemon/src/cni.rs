//! The CNI runtime: the zone network as standard CNI plugins configure it
//! (`[cni]` in the daemon's configuration), for hosts whose networks are
//! already built from CNI (Debian `containernetworking-plugins`, or what a
//! Kubernetes node runs).
//!
//! What this module does is the runtime's half of the CNI specification:
//! it reads a network configuration list (`.conflist`), runs its plugins in
//! order with `CNI_COMMAND=ADD` (each given the previous one's result as
//! `prevResult`) and in reverse order with `DEL` (given the cached result),
//! with the variables `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME` and
//! `CNI_PATH`, and reads the final result: the address, prefix and gateway
//! the zone gets. Where the zone's interface comes from (a TAP in the same
//! namespace, joined to the plugins' interface) is [`crate::sandbox`].
//!
//! Plugins are programs the operator configured; their output is still
//! parsed as untrusted input: bounded in size and time, every field checked.

use std::io::{Read as _, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `[cni]` in the daemon's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CniConfig {
    /// The network configuration list (`cniVersion` 0.3.0 or later).
    pub conflist: PathBuf,
    /// Where the plugins are (`CNI_PATH`).
    #[serde(default = "default_bin_dir")]
    pub bin_dir: PathBuf,
    /// Nameservers for the zones' `/etc/resolv.conf` when the plugins' result names none.
    #[serde(default)]
    pub nameservers: Vec<Ipv4Addr>,
    /// Per zone: what it may send and receive (`[cni.limits]`; absent: unlimited).
    #[serde(default)]
    pub limits: crate::network::Limits,
}

fn default_bin_dir() -> PathBuf {
    PathBuf::from("/usr/lib/cni")
}

/// The interface the plugins create in the zone's namespace.
pub const IFNAME: &str = "eth0";

/// Longest a plugin may run.
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Most bytes of a plugin's output that are read.
const MAX_OUTPUT: u64 = 1 << 20;

/// A CNI network could not be configured or used.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The configuration list cannot be read or is not one.
    #[error("[cni] conflist = {path}: {detail}")]
    Conflist {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A plugin's program is missing.
    #[error("CNI plugin {plugin:?} is not an executable in [cni] bin_dir = {bin_dir} (install containernetworking-plugins, or point bin_dir at the plugins)")]
    Missing {
        /// The plugin's type.
        plugin: String,
        /// Where it was looked for.
        bin_dir: PathBuf,
    },
    /// A plugin could not be run, timed out, or its output is not CNI's.
    #[error("CNI plugin {plugin} ({command}): {detail}")]
    Run {
        /// The plugin's type.
        plugin: String,
        /// ADD or DEL.
        command: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// A plugin reported an error (the CNI error object).
    #[error("CNI plugin {plugin} ({command}) failed: {msg}{details} [CNI error code {code}]")]
    Plugin {
        /// The plugin's type.
        plugin: String,
        /// ADD or DEL.
        command: &'static str,
        /// The error code.
        code: u64,
        /// The message.
        msg: String,
        /// Details, with a leading ": " when any.
        details: String,
    },
    /// The final result gives the zone no usable IPv4 address.
    #[error("the CNI network {network}'s result {detail}; configure its IPAM to give {IFNAME} one IPv4 address with a gateway")]
    Result {
        /// The network's name.
        network: String,
        /// What is missing or wrong.
        detail: String,
    },
}

/// A network configuration list, checked.
#[derive(Debug, Clone)]
pub struct NetworkList {
    /// The network's name.
    pub name: String,
    /// Its `cniVersion`.
    pub cni_version: String,
    /// The plugins' configurations, in order.
    pub plugins: Vec<Map<String, Value>>,
    bin_dir: PathBuf,
}

/// The versions whose results this runtime reads (`ips` with `interface`).
const VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

impl NetworkList {
    /// Reads `config.conflist` and checks that every plugin is in `bin_dir`.
    pub fn load(config: &CniConfig) -> Result<Self, CniError> {
        let bad = |detail: String| CniError::Conflist { path: config.conflist.clone(), detail };
        let text = std::fs::read(&config.conflist).map_err(|e| bad(format!("cannot read it ({e})")))?;
        let list = Self::parse(&text, &config.bin_dir).map_err(bad)?;
        for p in &list.plugins {
            let plugin = plugin_type(p).to_owned();
            let path = list.bin_dir.join(&plugin);
            let executable = std::fs::metadata(&path).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt as _;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            });
            if !executable {
                return Err(CniError::Missing { plugin, bin_dir: list.bin_dir.clone() });
            }
        }
        Ok(list)
    }

    /// Parses a configuration list.
    pub fn parse(text: &[u8], bin_dir: &Path) -> Result<Self, String> {
        let v: Value = serde_json::from_slice(text).map_err(|e| format!("not JSON ({e})"))?;
        let o = v.as_object().ok_or("not a JSON object")?;
        let name = o.get("name").and_then(Value::as_str).ok_or("no \"name\"")?;
        if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(format!("name {name:?}: use 1-64 characters of A-Z, a-z, 0-9, '-', '_' and '.'"));
        }
        let cni_version = o.get("cniVersion").and_then(Value::as_str).ok_or("no \"cniVersion\"")?;
        if !VERSIONS.contains(&cni_version) {
            return Err(format!("cniVersion {cni_version:?} is not one of {}", VERSIONS.join(", ")));
        }
        let plugins = o.get("plugins").and_then(Value::as_array).ok_or("no \"plugins\" list (a single plugin's .conf is not a list: wrap it)")?;
        if plugins.is_empty() || plugins.len() > 16 {
            return Err(format!("{} plugins; use 1 to 16", plugins.len()));
        }
        let plugins = plugins
            .iter()
            .map(|p| {
                let p = p.as_object().ok_or("a plugin that is not a JSON object")?;
                let t = p.get("type").and_then(Value::as_str).ok_or("a plugin without a \"type\"")?;
                if t.is_empty() || t == "." || t == ".." || t.contains('/') {
                    return Err(format!("plugin type {t:?} is not a program name"));
                }
                Ok(p.clone())
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self { name: name.to_owned(), cni_version: cni_version.to_owned(), plugins, bin_dir: bin_dir.to_owned() })
    }

    /// The list as JSON (kept in a zone's record for its DEL).
    pub fn to_value(&self) -> Value {
        serde_json::json!({"cniVersion": self.cni_version, "name": self.name, "plugins": self.plugins})
    }

    /// The plugins' configuration for one call: theirs plus the network's
    /// name and version and, when given, the previous result.
    fn config_for(&self, plugin: &Map<String, Value>, prev: Option<&Value>) -> Vec<u8> {
        let mut c = plugin.clone();
        c.insert("name".into(), Value::String(self.name.clone()));
        c.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
        if let Some(prev) = prev {
            c.insert("prevResult".into(), prev.clone());
        }
        serde_json::to_vec(&Value::Object(c)).unwrap_or_default()
    }

    /// Runs every plugin's ADD for `container_id` in `netns`; the last result.
    /// On an error the plugins already run are not undone: call [`Self::del`].
    pub fn add(&self, container_id: &str, netns: &Path) -> Result<Value, CniError> {
        let mut prev: Option<Value> = None;
        for p in &self.plugins {
            let out = self.exec(p, "ADD", container_id, netns, prev.as_ref())?;
            let result: Value = serde_json::from_slice(&out).map_err(|e| CniError::Run {
                plugin: plugin_type(p).to_owned(),
                command: "ADD",
                detail: format!("its result is not JSON ({e})"),
            })?;
            if !result.is_object() {
                return Err(CniError::Run { plugin: plugin_type(p).to_owned(), command: "ADD", detail: "its result is not a JSON object".into() });
            }
            prev = Some(result);
        }
        prev.ok_or_else(|| CniError::Result { network: self.name.clone(), detail: "is missing".into() })
    }

    /// Runs every plugin's DEL, last first, with the cached result (if any).
    /// Keeps going past a failing plugin; the first error is returned.
    pub fn del(&self, container_id: &str, netns: &Path, prev: Option<&Value>) -> Result<(), CniError> {
        let mut first = None;
        for p in self.plugins.iter().rev() {
            if let Err(e) = self.exec(p, "DEL", container_id, netns, prev) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn exec(&self, plugin: &Map<String, Value>, command: &'static str, container_id: &str, netns: &Path, prev: Option<&Value>) -> Result<Vec<u8>, CniError> {
        let name = plugin_type(plugin);
        let run = |detail: String| CniError::Run { plugin: name.to_owned(), command, detail };
        let started = Instant::now();
        let mut child = Command::new(self.bin_dir.join(name))
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", IFNAME)
            .env("CNI_PATH", &self.bin_dir)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a timeout kills whatever it started too.
            .process_group(0)
            .spawn()
            .map_err(|e| run(format!("cannot run {} ({e})", self.bin_dir.join(name).display())))?;
        let config = self.config_for(plugin, prev);
        let mut stdin = child.stdin.take();
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        // The pipes are served on threads so that a plugin blocking on a
        // full pipe cannot stall the wait, and the wait has a deadline.
        let writer = std::thread::spawn(move || {
            if let Some(s) = stdin.as_mut() {
                let _ = s.write_all(&config);
            }
        });
        // Over channels: a process the plugin left behind may hold a pipe
        // open, and the wait for its output is bounded too.
        let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(p) = pipe {
                    let _ = p.take(MAX_OUTPUT).read_to_end(&mut buf);
                }
                let _ = tx.send(buf);
            });
            rx
        };
        let out = read(stdout.take().map(|p| Box::new(p) as _));
        let err = read(stderr.take().map(|p| Box::new(p) as _));
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if started.elapsed() > PLUGIN_TIMEOUT => {
                    kill_group(&child);
                    let _ = child.wait();
                    return Err(run(format!("did not finish within {} s; killed", PLUGIN_TIMEOUT.as_secs())));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(run(format!("cannot wait for it ({e})"))),
            }
        };
        let grace = PLUGIN_TIMEOUT.saturating_sub(started.elapsed()).max(OUTPUT_GRACE);
        // A pipe still open past the plugin's exit: something it started holds it.
        let collect = |rx: mpsc::Receiver<Vec<u8>>, wait: Duration| {
            rx.recv_timeout(wait).unwrap_or_else(|_| {
                kill_group(&child);
                Vec::new()
            })
        };
        let out = collect(out, grace);
        let err = collect(err, OUTPUT_GRACE);
        drop(writer);
        tracing::debug!(plugin = name, command, ms = started.elapsed().as_millis() as u64, "CNI plugin ran");
        if status.success() {
            return Ok(out);
        }
        // The CNI error object on stdout; else whatever it said.
        let obj: Option<Map<String, Value>> = serde_json::from_slice(&out).ok();
        match obj {
            Some(o) if o.contains_key("msg") || o.contains_key("code") => Err(CniError::Plugin {
                plugin: name.to_owned(),
                command,
                code: o.get("code").and_then(Value::as_u64).unwrap_or(0),
                msg: printable(o.get("msg").and_then(Value::as_str).unwrap_or("(no message)")),
                details: o
                    .get("details")
                    .and_then(Value::as_str)
                    .filter(|d| !d.is_empty())
                    .map(|d| format!(": {}", printable(d)))
                    .unwrap_or_default(),
            }),
            _ => Err(run(format!(
                "exited with {status}: {}",
                printable(String::from_utf8_lossy(if err.is_empty() { &out } else { &err }).trim())
            ))),
        }
    }
}

/// How long a plugin's output may trail its exit.
const OUTPUT_GRACE: Duration = Duration::from_secs(5);

fn kill_group(child: &std::process::Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on the process group the plugin leads (process_group(0)).
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
}

fn plugin_type(p: &Map<String, Value>) -> &str {
    p.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// At most 512 printable characters of a plugin's text, for an error message.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(512).collect()
}

/// What a zone gets from the final result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Its address.
    pub address: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
    /// The default route's next hop.
    pub gateway: Ipv4Addr,
    /// Nameservers (IPv4 only; at most three).
    pub nameservers: Vec<Ipv4Addr>,
}

/// Reads the zone's address from a result: the first IPv4 entry of `ips`
/// on [`IFNAME`] in the sandbox (or on no named interface), with a gateway
/// on its subnet.
pub fn address(network: &str, result: &Value) -> Result<Address, CniError> {
    let bad = |detail: String| CniError::Result { network: network.to_owned(), detail };
    let interfaces = result.get("interfaces").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let ours = |ip: &Value| match ip.get("interface").and_then(Value::as_u64) {
        None => true,
        Some(i) => interfaces.get(i as usize).is_some_and(|ifc| {
            ifc.get("name").and_then(Value::as_str) == Some(IFNAME) && ifc.get("sandbox").and_then(Value::as_str).is_some_and(|s| !s.is_empty())
        }),
    };
    let ips = result.get("ips").and_then(Value::as_array).ok_or_else(|| bad("has no \"ips\"".into()))?;
    let mut seen = Vec::new();
    for ip in ips.iter().filter(|ip| ours(ip)) {
        let Some(cidr) = ip.get("address").and_then(Value::as_str) else { continue };
        let Some((addr, prefix)) = cidr.split_once('/') else { continue };
        let Ok(addr) = addr.parse::<Ipv4Addr>() else { continue };
        let cidr = printable(cidr);
        seen.push(cidr.clone());
        let Ok(prefix) = prefix.parse::<u8>() else {
            return Err(bad(format!("gives {cidr}, whose prefix is not a number")));
        };
        let gateway = ip.get("gateway").and_then(Value::as_str).map(str::parse::<Ipv4Addr>);
        let Some(Ok(gateway)) = gateway else {
            return Err(bad(format!("gives {cidr} no IPv4 gateway")));
        };
        // Built from the parsed numbers: nothing of the plugin's text reaches the command line.
        let param = format!("{addr}/{prefix},{gateway}");
        let p = attestation_proto::zone::NetParams::parse(&param).map_err(|e| bad(format!("gives {cidr} via {gateway}: {e}")))?;
        let nameservers = result
            .get("dns")
            .and_then(|d| d.get("nameservers"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).filter_map(|s| s.parse::<Ipv4Addr>().ok()).take(attestation_proto::zone::MAX_NAMESERVERS).collect())
            .unwrap_or_default();
        return Ok(Address { address: p.address, prefix: p.prefix, gateway: p.gateway, nameservers });
    }
    Err(bad(if seen.is_empty() { format!("has no IPv4 address on {IFNAME}") } else { format!("has no usable IPv4 address ({})", seen.join(", ")) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIST: &str = r#"{"cniVersion":"1.0.0","name":"zones","plugins":[
        {"type":"bridge","bridge":"cni0","isGateway":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.88.0.0/24"}]]}},
        {"type":"tuning"}]}"#;

    #[test]
    fn a_configuration_list_is_read_and_checked() {
        let l = NetworkList::parse(LIST.as_bytes(), Path::new("/usr/lib/cni")).unwrap();
        assert_eq!((l.name.as_str(), l.cni_version.as_str(), l.plugins.len()), ("zones", "1.0.0", 2));
        let c: Value = serde_json::from_slice(&l.config_for(&l.plugins[1], Some(&json!({"ips": []})))).unwrap();
        assert_eq!(c["name"], "zones");
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["type"], "tuning");
        assert_eq!(c["prevResult"], json!({"ips": []}));
        for (bad, says) in [
            ("[]", "not a JSON object"),
            (r#"{"cniVersion":"1.0.0","plugins":[]}"#, "no \"name\""),
            (r#"{"cniVersion":"0.2.0","name":"n","plugins":[{"type":"bridge"}]}"#, "cniVersion \"0.2.0\""),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#, "no \"plugins\" list"),
            (r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#, "0 plugins"),
            (r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../../bin/sh"}]}"#, "not a program name"),
            (r#"{"cniVersion":"1.0.0","name":"a b","plugins":[{"type":"bridge"}]}"#, "name \"a b\""),
        ] {
            let e = NetworkList::parse(bad.as_bytes(), Path::new("/x")).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_plugin_that_is_not_installed_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let conflist = dir.path().join("zones.conflist");
        std::fs::write(&conflist, LIST).unwrap();
        let c = CniConfig { conflist, bin_dir: dir.path().into(), nameservers: vec![], limits: Default::default() };
        let e = NetworkList::load(&c).unwrap_err();
        assert!(e.to_string().contains("CNI plugin \"bridge\" is not an executable in [cni] bin_dir"), "{e}");
        let missing = CniConfig { conflist: dir.path().join("none"), ..c };
        assert!(NetworkList::load(&missing).unwrap_err().to_string().contains("cannot read it"));
    }

    fn result(ips: Value) -> Value {
        json!({"cniVersion":"1.0.0","interfaces":[
            {"name":"cni0","mac":"aa:bb:cc:dd:ee:01"},
            {"name":"veth1","mac":"aa:bb:cc:dd:ee:02"},
            {"name":"eth0","mac":"aa:bb:cc:dd:ee:03","sandbox":"/run/netns/za-web"}],
            "ips": ips, "dns": {"nameservers": ["10.88.0.1", "fd00::1", "x"]}})
    }

    #[test]
    fn the_zones_address_is_read_from_the_result() {
        let r = result(json!([{"interface":0,"address":"10.99.0.1/24","gateway":"10.99.0.254"},
                              {"interface":2,"address":"fd00::5/64","gateway":"fd00::1"},
                              {"interface":2,"address":"10.88.0.5/24","gateway":"10.88.0.1"}]));
        let a = address("zones", &r).unwrap();
        assert_eq!(a, Address { address: Ipv4Addr::new(10, 88, 0, 5), prefix: 24, gateway: Ipv4Addr::new(10, 88, 0, 1), nameservers: vec![Ipv4Addr::new(10, 88, 0, 1)] });
        for (ips, says) in [
            (json!([{"interface":0,"address":"10.99.0.1/24","gateway":"10.99.0.254"}]), "has no IPv4 address on eth0"),
            (json!([{"interface":2,"address":"10.88.0.5/24"}]), "gives 10.88.0.5/24 no IPv4 gateway"),
            (json!([{"interface":2,"address":"10.88.0.5/24","gateway":"10.77.0.1"}]), "is not another address on"),
            (json!([{"interface":2,"address":"10.88.0.5/32","gateway":"10.88.0.1"}]), "not 1..=31"),
            (json!([{"interface":9,"address":"10.88.0.5/24","gateway":"10.88.0.1"}]), "has no IPv4 address"),
        ] {
            let e = address("zones", &result(ips.clone())).unwrap_err().to_string();
            assert!(e.contains(says), "{ips}: {e}");
        }
        assert!(address("zones", &json!({})).unwrap_err().to_string().contains("has no \"ips\""));
    }

    /// A stand-in plugin (a shell script) for the runtime's side of the
    /// protocol; the real plugins run in the test host (`testhost_net`).
    fn plugin(dir: &Path, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt as _;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn plugins_run_in_order_with_the_previous_result_and_errors_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        // `first` answers with a result; `second` echoes what it was given.
        plugin(dir.path(), "first", &format!("echo \"$CNI_COMMAND $CNI_CONTAINERID $CNI_NETNS $CNI_IFNAME\" >> {0}; cat > /dev/null; echo '{{\"ips\":[]}}'", log.display()));
        plugin(dir.path(), "second", &format!("echo \"$CNI_COMMAND second\" >> {0}; cat", log.display()));
        plugin(dir.path(), "broken", "cat > /dev/null; echo '{\"code\":7,\"msg\":\"no IP addresses available\",\"details\":\"range 10.88.0.0/30\"}'; exit 1");
        plugin(dir.path(), "silent", "cat > /dev/null; echo oops >&2; exit 3");
        let list = |types: &[&str]| {
            let plugins: Vec<Value> = types.iter().map(|t| json!({"type": t})).collect();
            NetworkList::parse(json!({"cniVersion":"1.0.0","name":"n","plugins":plugins}).to_string().as_bytes(), dir.path()).unwrap()
        };
        let r = list(&["first", "second"]).add("zone-web", Path::new("/run/netns/za-web")).unwrap();
        // `second` was given first's result as prevResult, and the network's name.
        assert_eq!(r["prevResult"], json!({"ips": []}));
        assert_eq!(r["name"], "n");
        list(&["first", "second"]).del("zone-web", Path::new("/run/netns/za-web"), Some(&r)).unwrap();
        let calls = std::fs::read_to_string(&log).unwrap();
        assert_eq!(calls, "ADD zone-web /run/netns/za-web eth0\nADD second\nDEL second\nDEL zone-web /run/netns/za-web eth0\n");
        let e = list(&["first", "broken"]).add("z", Path::new("/x")).unwrap_err().to_string();
        assert_eq!(e, "CNI plugin broken (ADD) failed: no IP addresses available: range 10.88.0.0/30 [CNI error code 7]");
        let e = list(&["silent"]).add("z", Path::new("/x")).unwrap_err().to_string();
        assert!(e.contains("CNI plugin silent (ADD): exited with exit status: 3: oops"), "{e}");
        // DEL goes on past a failing plugin and reports the first error.
        std::fs::write(&log, "").unwrap();
        let e = list(&["first", "broken"]).del("z", Path::new("/x"), None).unwrap_err().to_string();
        assert!(e.contains("broken (DEL)"), "{e}");
        assert!(std::fs::read_to_string(&log).unwrap().starts_with("DEL z"), "first's DEL ran after broken's failed");
    }
}
