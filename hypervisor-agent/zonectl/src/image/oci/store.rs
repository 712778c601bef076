//! The local image store: one directory per image, by manifest digest.
//!
//! | path | what |
//! |---|---|
//! | `images/<hex>/rootfs.img` | the squashfs root with its verity hash tree appended |
//! | `images/<hex>/image.json` | the [`ImageRecord`] |
//! | `names/<hex of the name>` | the digest a name points at |
//! | `staging/<random>/` | an import in progress (renamed into `images/` when complete) |
//!
//! An import is written in `staging/` and renamed into place whole, so a
//! failed or interrupted import leaves nothing in `images/`; stale staging
//! directories are removed by the next import.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::OciError;
use super::archive::{ProcessConfig, sha256_hex};
use crate::image::verity::VerityParams;

/// Version of [`ImageRecord`].
pub const RECORD_VERSION: u32 = 1;
/// The root file system's file name.
pub const ROOTFS: &str = "rootfs.img";
/// Longest image name.
const MAX_NAME: usize = 255;

/// What the store knows about an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// The manifest digest (`sha256:…`): the image's identity.
    pub digest: String,
    /// The configuration's digest.
    pub config_digest: String,
    /// Names pointing at it.
    #[serde(default)]
    pub names: Vec<String>,
    /// The root's file system (`squashfs`).
    pub format: String,
    /// Its dm-verity parameters.
    pub verity: VerityParams,
    /// Bytes of `rootfs.img` (file system and hash tree).
    pub size: u64,
    /// Layers applied.
    pub layers: usize,
    /// The image's process: entrypoint, command, environment, directory, user.
    pub process: ProcessConfig,
    /// When it was imported.
    pub imported_unix_ms: u64,
    /// How long the conversion took.
    pub convert_ms: u64,
}

/// Checks an image name: printable ASCII without spaces, at most 255 bytes.
pub fn check_name(name: &str) -> Result<(), OciError> {
    if name.is_empty() || name.len() > MAX_NAME || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(OciError::Store(format!("image name {name:?} must be 1-{MAX_NAME} printable characters without spaces")));
    }
    Ok(())
}

/// A store at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// An import being written.
#[derive(Debug)]
pub struct Staging {
    dir: tempfile::TempDir,
}

