//! The contract between the daemon and a zone's VMM process: which
//! descriptors it is started with, what its launch configuration says, and
//! what the jail looks like from inside.
//!
//! The daemon starts `zone-vmm` with exactly these descriptors and no
//! others (no TPM, no control socket, no event log):
//!
//! | fd | what |
//! |---|---|
//! | 0 | `/dev/null` |
//! | 1, 2 | the zone's `vmm.log` (append) |
//! | [`CONFIG_FD`] | sealed memfd: this [`LaunchConfig`] as JSON |
//! | [`KVM_FD`] | `/dev/kvm` |
//! | [`KERNEL_FD`] | sealed memfd: the measured kernel |
//! | [`INITRD_FD`] | sealed memfd: the measured initramfs (when [`LaunchConfig::initrd`]) |
//! | [`CONSOLE_LOG_FD`] | the zone's `console.log` (append) |
//! | [`OUTCOME_FD`] | the zone's `outcome.json` (written once, when the zone ends) |
//! | [`VSOCK_LISTENER_FD`] | listening socket `U` of the zone's hybrid vsock |
//! | [`CONSOLE_LISTENER_FD`] | listening socket of the zone's console input |
//! | [`FIRST_DISK_FD`] + i | disk i of [`LaunchConfig::disks`] (read-only or read-write, as the disk says) |
//! | [`NET_FD`] | the zone's TAP (when [`LaunchConfig::net`]), opened `IFF_TAP \| IFF_NO_PI \| IFF_VNET_HDR` |
//!
//! A VMM started this way boots only the sealed memfds: there is no path
//! through which it reads a boot artifact from a file.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The launch configuration (sealed memfd, JSON).
pub const CONFIG_FD: RawFd = 3;
/// `/dev/kvm`.
pub const KVM_FD: RawFd = 4;
/// The measured kernel (sealed memfd).
pub const KERNEL_FD: RawFd = 5;
/// The measured initramfs (sealed memfd), if any.
pub const INITRD_FD: RawFd = 6;
/// `console.log`, opened for appending.
pub const CONSOLE_LOG_FD: RawFd = 7;
/// `outcome.json`, opened for writing.
pub const OUTCOME_FD: RawFd = 8;
/// The listening socket `U` of the zone's vsock.
pub const VSOCK_LISTENER_FD: RawFd = 9;
/// The listening socket of the zone's console input.
pub const CONSOLE_LISTENER_FD: RawFd = 10;
/// Disk `i`'s file is on `FIRST_DISK_FD + i`.
pub const FIRST_DISK_FD: RawFd = 11;
/// Most disks a zone may have.
pub const MAX_DISKS: usize = 4;
/// The zone's TAP, when it has a network interface.
pub const NET_FD: RawFd = FIRST_DISK_FD + MAX_DISKS as RawFd;
/// The first descriptor number not in the contract.
pub const FIRST_FREE_FD: RawFd = NET_FD + 1;

/// Inside the jail: the zone's socket directory (read-only), where the
/// daemon's listeners for guest connections (`vsock.sock_<port>`) are.
pub const JAIL_SOCK_DIR: &str = "/sock";
/// Inside the jail: `U`, as the VMM names it to find `U_<port>` beside it.
pub const JAIL_VSOCK_PATH: &str = "/sock/vsock.sock";
/// The name of `U` in the zone's socket directory.
pub const VSOCK_SOCKET: &str = "vsock.sock";
/// The name of the console input socket in the zone's socket directory.
pub const CONSOLE_SOCKET: &str = "console.sock";

/// Largest launch configuration accepted.
pub const MAX_CONFIG_LEN: u64 = 64 * 1024;

/// What to do when a thread makes a system call its filter does not allow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompMode {
    /// End the VMM at once, reporting the call (the default).
    #[default]
    Kill,
    /// Allow it and let the kernel log it (debugging a filter only).
    Log,
}

