//! Boot artifacts (kernel, initramfs) as the VMM holds them: a read-only
//! mapping of a sealed memfd, made by the daemon (its measured copy) or by
//! [`Artifact::read`] from a file (`zonectl run`), or bytes in memory. A mapped artifact is exactly the measured bytes and
//! is loaded into guest memory straight from the mapping, never through a
//! heap copy.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::config::ConfigError;

/// Largest kernel or initramfs accepted (larger files are refused, not loaded).
pub const MAX_ARTIFACT_MIB: u64 = 2048;
/// Largest artifact in bytes.
pub const MAX_ARTIFACT: u64 = MAX_ARTIFACT_MIB << 20;
/// The seals a measured memfd must carry: no writes, no growing or
/// shrinking, no further sealing. The bytes behind it can never change.
pub const REQUIRED_SEALS: libc::c_int = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// The seals on `fd`.
pub fn seals(fd: &impl AsRawFd) -> std::io::Result<libc::c_int> {
    // SAFETY: F_GET_SEALS on a descriptor we hold; no memory is passed.
    let s = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if s < 0 { Err(std::io::Error::last_os_error()) } else { Ok(s) }
}

/// A kernel or initramfs ready to be loaded.
#[derive(Debug)]
pub struct Artifact(Inner);

#[derive(Debug)]
enum Inner {
    Bytes(Vec<u8>),
    Mapped { ptr: *const u8, len: usize, _fd: OwnedFd },
}

// SAFETY: the mapping is read-only and backed by a sealed memfd (nothing can
// write or truncate it), so sharing it between threads is like sharing `&[u8]`.
unsafe impl Send for Artifact {}
// SAFETY: as above: the mapped bytes never change while the mapping exists.
unsafe impl Sync for Artifact {}

