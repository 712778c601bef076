//! What a zone is made of, and the checks that run before anything is
//! allocated.

use std::path::{Path, PathBuf};

use crate::boot::mptable::MAX_VCPUS;
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
const MAX_ARTIFACT_MIB: u64 = 2048;

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
}

impl ZoneConfig {
    /// A configuration with defaults: 1 vCPU, 128 MiB, `/dev/kvm`.
    pub fn new(kernel: Vec<u8>, initrd: Option<Vec<u8>>, cmdline: impl Into<String>) -> Self {
        Self { kernel, initrd, cmdline: cmdline.into(), vcpus: 1, memory_mib: 128, kvm_path: PathBuf::from(KVM_PATH) }
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
        Ok(())
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
    fn unreadable_artifacts_are_named() {
        let e = read_artifact("kernel", Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/vmlinux"), "{e}");
        let e = read_artifact("kernel", Path::new("/")).unwrap_err();
        assert!(matches!(e, ConfigError::NotAFile { .. }));
    }
}
