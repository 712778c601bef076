//! The daemon's TOML configuration file.
//!
//! ```toml
//! state_dir = "/var/lib/zone-attestor"        # zone records, consoles, sockets
//! socket = "/run/zone-attestor/control.sock"  # the gRPC control socket
//! socket_group = "zoneadm"                    # optional: this group may use the socket too
//!
//! [defaults]                                  # used when a launch leaves a field empty
//! kernel = "/var/cache/zone-attestor/payload/opt/zone/kernel/vmlinux"
//! initrd = "/var/cache/zone-attestor/payload/opt/zone/images/base.cpio"
//! cmdline = "console=ttyS0 reboot=k panic=-1 quiet"
//! vcpus = 1
//! memory_mib = 128
//!
//! [limits]
//! max_zones = 64
//! max_vcpus = 8                               # per zone
//! max_memory_mib = 4096                       # per zone
//! max_total_memory_mib = 16384                # all zones of this host
//! artifact_cache_mib = 512                    # sealed kernels/initramfs kept by file identity (0: off)
//! max_scratch_mib = 4096                      # per zone: its writable scratch disk (zonectl launch --scratch-mib)
//!
//! [tpm]
//! device = "/dev/tpmrm0"      # used when it exists; else the embedded swtpm
//! pcr = 15                    # the zone PCR (8-15: not resettable at locality 0)
//! swtpm_port = 2321           # embedded swtpm on 127.0.0.1 (control: port + 1)
//! max_batch = 256             # evidence requests sharing one quote (1: no batching)
//! ek_chain_path = "/etc/zone-attestor/ek-chain.pem"  # optional: CA certificates from the EK certificate up to its
//!                             # manufacturer root, sent to verifiers with the keys (embedded swtpm: automatic)
//!
//! [jail]                      # see crate::jail
//! first_uid = 3000000         # VMMs run as first_uid + slot, one uid/gid per zone
//! cgroup = "auto"             # v2 if it has memory+pids+cpu, else v1
//! memory_overhead_mib = 64    # memory.max = guest memory + this
//! seccomp = "kill"            # or "log" (debugging filters only)
//!
//! [network]                   # optional: zones launched with --net (see crate::network)
//! pool = "10.213.0.0/16"      # routed /31s: the host side of link k is .2k, the zone .2k+1
//! pool6 = "fd5a:0:0:1::/64"   # optional: link k also gets the k-th /127 of this IPv6 pool
//! nameservers = ["10.213.0.0"]  # written to the zones' /etc/resolv.conf (at most 3)
//! mtu = 1500
//! nat = "eth0"                # optional: zones reach beyond the host through eth0, masqueraded
//! host_ports = ["udp/53"]     # host services zones may connect to (default: none)
//! [[network.allow]]           # optional, repeatable: zone-to-zone connections (default: none)
//! from = "web"                # the zone that connects, by name
//! to = "db"
//! ports = ["tcp/5432"]        # optional: only these ports of `to`
//! [network.limits]            # optional, per zone and direction (the zone's VMM enforces them)
//! tx_mbit = 100               # what a zone may send; also rx_mbit, tx_pps, rx_pps
//!
//! [cni]                       # or (not both): zones on a CNI network (see crate::cni, crate::sandbox)
//! conflist = "/etc/cni/net.d/10-zones.conflist"  # a network configuration list
//! bin_dir = "/usr/lib/cni"    # its plugins (Debian containernetworking-plugins)
//! nameservers = []            # when the plugins' result names none
//! [cni.limits]                # as [network.limits]
//! ```
//!
//! `host_id` (top level, default: the host name) names this host in launch
//! records, SPIFFE IDs and selectors.

use std::path::{Path, PathBuf};

use host_attest::TpmSettings;
use serde::{Deserialize, Serialize};

use crate::jail::JailConfig;

/// Where the config lives unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/zone-attestor/hypervisor-agent.toml";
/// Default control socket.
pub const DEFAULT_SOCKET: &str = attestation_proto::DEFAULT_CONTROL_SOCKET;

