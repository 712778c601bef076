//! Opening `/dev/kvm` and checking that it can run zones.

use std::path::{Path, PathBuf};

use kvm_ioctls::{Cap, Kvm};

/// Why KVM cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// The device node is missing.
    #[error(
        "{0} does not exist: this host has no KVM. Load the kvm_intel or kvm_amd module (modprobe), enable \
         virtualization in the firmware, or run zones inside the test host (scripts/testhost/)"
    )]
    Missing(PathBuf),
    /// The device node cannot be opened by this user.
    #[error("permission denied opening {0}: run as root or add this user to the group that owns it (usually `kvm`)")]
    PermissionDenied(PathBuf),
    /// Any other failure opening the device.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The device path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The KVM API version is not the stable one.
    #[error("KVM API version {0} is not supported (need 12)")]
    ApiVersion(i32),
    /// A capability the VMM relies on is absent.
    #[error("KVM lacks the {0} capability the VMM needs; use a newer host kernel")]
    MissingCapability(&'static str),
    /// An ioctl on the KVM system fd failed.
    #[error("KVM {op} failed: {source}")]
    Ioctl {
        /// The operation.
        op: &'static str,
        /// The error from the kernel.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// Default KVM device path.
pub const KVM_PATH: &str = "/dev/kvm";

/// Opens the KVM device at `path` and checks API version and capabilities.
pub fn open(path: &Path) -> Result<Kvm, KvmError> {
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| KvmError::Missing(path.to_owned()))?;
    let kvm = Kvm::new_with_path(&cpath).map_err(|e| match e.errno() {
        libc::ENOENT => KvmError::Missing(path.to_owned()),
        libc::EACCES | libc::EPERM => KvmError::PermissionDenied(path.to_owned()),
        errno => KvmError::Open { path: path.to_owned(), source: std::io::Error::from_raw_os_error(errno) },
    })?;
    check(kvm)
}

/// Uses a descriptor of `/dev/kvm` opened by someone else (the daemon, for a
/// jailed VMM), with the same checks as [`open`].
pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<Kvm, KvmError> {
    use std::os::fd::IntoRawFd;
    // SAFETY: `fd` is an open descriptor we own; `Kvm` takes ownership of it.
    // If it is not /dev/kvm, the API version query below fails cleanly.
    let kvm = unsafe { <Kvm as std::os::fd::FromRawFd>::from_raw_fd(fd.into_raw_fd()) };
    check(kvm)
}

fn check(kvm: Kvm) -> Result<Kvm, KvmError> {
    let version = kvm.get_api_version();
    if version != 12 {
        return Err(KvmError::ApiVersion(version));
    }
    for (cap, name) in [
        (Cap::Irqchip, "IRQCHIP"),
        (Cap::Pit2, "PIT2"),
        (Cap::Irqfd, "IRQFD"),
        (Cap::UserMemory, "USER_MEMORY"),
        (Cap::ExtCpuid, "EXT_CPUID"),
        (Cap::SetTssAddr, "SET_TSS_ADDR"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(KvmError::MissingCapability(name));
        }
    }
    Ok(kvm)
}