/// The jail the VMM enters before it reads any guest-controlled byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailSpec {
    /// The empty directory (on the host) that becomes the VMM's root.
    pub root: PathBuf,
    /// The zone's socket directory on the host, seen read-only at [`JAIL_SOCK_DIR`].
    pub sock_dir: PathBuf,
    /// The unprivileged user the VMM runs as.
    pub uid: u32,
    /// Its group.
    pub gid: u32,
    /// `RLIMIT_NOFILE`.
    pub max_open_files: u64,
    /// `RLIMIT_FSIZE` (bytes): no file the VMM writes grows beyond it.
    pub max_file_size: u64,
    /// Seccomp violation handling.
    pub seccomp: SeccompMode,
}

/// Hooks the jail tests use; compiled only into test builds.
#[cfg(feature = "test-hooks")]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestHooks {
    /// After entering the jail, try to open each of these for reading and
    /// log the result (`test hook: open PATH: …`).
    pub probe_paths: Vec<PathBuf>,
    /// Make a system call no vCPU filter allows, on vCPU 0, once it runs.
    pub forbidden_syscall_on_vcpu: bool,
}

#[cfg(feature = "test-hooks")]
impl TestHooks {
    /// Whether no hook is set.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// A disk of the zone, as the VMM gets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchDisk {
    /// Its name (the guest's `GET_ID` answer).
    pub name: String,
    /// Whether the guest may only read it.
    pub read_only: bool,
}

/// The zone's network interface, as the VMM gets it (its TAP is on [`NET_FD`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchNet {
    /// The guest's MAC address, `02:…` (assigned by the daemon).
    pub mac: String,
    /// The MTU offered to the driver.
    pub mtu: u16,
    /// Limits on what the zone receives.
    #[serde(default)]
    pub rx_rate: crate::devices::virtio::net::RateLimit,
    /// Limits on what the zone sends.
    #[serde(default)]
    pub tx_rate: crate::devices::virtio::net::RateLimit,
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// What the daemon tells the VMM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchConfig {
    /// The zone's name (for the VMM's logs).
    pub zone: String,
    /// The full kernel command line, loaded verbatim (the one measured).
    pub cmdline: String,
    /// vCPUs.
    pub vcpus: u8,
    /// Guest memory (MiB).
    pub memory_mib: u64,
    /// Guest vsock context id.
    pub guest_cid: u32,
    /// Whether an initramfs is on [`INITRD_FD`].
    pub initrd: bool,
    /// The zone's disks, in order, on [`FIRST_DISK_FD`] onwards.
    #[serde(default)]
    pub disks: Vec<LaunchDisk>,
    /// The zone's network interface (its TAP on [`NET_FD`]), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<LaunchNet>,
    /// The jail.
    pub jail: JailSpec,
    /// Test hooks.
    #[cfg(feature = "test-hooks")]
    #[serde(default, skip_serializing_if = "TestHooks::is_empty")]
    pub test_hooks: TestHooks,
}

/// Why the launch configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The descriptor is not a sealed memfd of bounded size.
    #[error("launch configuration on fd {CONFIG_FD}: {0}")]
    Descriptor(String),
    /// Not the expected JSON.
    #[error("launch configuration on fd {CONFIG_FD} is invalid: {0}")]
    Parse(String),
}

impl LaunchConfig {
    /// Reads the configuration from `fd` (a sealed memfd).
    pub fn read(fd: OwnedFd) -> Result<Self, LaunchError> {
        let s = crate::artifact::seals(&fd).map_err(|e| LaunchError::Descriptor(format!("not a memfd ({e})")))?;
        if s & crate::artifact::REQUIRED_SEALS != crate::artifact::REQUIRED_SEALS {
            return Err(LaunchError::Descriptor("not sealed".into()));
        }
        let mut bytes = Vec::new();
        let mut file = std::fs::File::from(fd);
        // A sealed memfd's offset may be anywhere; read it from the start.
        std::io::Seek::rewind(&mut file).map_err(|e| LaunchError::Descriptor(e.to_string()))?;
        (&mut file).take(MAX_CONFIG_LEN + 1).read_to_end(&mut bytes).map_err(|e| LaunchError::Descriptor(e.to_string()))?;
        if bytes.len() as u64 > MAX_CONFIG_LEN {
            return Err(LaunchError::Descriptor(format!("larger than {MAX_CONFIG_LEN} bytes")));
        }
        serde_json::from_slice(&bytes).map_err(|e| LaunchError::Parse(e.to_string()))
    }

