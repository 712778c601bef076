//! What a zone is made of, and the checks that run before anything is
//! allocated.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use crate::artifact::Artifact;
use crate::boot::cmdline;
use crate::boot::mptable::MAX_VCPUS;
use crate::devices::virtio::vsock::{MAX_UDS_PATH, MIN_GUEST_CID};
use crate::vstate::kvm::KVM_PATH;
use crate::vstate::layout::{MAX_MEMORY_MIB, MIN_MEMORY_MIB};

/// A zone configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// vCPU count is zero.
    #[error("a zone needs at least 1 vCPU (got 0); pass --vcpus 1 or more")]
    NoVcpus,
    /// vCPU count above what the VMM or KVM supports.
    #[error("{requested} vCPUs requested but at most {max} are supported; pass a smaller --vcpus")]
    TooManyVcpus {
        /// Requested count.
        requested: u8,
        /// The limit.
        max: u8,
    },
    /// Memory size out of range.
    #[error("{mib} MiB of memory is out of range ({MIN_MEMORY_MIB}..={MAX_MEMORY_MIB} MiB); pass a --memory inside it")]
    Memory {
        /// Requested size.
        mib: u64,
    },
    /// The vsock guest CID is one of the reserved ones.
    #[error(
        "vsock guest CID {0} is reserved (0: hypervisor, 1: loopback, 2: host, 4294967295: any); \
         pass --vsock-cid 3 or more, unique per zone on this host"
    )]
    VsockCid(u32),
    /// The vsock socket path cannot be a Unix socket address.
    #[error(
        "the vsock socket path {path} cannot be used: it must be non-empty and at most {MAX_UDS_PATH} bytes so that \
         `<path>_<port>` fits a Unix socket address; pass a shorter --vsock-uds"
    )]
    VsockPath {
        /// The path.
        path: PathBuf,
    },
    /// A boot artifact could not be read.
    #[error("cannot read the {what} {path}: {source}; check the path and its permissions")]
    Read {
        /// Which artifact.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A boot artifact is a directory or device, or absurdly large.
    #[error("the {what} {path} is not a regular file of at most {max_mib} MiB")]
    NotAFile {
        /// Which artifact.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Size limit.
        max_mib: u64,
    },
    /// A measured artifact's descriptor is not a sealed memfd.
    #[error("the measured {what} cannot be booted: {detail}")]
    Sealed {
        /// Which artifact.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The command line does not declare the zone's devices the way the VMM
    /// places them (it was not computed with [`cmdline::boot_cmdline`]).
    #[error("the kernel command line does not declare the zone's {0} virtio-mmio device(s) the way the VMM places them")]
    CmdlineDevices(u32),
    /// More devices than virtio-mmio windows.
    #[error("{0} virtio-mmio devices do not fit the zone's {max} windows; attach fewer disks", max = crate::vstate::layout::VIRTIO_MMIO_MAX_DEVICES)]
    TooManyDevices(u32),
}

/// The host side of the zone's vsock: a Unix socket `U` (Firecracker-style
/// hybrid vsock: guest connections to host port P reach the Unix socket
/// `U_P`; host processes connect to `U` and send `CONNECT <port>\n`).
#[derive(Debug)]
pub enum VsockHost {
    /// The VMM binds `U` itself (and removes it when the zone ends).
    Bind(PathBuf),
    /// `U` was bound by the daemon and handed over; `path` is where it is
    /// seen from the VMM (inside its jail), so that `U_P` resolves next to it.
    Listener {
        /// The listening socket.
        listener: UnixListener,
        /// `U` as the VMM sees it.
        path: PathBuf,
    },
}

impl VsockHost {
    /// `U` as the VMM sees it.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Bind(p) | Self::Listener { path: p, .. } => p,
        }
    }
}

/// The zone's vsock device: guest CID and host side.
#[derive(Debug)]
pub struct VsockConfig {
    /// The guest's CID (3 or more; unique per host).
    pub guest_cid: u32,
    /// The host side.
    pub host: VsockHost,
}

impl VsockConfig {
    /// Checks the CID and the path length.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.guest_cid < MIN_GUEST_CID || self.guest_cid == u32::MAX {
            return Err(ConfigError::VsockCid(self.guest_cid));
        }
        let path = self.host.path();
        let len = path.as_os_str().len();
        if len == 0 || len > MAX_UDS_PATH || path.as_os_str().as_encoded_bytes().contains(&0) {
            return Err(ConfigError::VsockPath { path: path.to_owned() });
        }
        Ok(())
    }
}

/// One of the zone's disks (virtio-blk, after the vsock in window order).
#[derive(Debug)]
pub struct DiskConfig {
    /// Its name: the guest's `GET_ID` answer and the VMM's logs.
    pub name: String,
    /// The backing file (a whole number of 512-byte sectors).
    pub file: std::fs::File,
    /// Whether the guest may only read it.
    pub read_only: bool,
}

/// Where the VMM gets KVM from.
#[derive(Debug)]
pub enum KvmSource {
    /// Open this device node.
    Path(PathBuf),
    /// A descriptor of `/dev/kvm` opened by the daemon (a jailed VMM cannot open it).
    Fd(OwnedFd),
}