impl Artifact {
    /// Bytes the caller already holds.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(Inner::Bytes(bytes))
    }

    /// Reads a boot artifact from a file once, refusing non-files and
    /// oversized files. The bytes are copied by the kernel into a sealed
    /// memfd (`copy_file_range`/`sendfile`, no buffer in this process) and
    /// mapped like the daemon's artifacts: what is loaded is that copy, which
    /// nothing can change or truncate, whatever happens to the file.
    pub fn read(what: &'static str, path: &Path) -> Result<Self, ConfigError> {
        let err = |source| ConfigError::Read { what, path: path.to_owned(), source };
        // Non-blocking, so that a FIFO or device node given as a path cannot hang the open.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(err)?;
        let meta = file.metadata().map_err(err)?;
        if !meta.is_file() || meta.len() > MAX_ARTIFACT {
            return Err(ConfigError::NotAFile { what, path: path.to_owned(), max_mib: MAX_ARTIFACT_MIB });
        }
        // SAFETY: a valid NUL-terminated name and valid flags; the result is checked.
        let fd = unsafe { libc::memfd_create(c"zone-artifact".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if fd < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let mut copy = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        // One byte past the limit: a file that grew past it since the check is refused.
        let copied = std::io::copy(&mut file.take(MAX_ARTIFACT + 1), &mut copy).map_err(err)?;
        if copied > MAX_ARTIFACT {
            return Err(ConfigError::NotAFile { what, path: path.to_owned(), max_mib: MAX_ARTIFACT_MIB });
        }
        // SAFETY: F_ADD_SEALS on our own memfd; no memory is passed.
        if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, REQUIRED_SEALS) } != 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        Self::from_sealed_memfd(what, OwnedFd::from(copy))
    }

    /// Maps a sealed memfd read-only, refusing a descriptor that is not
    /// sealed with [`REQUIRED_SEALS`] (its bytes could change after measurement).
    pub fn from_sealed_memfd(what: &'static str, fd: OwnedFd) -> Result<Self, ConfigError> {
        let bad = |detail: String| ConfigError::Sealed { what, detail };
        let s = seals(&fd).map_err(|e| bad(format!("cannot read its seals ({e}); it is not a memfd")))?;
        if s & REQUIRED_SEALS != REQUIRED_SEALS {
            return Err(bad(format!("its seals are {s:#x}, not the required {REQUIRED_SEALS:#x}")));
        }
        let len = File::from(fd.try_clone().map_err(|e| bad(format!("dup failed: {e}")))?)
            .metadata()
            .map_err(|e| bad(format!("fstat failed: {e}")))?
            .len();
        if len > MAX_ARTIFACT {
            return Err(bad(format!("it holds {len} bytes, more than {MAX_ARTIFACT_MIB} MiB")));
        }
        let len = usize::try_from(len).map_err(|_| bad("too large for this host".into()))?;
        if len == 0 {
            return Ok(Self::from_bytes(Vec::new()));
        }
        // SAFETY: a fresh read-only private mapping of `len` bytes of a file we
        // hold; the kernel picks the address. Failure is checked below.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, fd.as_raw_fd(), 0)
        };
        if ptr == libc::MAP_FAILED {
            return Err(bad(format!("mmap failed: {}", std::io::Error::last_os_error())));
        }
        Ok(Self(Inner::Mapped { ptr: ptr.cast(), len, _fd: fd }))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Inner::Bytes(b) => b,
            // SAFETY: `ptr` maps `len` readable bytes for as long as `self`
            // lives (unmapped in Drop); the memfd is sealed against writes and
            // shrinking, so the bytes stay valid and unchanged.
            Inner::Mapped { ptr, len, .. } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Artifact {
    fn drop(&mut self) {
        if let Inner::Mapped { ptr, len, .. } = self.0 {
            // SAFETY: unmaps exactly the mapping made in `from_sealed_memfd`;
            // no slice of it outlives `self`.
            unsafe { libc::munmap(ptr.cast_mut().cast(), len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::FromRawFd;

    fn memfd(bytes: &[u8], seal: libc::c_int) -> OwnedFd {
        // SAFETY: a valid NUL-terminated name and valid flags.
        let fd = unsafe { libc::memfd_create(c"t".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        assert!(fd >= 0);
        // SAFETY: `fd` was just created and is owned by nobody else.
        let mut f = unsafe { File::from_raw_fd(fd) };
        f.write_all(bytes).unwrap();
        // SAFETY: F_ADD_SEALS on our memfd; no memory is passed.
        assert_eq!(unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, seal) }, 0);
        OwnedFd::from(f)
    }

    #[test]
    fn sealed_memfds_are_mapped_and_unsealed_ones_refused() {
        let a = Artifact::from_sealed_memfd("kernel", memfd(b"measured bytes", REQUIRED_SEALS)).unwrap();
        assert_eq!(a.as_bytes(), b"measured bytes");
        let e = Artifact::from_sealed_memfd("kernel", memfd(b"x", libc::F_SEAL_SHRINK)).unwrap_err();
        assert!(e.to_string().contains("seals"), "{e}");
        let empty = Artifact::from_sealed_memfd("initramfs", memfd(b"", REQUIRED_SEALS)).unwrap();
        assert!(empty.is_empty());
        let file = File::open("/dev/null").unwrap();
        assert!(Artifact::from_sealed_memfd("kernel", OwnedFd::from(file)).is_err());
    }

    #[test]
    fn a_read_file_is_a_sealed_copy_that_later_changes_do_not_reach() {
        let dir = std::env::temp_dir().join(format!("artifact-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vmlinux");
        std::fs::write(&path, b"the kernel as read").unwrap();
        let a = Artifact::read("kernel", &path).unwrap();
        std::fs::write(&path, b"replaced").unwrap();
        File::options().write(true).open(&path).unwrap().set_len(0).unwrap();
        assert_eq!(a.as_bytes(), b"the kernel as read");
        let empty = Artifact::read("kernel", &path).unwrap();
        assert!(empty.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unreadable_files_are_named() {
        let e = Artifact::read("kernel", Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/vmlinux"), "{e}");
        let e = Artifact::read("kernel", Path::new("/")).unwrap_err();
        assert!(matches!(e, ConfigError::NotAFile { .. }), "{e}");
    }
}
