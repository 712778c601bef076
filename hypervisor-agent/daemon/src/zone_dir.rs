//! The layout of a zone's directory, `<state_dir>/zones/<name>/`: one type
//! owns every path in it and how each file is written and read.
//!
//! | path | written by | what |
//! |---|---|---|
//! | `zone.json` | daemon (atomically, 0600) | the zone's record |
//! | `console.log` | VMM, through a descriptor the daemon opened | the serial console |
//! | `workload.log` | daemon | the workload's stdout/stderr from the host channel |
//! | `outcome.json` | VMM, through a descriptor | how the zone ended (read as hostile input) |
//! | `vmm.log` | VMM (its stderr) | the VMM process's own logs |
//! | `scratch.img` (0600) | daemon creates (sparse), VMM writes through a descriptor | the zone's writable scratch disk, if it has one |
//! | `sock/` (0750, group = the zone's gid) | daemon | the zone's sockets; the VMM sees it read-only as `/sock` |
//! | `sock/vsock.sock` (0600) | daemon binds, VMM serves | `U` of the hybrid vsock: host → guest connections |
//! | `sock/console.sock` (0600) | daemon binds, VMM serves | console input |
//! | `sock/vsock.sock_<port>` (0660) | daemon | listeners for guest connections to host port `port` |
//!
//! The VMM writes nothing by path: it gets its files as descriptors, and the
//! daemon opens what the VMM may have touched without following symlinks.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zone_vmm::launch::{CONSOLE_SOCKET, VSOCK_SOCKET};
use zone_vmm::outcome::{MAX_OUTCOME_LEN, Outcome};

/// A zone's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneDir {
    dir: PathBuf,
}

fn open_private(path: &Path, append: bool) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

impl ZoneDir {
    /// The directory at `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `zone.json`.
    pub fn record(&self) -> PathBuf {
        self.dir.join("zone.json")
    }

    /// `console.log`.
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// `workload.log`.
    pub fn workload_log(&self) -> PathBuf {
        self.dir.join("workload.log")
    }

    /// `outcome.json`.
    pub fn outcome(&self) -> PathBuf {
        self.dir.join("outcome.json")
    }

    /// `vmm.log`.
    pub fn vmm_log(&self) -> PathBuf {
        self.dir.join("vmm.log")
    }

    /// `scratch.img`.
    pub fn scratch(&self) -> PathBuf {
        self.dir.join("scratch.img")
    }

    /// Creates `scratch.img` empty and sparse, `bytes` long (replacing one a
    /// previous launch left), opened for reading and writing.
    pub fn create_scratch(&self, bytes: u64) -> std::io::Result<File> {
        let path = self.scratch();
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let f = std::fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)?;
        f.set_len(bytes)?;
        Ok(f)
    }

    /// `sock/`.
    pub fn sock_dir(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// `sock/vsock.sock`: `U`.
    pub fn vsock(&self) -> PathBuf {
        self.sock_dir().join(VSOCK_SOCKET)
    }

    /// `sock/console.sock`.
    pub fn console_socket(&self) -> PathBuf {
        self.sock_dir().join(CONSOLE_SOCKET)
    }

    /// `sock/vsock.sock_<port>`: where guest connections to host port `port` arrive.
    pub fn port_socket(&self, port: u32) -> PathBuf {
        self.sock_dir().join(format!("{VSOCK_SOCKET}_{port}"))
    }

    /// Creates the directory (0700) and its socket directory (0750, group `gid`).
    pub fn create(&self) -> std::io::Result<()> {
        std::fs::create_dir(&self.dir)?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
    }

    /// (Re)creates `sock/` for a launch whose VMM runs with group `gid`.
    pub fn create_sock_dir(&self, gid: u32) -> std::io::Result<()> {
        let sock = self.sock_dir();
        if let Err(e) = std::fs::remove_dir_all(&sock) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(e);
            }
        }
        std::fs::create_dir(&sock)?;
        std::os::unix::fs::chown(&sock, Some(0), Some(gid))?;
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o750))
    }

    /// Writes the record atomically (0600).
    pub fn save_record(&self, bytes: &[u8]) -> std::io::Result<()> {
        host_attest::durable::write_atomic(&self.record(), bytes, 0o600)
    }

    /// The files a VMM writes through descriptors: `console.log` (append),
    /// `outcome.json` (emptied) and `vmm.log` (append).
    pub fn open_for_vmm(&self) -> std::io::Result<(File, File, File)> {
        let _ = std::fs::remove_file(self.outcome());
        Ok((open_private(&self.console_log(), true)?, open_private(&self.outcome(), false)?, open_private(&self.vmm_log(), true)?))
    }

    /// Opens a log for reading without following a symlink.
    pub fn open_log(path: &Path) -> std::io::Result<File> {
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK).open(path)
    }

    /// The outcome a VMM wrote, if any (bounded; a symlink or junk is no outcome).
    pub fn read_outcome(&self) -> Option<Outcome> {
        let file = Self::open_log(&self.outcome()).ok()?;
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        let mut bytes = Vec::new();
        file.take(MAX_OUTCOME_LEN as u64 + 1).read_to_end(&mut bytes).ok()?;
        Outcome::parse(&bytes)
    }

    /// Binds a listening socket at `path` (in `sock/`, replacing a stale one)
    /// with its mode set explicitly: 0600 (root only), or 0660 with group
    /// `gid` (the zone's VMM connects to it). The listener is blocking.
    pub fn bind(path: &Path, gid: Option<u32>) -> std::io::Result<std::os::unix::net::UnixListener> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => std::fs::remove_file(path)?,
            Ok(_) => return Err(std::io::Error::other(format!("{} exists and is not a socket", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = std::os::unix::net::UnixListener::bind(path)?;
        let mode = match gid {
            Some(gid) => {
                std::os::unix::fs::chown(path, Some(0), Some(gid))?;
                0o660
            }
            None => 0o600,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        Ok(listener)
    }

    /// Removes the zone's sockets (`sock/` and everything in it).
    pub fn remove_sockets(&self) {
        let _ = std::fs::remove_dir_all(self.sock_dir());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlinked_outcome_or_log_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let z = ZoneDir::new(d.path().join("z"));
        z.create().unwrap();
        std::os::unix::fs::symlink("/etc/hostname", z.outcome()).unwrap();
        assert_eq!(z.read_outcome(), None);
        std::os::unix::fs::symlink("/etc/hostname", z.console_log()).unwrap();
        assert!(ZoneDir::open_log(&z.console_log()).is_err());
        // The VMM's files are opened without following a planted symlink either.
        assert!(z.open_for_vmm().is_err());
        std::fs::remove_file(z.console_log()).unwrap();
        let (_c, o, _v) = z.open_for_vmm().unwrap();
        assert!(!std::fs::symlink_metadata(z.outcome()).unwrap().file_type().is_symlink());
        drop(o);
        assert_eq!(z.read_outcome(), None, "an empty outcome is no outcome");
    }
}