/// Why the config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// Unreadable file.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML for this schema.
    #[error("invalid config file {path}: {detail}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A value is out of range.
    #[error("invalid config value: {0}")]
    Value(String),
}

/// Defaults for launches.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// Kernel path.
    pub kernel: Option<PathBuf>,
    /// Initramfs path.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// vCPUs.
    pub vcpus: u8,
    /// Memory (MiB).
    pub memory_mib: u64,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            kernel: None,
            initrd: None,
            cmdline: zone_vmm::boot::cmdline::DEFAULT_ZONE_CMDLINE.into(),
            vcpus: 1,
            memory_mib: 128,
        }
    }
}

/// Resource limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most zones (in any state but stopped/failed) at once.
    pub max_zones: usize,
    /// Most vCPUs per zone.
    pub max_vcpus: u8,
    /// Most memory per zone (MiB).
    pub max_memory_mib: u64,
    /// Most memory of all live zones together (MiB).
    pub max_total_memory_mib: u64,
    /// Sealed copies of boot artifacts kept for later launches (MiB; 0:
    /// every launch reads and measures its files again).
    pub artifact_cache_mib: u64,
    /// Largest scratch disk of one zone (MiB; 0: no scratch disks).
    pub max_scratch_mib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_zones: 64, max_vcpus: 8, max_memory_mib: 4096, max_total_memory_mib: 16384, artifact_cache_mib: 512, max_scratch_mib: 4096 }
    }
}

/// The host name, or `localhost`.
pub fn default_host_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Zone records, consoles and sockets.
    pub state_dir: PathBuf,
    /// gRPC control socket.
    pub socket: PathBuf,
    /// Group allowed to use the control socket besides root.
    pub socket_group: Option<String>,
    /// Launch defaults.
    pub defaults: Defaults,
    /// Limits.
    pub limits: Limits,
    /// This host's identity in launch records and SPIFFE IDs.
    pub host_id: String,
    /// TPM and evidence.
    pub tpm: TpmSettings,
    /// How zone VMMs are jailed.
    pub jail: JailConfig,
    /// Host services every zone may reach over its vsock (`[[forward]]`).
    #[serde(rename = "forward")]
    pub forwards: Vec<Forward>,
    /// The zone network (`[network]`), if zones may have a network interface.
    pub network: Option<crate::network::NetworkConfig>,
    /// Or a CNI network (`[cni]`) that standard CNI plugins configure.
    pub cni: Option<crate::cni::CniConfig>,
}

/// A host service forwarded into every zone: a guest connection to vsock
/// host port `port` is connected to the TCP address `to` on the host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    /// vsock host port the zone connects to.
    pub port: u32,
    /// Host TCP address, e.g. `127.0.0.1:8081`.
    pub to: std::net::SocketAddr,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            state_dir: "/var/lib/zone-attestor".into(),
            socket: DEFAULT_SOCKET.into(),
            socket_group: None,
            defaults: Defaults::default(),
            limits: Limits::default(),
            host_id: default_host_id(),
            tpm: TpmSettings::default(),
            jail: JailConfig::default(),
            forwards: Vec::new(),
            network: None,
            cni: None,
        }
    }
}

