//! Measurement before boot: each boot artifact is read once, hashed while it
//! is copied into a sealed memfd, and the VMM boots from that memfd.
//!
//! The memfd is sealed against writes, growth and shrinking (and further
//! sealing) before the hash is final, so the bytes the VMM loads are
//! exactly the bytes that were measured: replacing or rewriting the file on
//! disk afterwards changes nothing.
//!
//! The same module computes a zone's kernel command line the way the VMM
//! builds it, so `zonectl measure` can predict every digest offline.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use attestation_proto::launch::Artifact;
use sha2::{Digest, Sha256};

use crate::vmm::{ConfigError, MAX_ARTIFACT_MIB, VsockConfig, ZoneConfig};

/// The seals a measured memfd must carry.
pub const SEALS: libc::c_int = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
const MAX_ARTIFACT: u64 = MAX_ARTIFACT_MIB << 20;

/// An artifact that could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// Unreadable, not a regular file, or too large (the VMM's own artifact errors).
    #[error(transparent)]
    Artifact(#[from] ConfigError),
    /// memfd trouble.
    #[error("cannot prepare the {what} for the VMM: {source}")]
    Memfd {
        /// Which artifact.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A measured artifact: its sealed copy and its measurement.
#[derive(Debug)]
pub struct Sealed {
    /// The sealed memfd holding exactly the measured bytes.
    pub fd: OwnedFd,
    /// Path, size and digest.
    pub artifact: Artifact,
}

fn memfd(name: &str) -> std::io::Result<File> {
    let cname = CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: `cname` is a valid NUL-terminated string; the flags are valid.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The seals on `fd`.
pub fn seals(fd: &impl AsRawFd) -> std::io::Result<libc::c_int> {
    // SAFETY: F_GET_SEALS on a descriptor we hold; no memory is passed.
    let s = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if s < 0 { Err(std::io::Error::last_os_error()) } else { Ok(s) }
}

fn read_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> MeasureError + 'a {
    move |source| ConfigError::Read { what, path: path.to_owned(), source }.into()
}

fn too_large(what: &'static str, path: &Path) -> MeasureError {
    ConfigError::NotAFile { what, path: path.to_owned(), max_mib: MAX_ARTIFACT_MIB }.into()
}

/// Opens a boot artifact, refusing non-files and oversized files.
fn open_artifact(what: &'static str, path: &Path) -> Result<File, MeasureError> {
    let file = File::open(path).map_err(read_err(what, path))?;
    let meta = file.metadata().map_err(read_err(what, path))?;
    if !meta.is_file() || meta.len() > MAX_ARTIFACT {
        return Err(too_large(what, path));
    }
    Ok(file)
}

/// Reads `path` once into a sealed memfd, hashing the bytes as they go in.
pub fn seal(what: &'static str, path: &Path) -> Result<Sealed, MeasureError> {
    let mem_err = |source| MeasureError::Memfd { what, source };
    let mut file = open_artifact(what, path)?;
    let mut out = memfd(&format!("zone-{what}")).map_err(mem_err)?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(read_err(what, path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > MAX_ARTIFACT {
            return Err(too_large(what, path));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(mem_err)?;
    }
    // SAFETY: F_ADD_SEALS on the memfd we created; no memory is passed.
    if unsafe { libc::fcntl(out.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
        return Err(mem_err(std::io::Error::last_os_error()));
    }
    let artifact =
        Artifact { path: path.display().to_string(), size, sha256: hex::encode(hasher.finalize()) };
    Ok(Sealed { fd: OwnedFd::from(out), artifact })
}

/// Reads a sealed memfd back (the VMM's side), refusing one that is not sealed.
pub fn read_sealed(what: &'static str, fd: OwnedFd) -> Result<Vec<u8>, MeasureError> {
    let mem_err = |source| MeasureError::Memfd { what, source };
    let s = seals(&fd).map_err(mem_err)?;
    if s & SEALS != SEALS {
        return Err(mem_err(std::io::Error::other("the descriptor is not a sealed memfd")));
    }
    let mut file = File::from(fd);
    let len = file.metadata().map_err(mem_err)?.len();
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    std::io::Seek::rewind(&mut file).map_err(mem_err)?;
    file.read_to_end(&mut bytes).map_err(mem_err)?;
    Ok(bytes)
}

/// The kernel command line a daemon zone boots with: `cmdline`, the zone's
/// command after ` -- `, and the vsock device's `virtio_mmio.device=`
/// parameter, exactly as the VMM writes it into guest memory.
pub fn zone_cmdline(cmdline: &str, command: &[String]) -> Result<String, String> {
    let full = crate::cli::run::cmdline_with_command(cmdline, command).map_err(|e| e.to_string())?;
    let mut config = ZoneConfig::new(Vec::new(), None, full);
    // The CID and socket do not appear on the command line; only the device's presence does.
    config.vsock = Some(VsockConfig { guest_cid: 3, uds_path: PathBuf::from("/unused") });
    Ok(config.kernel_cmdline())
}

/// SHA-256 of a file, streamed (for `zonectl measure`).
pub fn digest_file(what: &'static str, path: &Path) -> Result<Artifact, MeasureError> {
    let mut file = open_artifact(what, path)?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher).map_err(read_err(what, path))?;
    Ok(Artifact { path: path.display().to_string(), size, sha256: hex::encode(hasher.finalize()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_copy_is_the_measured_bytes_whatever_happens_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, b"original kernel").unwrap();
        let sealed = seal("kernel", &p).unwrap();
        assert_eq!(sealed.artifact.sha256, attestation_proto::launch::sha256_hex(b"original kernel"));
        assert_eq!(sealed.artifact, digest_file("kernel", &p).unwrap());
        std::fs::write(&p, b"replaced after measurement").unwrap();
        // Writing through the memfd is refused too.
        let mut f = File::from(sealed.fd.try_clone().unwrap());
        assert!(f.write_all(b"x").is_err());
        assert_eq!(read_sealed("kernel", sealed.fd).unwrap(), b"original kernel");
        let unsealed = OwnedFd::from(memfd("x").unwrap());
        assert!(read_sealed("kernel", unsealed).is_err());
        assert!(matches!(seal("kernel", dir.path()), Err(MeasureError::Artifact(ConfigError::NotAFile { .. }))));
    }

    #[test]
    fn cmdline_is_the_one_the_vmm_loads() {
        let c = zone_cmdline("console=ttyS0", &["/bin/echo".into(), "hi".into()]).unwrap();
        assert_eq!(c, "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 -- /bin/echo hi");
    }
}