    /// The JSON the daemon writes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The descriptor numbers the VMM expects, as (target fd, what) pairs, for
/// the daemon's spawner and for tests that audit a running VMM.
pub fn descriptor_table(initrd: bool, disks: usize, net: bool) -> Vec<(RawFd, &'static str)> {
    let mut t = vec![
        (CONFIG_FD, "launch configuration"),
        (KVM_FD, "/dev/kvm"),
        (KERNEL_FD, "kernel"),
        (CONSOLE_LOG_FD, "console.log"),
        (OUTCOME_FD, "outcome.json"),
        (VSOCK_LISTENER_FD, "vsock listener"),
        (CONSOLE_LISTENER_FD, "console listener"),
    ];
    if initrd {
        t.push((INITRD_FD, "initramfs"));
    }
    const DISK_NAMES: [&str; MAX_DISKS] = ["disk 0", "disk 1", "disk 2", "disk 3"];
    for (fd, what) in (FIRST_DISK_FD..).zip(DISK_NAMES).take(disks.min(MAX_DISKS)) {
        t.push((fd, what));
    }
    if net {
        t.push((NET_FD, "TAP"));
    }
    t.sort_unstable();
    t
}

/// Takes ownership of a contract descriptor.
///
/// # Safety
/// `fd` must be one of this contract's descriptors, open in this process and
/// owned by nothing else (the VMM process takes each one exactly once).
pub unsafe fn take_fd(fd: RawFd) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: the caller guarantees `fd` is open and owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Whether `fd` is open in this process.
pub fn is_open(fd: &impl AsRawFd) -> bool {
    // SAFETY: F_GETFD on any number is harmless; it fails with EBADF when closed.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) >= 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_numbers_are_distinct_and_below_the_first_free_one() {
        let t = descriptor_table(true, MAX_DISKS, true);
        assert_eq!(t.len(), 9 + MAX_DISKS);
        let mut fds: Vec<RawFd> = t.iter().map(|(fd, _)| *fd).collect();
        fds.dedup();
        assert_eq!(fds.len(), t.len());
        assert!(fds.iter().all(|&fd| fd > 2 && fd < FIRST_FREE_FD));
        assert!(!descriptor_table(false, 0, false).iter().any(|(fd, _)| *fd == INITRD_FD || *fd == NET_FD));
        assert_eq!(parse_mac("02:5a:00:0a:ff:01"), Some([2, 0x5a, 0, 0x0a, 0xff, 1]));
        for bad in ["", "02:5a:00:0a:ff", "02:5a:00:0a:ff:01:02", "2:5a:00:0a:ff:01", "02:5a:00:0a:ff:zz"] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn config_round_trips_and_unknown_fields_are_refused() {
        let c = LaunchConfig {
            zone: "web".into(),
            cmdline: "console=ttyS0".into(),
            vcpus: 1,
            memory_mib: 64,
            guest_cid: 3,
            initrd: false,
            disks: vec![LaunchDisk { name: "scratch".into(), read_only: false }],
            net: Some(LaunchNet { mac: "02:5a:00:00:00:01".into(), mtu: 1500, rx_rate: Default::default(), tx_rate: Default::default() }),
            jail: JailSpec {
                root: "/j".into(),
                sock_dir: "/s".into(),
                uid: 1000,
                gid: 1000,
                max_open_files: 256,
                max_file_size: 1 << 26,
                seccomp: SeccompMode::Kill,
            },
            #[cfg(feature = "test-hooks")]
            test_hooks: TestHooks::default(),
        };
        let json = c.encode();
        assert_eq!(serde_json::from_slice::<LaunchConfig>(&json).unwrap(), c);
        let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        v["measured"] = serde_json::Value::Null;
        assert!(serde_json::from_value::<LaunchConfig>(v).is_err(), "no field may switch off measured boot");
    }
}
