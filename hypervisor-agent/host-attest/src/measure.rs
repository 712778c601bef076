//! Measurement before boot: each boot artifact is read once, hashed while it
//! is copied into a sealed memfd, and the VMM boots from that memfd.
//!
//! The memfd is sealed against writes, growth and shrinking (and further
//! sealing) before the digest is final, so the bytes the VMM loads are
//! exactly the bytes that were measured: replacing or rewriting the file on
//! disk afterwards changes nothing.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use attestation_proto::launch::Artifact;
use sha2::{Digest, Sha256};
use zone_vmm::artifact::{MAX_ARTIFACT, MAX_ARTIFACT_MIB, REQUIRED_SEALS};

/// An artifact that could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// The file could not be opened or read.
    #[error("cannot read the {what} {label}: {source}; check the path and its permissions")]
    Read {
        /// Which artifact.
        what: &'static str,
        /// Its path (or how it was given).
        label: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not a regular file (a directory, FIFO, device, socket), or too large.
    #[error("the {what} {label} is not a regular file of at most {MAX_ARTIFACT_MIB} MiB")]
    NotAFile {
        /// Which artifact.
        what: &'static str,
        /// Its path (or how it was given).
        label: String,
    },
    /// The file changed while it was being read.
    #[error(
        "the {what} {label} changed while it was being read; launch again once nothing writes it \
         (replace boot files by renaming a complete new file over them)"
    )]
    Changed {
        /// Which artifact.
        what: &'static str,
        /// Its path (or how it was given).
        label: String,
    },
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

/// Opens a boot artifact by path (the daemon's configured defaults) without
/// blocking on a FIFO or device.
pub fn open_artifact(what: &'static str, path: &Path) -> Result<File, MeasureError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|source| MeasureError::Read { what, label: path.display().to_string(), source })
}

/// Reads `file` once into a sealed memfd, hashing the bytes as they go in.
/// `label` (a path) is recorded for humans; the digest is what counts.
pub fn seal(what: &'static str, mut file: File, label: &str) -> Result<Sealed, MeasureError> {
    let read_err = |source| MeasureError::Read { what, label: label.to_owned(), source };
    let not_a_file = || MeasureError::NotAFile { what, label: label.to_owned() };
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() || meta.len() > MAX_ARTIFACT {
        return Err(not_a_file());
    }
    let mem_err = |source| MeasureError::Memfd { what, source };
    let mut out = memfd(&format!("zone-{what}")).map_err(mem_err)?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > MAX_ARTIFACT {
            return Err(not_a_file());
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(mem_err)?;
    }
    // SAFETY: F_ADD_SEALS on the memfd we created; no memory is passed.
    if unsafe { libc::fcntl(out.as_raw_fd(), libc::F_ADD_SEALS, REQUIRED_SEALS) } < 0 {
        return Err(mem_err(std::io::Error::last_os_error()));
    }
    let artifact = Artifact { path: label.to_owned(), size, sha256: hex::encode(hasher.finalize()) };
    Ok(Sealed { fd: OwnedFd::from(out), artifact })
}

/// `bytes` in a sealed memfd (the VMM's launch configuration).
pub fn seal_bytes(what: &'static str, bytes: &[u8]) -> Result<OwnedFd, MeasureError> {
    let mem_err = |source| MeasureError::Memfd { what, source };
    let mut out = memfd(&format!("zone-{what}")).map_err(mem_err)?;
    out.write_all(bytes).map_err(mem_err)?;
    // SAFETY: F_ADD_SEALS on the memfd we created; no memory is passed.
    if unsafe { libc::fcntl(out.as_raw_fd(), libc::F_ADD_SEALS, REQUIRED_SEALS) } < 0 {
        return Err(mem_err(std::io::Error::last_os_error()));
    }
    Ok(OwnedFd::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zone_vmm::Artifact as Loaded;

    #[test]
    fn sealed_copy_is_the_measured_bytes_whatever_happens_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, b"original kernel").unwrap();
        let sealed = seal("kernel", open_artifact("kernel", &p).unwrap(), "k").unwrap();
        assert_eq!(sealed.artifact.sha256, attestation_proto::launch::sha256_hex(b"original kernel"));
        std::fs::write(&p, b"replaced after measurement").unwrap();
        // Writing through the memfd is refused too.
        let mut f = File::from(sealed.fd.try_clone().unwrap());
        assert!(f.write_all(b"x").is_err());
        // The VMM's side maps exactly those bytes.
        assert_eq!(Loaded::from_sealed_memfd("kernel", sealed.fd).unwrap().as_bytes(), b"original kernel");
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid path and mode.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = seal("initramfs", open_artifact("initramfs", &fifo).unwrap(), "fifo").unwrap_err();
        assert!(matches!(e, MeasureError::NotAFile { .. }), "{e}");
        let e = seal("kernel", open_artifact("kernel", dir.path()).unwrap(), "dir").unwrap_err();
        assert!(matches!(e, MeasureError::NotAFile { .. }), "{e}");
        let e = seal("kernel", File::open("/dev/null").unwrap(), "/dev/null").unwrap_err();
        assert!(matches!(e, MeasureError::NotAFile { .. }), "{e}");
    }
}
