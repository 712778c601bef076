//! What a zone is made of, and the checks that run before anything is
//! allocated.

use std::path::{Path, PathBuf};

use crate::boot::cmdline;
use crate::boot::mptable::MAX_VCPUS;
use crate::devices::virtio::vsock::{MAX_UDS_PATH, MIN_GUEST_CID};
use crate::vstate::kvm::KVM_PATH;
use crate::vstate::layout::{self, MAX_MEMORY_MIB, MIN_MEMORY_MIB, VIRTIO_MMIO_SIZE};

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
}

/// Largest kernel or initramfs file read (larger files are refused, not loaded).
pub const MAX_ARTIFACT_MIB: u64 = 2048;

/// The zone's vsock device: guest CID and host side (Firecracker-style hybrid
/// vsock: guest connections to host port P reach the Unix socket
/// `<uds_path>_P`; host processes connect to `uds_path` and send `CONNECT <port>\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's CID (3 or more; unique per host).
    pub guest_cid: u32,
    /// The Unix socket `U` (e.g. `<zone state dir>/vsock.sock`).
    pub uds_path: PathBuf,
}

impl VsockConfig {
    /// Checks the CID and the path length.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.guest_cid < MIN_GUEST_CID || self.guest_cid == u32::MAX {
            return Err(ConfigError::VsockCid(self.guest_cid));
        }
        let len = self.uds_path.as_os_str().len();
        if len == 0 || len > MAX_UDS_PATH || self.uds_path.as_os_str().as_encoded_bytes().contains(&0) {
            return Err(ConfigError::VsockPath { path: self.uds_path.clone() });
        }
        Ok(())
    }
}

/// Everything a zone boots from. Artifacts are held as bytes: what was read
/// is what gets loaded.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    /// ELF `vmlinux` with a PVH note.
    pub kernel: Vec<u8>,
    /// Initramfs (cpio, optionally compressed as the kernel allows).
    pub initrd: Option<Vec<u8>>,
    /// Kernel command line.
    pub cmdline: String,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// KVM device.
    pub kvm_path: PathBuf,
    /// The vsock device (the host channel), if any.
    pub vsock: Option<VsockConfig>,
}

impl ZoneConfig {
    /// A configuration with defaults: 1 vCPU, 128 MiB, `/dev/kvm`.
    pub fn new(kernel: Vec<u8>, initrd: Option<Vec<u8>>, cmdline: impl Into<String>) -> Self {
        Self {
            kernel,
            initrd,
            cmdline: cmdline.into(),
            vcpus: 1,
            memory_mib: 128,
            kvm_path: PathBuf::from(KVM_PATH),
            vsock: None,
        }
    }

    /// Guest memory in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib << 20
    }

    /// Checks counts and sizes before any resource is taken.
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
        Ok(())
    }

    /// The virtio-mmio devices of this zone, in window order (device `i` is
    /// at `layout::virtio_mmio_slot(i)`); today only the vsock.
    pub fn virtio_mmio_devices(&self) -> usize {
        usize::from(self.vsock.is_some())
    }

    /// The command line the kernel gets: [`Self::cmdline`] plus one
    /// `virtio_mmio.device=` parameter per virtio-mmio device (before any
    /// ` -- ` and the zone command). This is exactly what is loaded.
    pub fn kernel_cmdline(&self) -> String {
        let params: Vec<String> = (0..self.virtio_mmio_devices())
            .filter_map(|i| layout::virtio_mmio_slot(u32::try_from(i).ok()?))
            .map(|(base, irq)| cmdline::virtio_mmio_device(base, VIRTIO_MMIO_SIZE, irq))
            .collect();
        cmdline::with_params(&self.cmdline, &params)
    }
}

/// Reads a boot artifact once, refusing non-files and oversized files.
pub fn read_artifact(what: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let err = |source| ConfigError::Read { what, path: path.to_owned(), source };
    let meta = std::fs::metadata(path).map_err(err)?;
    if !meta.is_file() || meta.len() > MAX_ARTIFACT_MIB << 20 {
        return Err(ConfigError::NotAFile { what, path: path.to_owned(), max_mib: MAX_ARTIFACT_MIB });
    }
    std::fs::read(path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_sizes_are_checked() {
        let mut c = ZoneConfig::new(vec![], None, "");
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
    fn vsock_cid_and_path_are_checked() {
        let mut c = ZoneConfig::new(vec![], None, "console=ttyS0 -- /bin/true");
        assert_eq!(c.kernel_cmdline(), "console=ttyS0 -- /bin/true");
        c.vsock = Some(VsockConfig { guest_cid: 3, uds_path: PathBuf::from("/run/zone/v.sock") });
        assert!(c.validate().is_ok());
        assert_eq!(c.kernel_cmdline(), "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 -- /bin/true");
        for cid in [0, 1, 2, u32::MAX] {
            c.vsock = Some(VsockConfig { guest_cid: cid, uds_path: PathBuf::from("/v.sock") });
            let e = c.validate().unwrap_err();
            assert!(e.to_string().contains("--vsock-cid 3"), "{e}");
        }
        for path in [String::new(), format!("/{}", "x".repeat(MAX_UDS_PATH))] {
            c.vsock = Some(VsockConfig { guest_cid: 3, uds_path: PathBuf::from(path) });
            let e = c.validate().unwrap_err();
            assert!(e.to_string().contains("--vsock-uds"), "{e}");
        }
    }

    #[test]
    fn unreadable_artifacts_are_named() {
        let e = read_artifact("kernel", Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/vmlinux"), "{e}");
        let e = read_artifact("kernel", Path::new("/")).unwrap_err();
        assert!(matches!(e, ConfigError::NotAFile { .. }));
    }
}