impl Staging {
    /// The staging directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Creates the root file system file.
    pub fn create_rootfs(&self) -> Result<File, OciError> {
        std::fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(self.dir.path().join(ROOTFS))
            .map_err(|e| OciError::Io(format!("cannot create {ROOTFS} in {}: {e}", self.dir.path().display())))
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> OciError {
    move |e| OciError::Store(format!("{what}: {e}"))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io(format!("cannot write {}", tmp.display())))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io(format!("cannot write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("cannot rename {} into place", tmp.display())))
}

impl Store {
    /// The store at `root` (created when first written).
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// The default store: `$ZONE_IMAGE_STORE`, else `/var/lib/zone-attestor/images`
    /// for root, else `$XDG_DATA_HOME` (or `~/.local/share`)`/zone-attestor/images`.
    pub fn default_root() -> PathBuf {
        if let Some(p) = std::env::var_os("ZONE_IMAGE_STORE") {
            return PathBuf::from(p);
        }
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return PathBuf::from("/var/lib/zone-attestor/images");
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."));
        data.join("zone-attestor/images")
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    fn names(&self) -> PathBuf {
        self.root.join("names")
    }

    /// The directory of the image with manifest `digest`.
    pub fn dir_of(&self, digest: &str) -> Result<PathBuf, OciError> {
        Ok(self.images().join(sha256_hex(digest)?))
    }

    /// A new staging directory (removing those of imports that never finished).
    pub fn staging(&self) -> Result<Staging, OciError> {
        let staging = self.root.join("staging");
        let _ = std::fs::remove_dir_all(&staging);
        for d in [&staging, &self.images(), &self.names()] {
            std::fs::create_dir_all(d).map_err(io(format!("cannot create {}", d.display())))?;
        }
        let dir = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(&staging)
            .map_err(io(format!("cannot create a staging directory in {}", staging.display())))?;
        Ok(Staging { dir })
    }

    /// Moves a finished import into place with its record.
    pub fn commit(&self, staging: Staging, record: &ImageRecord) -> Result<ImageRecord, OciError> {
        let json = serde_json::to_vec_pretty(record).map_err(|e| OciError::Store(e.to_string()))?;
        write_atomic(&staging.path().join("image.json"), &json)?;
        let target = self.dir_of(&record.digest)?;
        let path = staging.dir.keep();
        if let Err(e) = std::fs::rename(&path, &target) {
            let _ = std::fs::remove_dir_all(&path);
            return Err(OciError::Store(format!("cannot move the import into {}: {e}", target.display())));
        }
        Ok(record.clone())
    }

    /// The image with manifest `digest`, if stored.
    pub fn get_by_digest(&self, digest: &str) -> Result<Option<ImageRecord>, OciError> {
        let path = self.dir_of(digest)?.join("image.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(OciError::Store(format!("cannot read {}: {e}", path.display()))),
        };
        let mut r: ImageRecord = serde_json::from_slice(&bytes)
            .map_err(|e| OciError::Store(format!("{} is damaged ({e}); remove the image and import it again", path.display())))?;
        r.names = self.names_of(&r.digest);
        Ok(Some(r))
    }

    fn name_file(&self, name: &str) -> PathBuf {
        self.names().join(hex::encode(name))
    }

    fn names_of(&self, digest: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.names())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|d| d.trim() == digest))
            .filter_map(|e| hex::decode(e.file_name().to_string_lossy().as_bytes()).ok())
            .filter_map(|b| String::from_utf8(b).ok())
            .collect();
        names.sort();
        names
    }

    /// Points `name` at `digest` (moving it from another image).
    pub fn tag(&self, digest: &str, name: &str) -> Result<(), OciError> {
        check_name(name)?;
        std::fs::create_dir_all(self.names()).map_err(io(format!("cannot create {}", self.names().display())))?;
        write_atomic(&self.name_file(name), digest.as_bytes())
    }

    /// Every stored image, by name then digest.
    pub fn list(&self) -> Result<Vec<ImageRecord>, OciError> {
        let mut out = Vec::new();
        let dir = match std::fs::read_dir(self.images()) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(OciError::Store(format!("cannot list {}: {e}", self.images().display()))),
        };
        for e in dir.flatten() {
            let digest = format!("sha256:{}", e.file_name().to_string_lossy());
            if let Ok(Some(r)) = self.get_by_digest(&digest) {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.names.cmp(&b.names).then(a.digest.cmp(&b.digest)));
        Ok(out)
    }

    /// The image `reference` names: a name, `sha256:<hex>`, or a unique
    /// prefix of at least 12 hex digits of the digest.
    pub fn resolve(&self, reference: &str) -> Result<ImageRecord, OciError> {
        if let Ok(d) = std::fs::read_to_string(self.name_file(reference)) {
            if let Some(r) = self.get_by_digest(d.trim())? {
                return Ok(r);
            }
        }
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        if hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut matches: Vec<ImageRecord> =
                self.list()?.into_iter().filter(|r| r.digest["sha256:".len()..].starts_with(hex)).collect();
            if matches.len() > 1 {
                return Err(OciError::Store(format!("{reference} matches {} images; give more of the digest", matches.len())));
            }
            if let Some(r) = matches.pop() {
                return Ok(r);
            }
        }
        Err(OciError::Store(format!(
            "no image {reference} in {} (zonectl image ls lists them; zonectl image import ARCHIVE adds one)",
            self.root.display()
        )))
    }

    /// The root file system of a stored image.
    pub fn rootfs(&self, record: &ImageRecord) -> Result<PathBuf, OciError> {
        Ok(self.dir_of(&record.digest)?.join(ROOTFS))
    }

    /// Removes an image and its names.
    pub fn remove(&self, reference: &str) -> Result<ImageRecord, OciError> {
        let r = self.resolve(reference)?;
        for n in &r.names {
            let _ = std::fs::remove_file(self.name_file(n));
        }
        let dir = self.dir_of(&r.digest)?;
        std::fs::remove_dir_all(&dir).map_err(io(format!("cannot remove {}", dir.display())))?;
        Ok(r)
    }
}