impl DaemonConfig {
    /// Reads and validates `path`. A missing file at the default path means
    /// "all defaults"; a missing explicit path is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigFileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => String::new(),
            Err(source) => return Err(ConfigFileError::Read { path: path.to_owned(), source }),
        };
        let cfg: Self =
            toml::from_str(&text).map_err(|e| ConfigFileError::Parse { path: path.to_owned(), detail: e.to_string() })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Range checks.
    pub fn validate(&self) -> Result<(), ConfigFileError> {
        let l = &self.limits;
        if l.max_zones == 0 || l.max_vcpus == 0 || l.max_memory_mib == 0 || l.max_total_memory_mib == 0 {
            return Err(ConfigFileError::Value("every [limits] value must be at least 1".into()));
        }
        if self.defaults.vcpus == 0 || self.defaults.vcpus > l.max_vcpus {
            return Err(ConfigFileError::Value(format!(
                "defaults.vcpus = {} must be within 1..={} (limits.max_vcpus)",
                self.defaults.vcpus, l.max_vcpus
            )));
        }
        self.tpm.validate().map_err(ConfigFileError::Value)?;
        let valid_id = |s: &str| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid_id(&self.host_id) {
            return Err(ConfigFileError::Value(format!(
                "host_id = {:?}: use 1-64 characters of A-Z, a-z, 0-9, '-', '_' and '.' (it becomes part of SPIFFE IDs)",
                self.host_id
            )));
        }
        if self.defaults.memory_mib > l.max_memory_mib {
            return Err(ConfigFileError::Value("defaults.memory_mib exceeds limits.max_memory_mib".into()));
        }
        if let Some(n) = &self.network {
            n.validate().map_err(|e| ConfigFileError::Value(e.to_string()))?;
        }
        if let Some(c) = &self.cni {
            if self.network.is_some() {
                return Err(ConfigFileError::Value(
                    "[network] and [cni] are two ways to connect zones: configure one of them".into(),
                ));
            }
            if c.nameservers.len() > attestation_proto::zone::MAX_NAMESERVERS {
                return Err(ConfigFileError::Value(format!(
                    "[cni] nameservers: {}; at most {}",
                    c.nameservers.len(),
                    attestation_proto::zone::MAX_NAMESERVERS
                )));
            }
            c.limits.validate("[cni.limits]").map_err(|e| ConfigFileError::Value(e.to_string()))?;
        }
        let mut ports = std::collections::HashSet::new();
        for f in &self.forwards {
            if f.port == 0 || f.port == attestation_proto::channel::HOST_CHANNEL_PORT || !ports.insert(f.port) {
                return Err(ConfigFileError::Value(format!(
                    "[[forward]] port = {}: use a port other than 0 and {} (the host channel), once each",
                    f.port,
                    attestation_proto::channel::HOST_CHANNEL_PORT
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults_and_unknown_keys_are_rejected() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        std::fs::write(&p, "").unwrap();
        assert_eq!(DaemonConfig::load(&p, true).unwrap(), DaemonConfig::default());
        std::fs::write(&p, "state_dirr = '/x'\n").unwrap();
        let e = DaemonConfig::load(&p, true).unwrap_err().to_string();
        assert!(e.contains("state_dirr"), "{e}");
        assert!(DaemonConfig::load(&d.path().join("missing.toml"), true).is_err());
        assert!(DaemonConfig::load(&d.path().join("missing.toml"), false).is_ok());
    }

    #[test]
    fn limits_are_checked() {
        let mut c = DaemonConfig::default();
        c.limits.max_zones = 0;
        assert!(c.validate().is_err());
        let mut c = DaemonConfig::default();
        c.defaults.vcpus = 99;
        assert!(c.validate().unwrap_err().to_string().contains("max_vcpus"));
    }

    #[test]
    fn forwards_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        std::fs::write(&p, "[[forward]]\nport = 8081\nto = \"127.0.0.1:8081\"\n").unwrap();
        assert_eq!(DaemonConfig::load(&p, true).unwrap().forwards[0].port, 8081);
        std::fs::write(&p, "[[forward]]\nport = 1024\nto = \"127.0.0.1:8081\"\n").unwrap();
        assert!(DaemonConfig::load(&p, true).unwrap_err().to_string().contains("host channel"));
        std::fs::write(&p, "[[forward]]\nport = 9\nto = \"not-an-address\"\n").unwrap();
        assert!(DaemonConfig::load(&p, true).is_err());
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_is_valid() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/systemd/hypervisor-agent.toml");
        let c = DaemonConfig::load(&p, true).unwrap();
        assert_eq!(c.limits.max_zones, 64);
        assert!(c.defaults.kernel.is_some());
    }
}