/// Everything a zone boots from. Artifacts are held as bytes (or a mapping
/// of the sealed memfd): what was read, and measured, is what gets loaded.
#[derive(Debug)]
pub struct ZoneConfig {
    /// ELF `vmlinux` with a PVH note.
    pub kernel: Artifact,
    /// Initramfs (cpio, optionally compressed as the kernel allows).
    pub initrd: Option<Artifact>,
    /// The full kernel command line, loaded verbatim: computed once with
    /// [`cmdline::boot_cmdline`] (which declares the virtio-mmio devices).
    pub cmdline: String,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// KVM.
    pub kvm: KvmSource,
    /// The vsock device (the host channel), if any.
    pub vsock: Option<VsockConfig>,
    /// Disks, in window order after the vsock (`/dev/vda`, `/dev/vdb`, … in the guest).
    pub disks: Vec<DiskConfig>,
    /// The network interface (`eth0` in the guest), in window order after the disks.
    pub net: Option<crate::devices::virtio::net::NetConfig>,
}

impl ZoneConfig {
    /// A configuration with defaults: 1 vCPU, 128 MiB, `/dev/kvm`, no devices.
    pub fn new(kernel: Artifact, initrd: Option<Artifact>, cmdline: impl Into<String>) -> Self {
        Self {
            kernel,
            initrd,
            cmdline: cmdline.into(),
            vcpus: 1,
            memory_mib: 128,
            kvm: KvmSource::Path(PathBuf::from(KVM_PATH)),
            vsock: None,
            disks: Vec::new(),
            net: None,
        }
    }

    /// Guest memory in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib << 20
    }

    /// The virtio-mmio devices of this zone, in window order (device `i` is
    /// at `layout::virtio_mmio_slot(i)`): the vsock, then the disks, then the network interface.
    pub fn virtio_mmio_devices(&self) -> u32 {
        u32::from(self.vsock.is_some())
            .saturating_add(u32::try_from(self.disks.len()).unwrap_or(u32::MAX))
            .saturating_add(u32::from(self.net.is_some()))
    }

    /// Checks counts, sizes and the command line before any resource is taken.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vcpus == 0 {
            return Err(ConfigError::NoVcpus);
        }
        if self.vcpus > MAX_VCPUS {
            return Err(ConfigError::TooManyVcpus { requested: self.vcpus, max: MAX_VCPUS });
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(ConfigError::Memory { mib: self.memory_mib });
        }
        if let Some(v) = &self.vsock {
            v.validate()?;
        }
        let devices = self.virtio_mmio_devices();
        if devices > crate::vstate::layout::VIRTIO_MMIO_MAX_DEVICES {
            return Err(ConfigError::TooManyDevices(devices));
        }
        if !cmdline::declares_devices(&self.cmdline, devices) {
            return Err(ConfigError::CmdlineDevices(devices));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(cmdline: &str) -> ZoneConfig {
        ZoneConfig::new(Artifact::from_bytes(vec![]), None, cmdline)
    }

    #[test]
    fn counts_and_sizes_are_checked() {
        let mut c = config("");
        assert!(c.validate().is_ok());
        c.vcpus = 0;
        assert!(matches!(c.validate(), Err(ConfigError::NoVcpus)));
        c.vcpus = MAX_VCPUS + 1;
        assert!(matches!(c.validate(), Err(ConfigError::TooManyVcpus { .. })));
        c.vcpus = 1;
        for mib in [0, MIN_MEMORY_MIB - 1, MAX_MEMORY_MIB + 1] {
            c.memory_mib = mib;
            let e = c.validate().unwrap_err();
            assert!(e.to_string().contains("--memory"), "{e}");
        }
    }

    #[test]
    fn vsock_cid_path_and_cmdline_are_checked() {
        let line = cmdline::boot_cmdline("console=ttyS0", &["/bin/true".into()], 1).unwrap();
        let mut c = config(&line);
        c.vsock = Some(VsockConfig { guest_cid: 3, host: VsockHost::Bind(PathBuf::from("/run/zone/v.sock")) });
        assert!(c.validate().is_ok());
        c.cmdline = "console=ttyS0 -- /bin/true".into();
        assert!(matches!(c.validate(), Err(ConfigError::CmdlineDevices(1))), "a device the kernel is not told about");
        c.cmdline = line;
        for cid in [0, 1, 2, u32::MAX] {
            c.vsock = Some(VsockConfig { guest_cid: cid, host: VsockHost::Bind(PathBuf::from("/v.sock")) });
            let e = c.validate().unwrap_err();
            assert!(e.to_string().contains("--vsock-cid 3"), "{e}");
        }
        for path in [String::new(), format!("/{}", "x".repeat(MAX_UDS_PATH))] {
            c.vsock = Some(VsockConfig { guest_cid: 3, host: VsockHost::Bind(PathBuf::from(path)) });
            let e = c.validate().unwrap_err();
            assert!(e.to_string().contains("--vsock-uds"), "{e}");
        }
    }
}
