//! An OCI image layout in a tar archive (`oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`), as `skopeo copy … oci-archive:` and `docker save`
//! write it.
//!
//! The archive is indexed once (where each blob's bytes lie in the file);
//! every blob read afterwards is bounded by its descriptor's size and checked
//! against its digest. From `index.json` the image's manifest is found: the
//! one manifest, or in an image index the `linux/amd64` one.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::OciError;

/// Largest JSON document read (index, manifest, config).
const MAX_JSON: u64 = 4 << 20;

/// Media types (OCI image spec v1.1 and Docker's v2 schema 2).
pub mod media {
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// OCI image configuration.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// Docker image configuration.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
}

/// How a layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// The compression of a layer media type, or `None` if it is not a layer type we know.
    pub fn of_layer(media_type: &str) -> Option<Self> {
        let oci = ["application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.nondistributable.v1.tar"];
        for base in oci {
            match media_type.strip_prefix(base) {
                Some("") => return Some(Self::None),
                Some("+gzip") => return Some(Self::Gzip),
                Some("+zstd") => return Some(Self::Zstd),
                _ => {}
            }
        }
        match media_type {
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Self::Gzip),
            "application/vnd.docker.image.rootfs.diff.tar" => Some(Self::None),
            _ => None,
        }
    }
}

/// A content descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Its media type.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// For index entries: the platform.
    #[serde(default)]
    pub platform: Option<Platform>,
    /// Annotations (`org.opencontainers.image.ref.name` names the image).
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

/// A platform of an index entry.
#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    /// e.g. `amd64`.
    pub architecture: String,
    /// e.g. `linux`.
    pub os: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    #[serde(default)]
    media_type: Option<String>,
    manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Its media type, when it says.
    #[serde(default)]
    pub media_type: Option<String>,
    /// The configuration blob.
    pub config: Descriptor,
    /// The layers, bottom first.
    pub layers: Vec<Descriptor>,
}

/// The parts of an image configuration a zone uses.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfig {
    /// `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// `linux`.
    #[serde(default)]
    pub os: String,
    /// How the image's process runs.
    #[serde(default)]
    pub config: Option<ProcessConfig>,
}

/// `config` of an image configuration.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ProcessConfig {
    /// `USER` (name, uid, `uid:gid`, `name:group`).
    #[serde(default)]
    pub user: String,
    /// `NAME=value` entries.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// `ENTRYPOINT`.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// `WORKDIR`.
    #[serde(default)]
    pub working_dir: String,
}

/// The hex of a `sha256:` digest, checked.
pub fn sha256_hex(digest: &str) -> Result<&str, OciError> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| OciError::Malformed(format!("digest {digest} is not sha256:<hex>")))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(OciError::Malformed(format!("digest {digest} is not sha256:<64 lowercase hex digits>")));
    }
    Ok(hex)
}

/// Where the blobs are.
#[derive(Debug)]
enum Blobs {
    /// In one tar file: each blob's (offset, size).
    Tar(File, HashMap<String, (u64, u64)>),
    /// An OCI layout directory (`blobs/sha256/<hex>` files).
    Dir(std::path::PathBuf),
}

/// An indexed OCI archive, or an OCI layout directory.
#[derive(Debug)]
pub struct OciArchive {
    blobs: Blobs,
    index: Vec<u8>,
}

impl OciArchive {
    /// Indexes the archive at `path`.
    pub fn open(path: &Path) -> Result<Self, OciError> {
        let file = File::open(path).map_err(|e| OciError::Io(format!("cannot open {}: {e}", path.display())))?;
        let malformed = |e: std::io::Error| OciError::Malformed(format!("{} is not a readable tar archive: {e}", path.display()));
        let mut blobs = HashMap::new();
        let mut index = None;
        let mut layout = false;
        {
            let mut archive = tar::Archive::new(&file);
            for entry in archive.entries().map_err(malformed)? {
                let mut entry = entry.map_err(malformed)?;
                let name = entry.path().map_err(malformed)?.to_string_lossy().trim_start_matches("./").to_owned();
                let size = entry.header().size().map_err(malformed)?;
                if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                    blobs.insert(hex.to_owned(), (entry.raw_file_position(), size));
                } else if name == "index.json" {
                    if size > MAX_JSON {
                        return Err(OciError::Malformed(format!("index.json is {size} bytes, more than {MAX_JSON}")));
                    }
                    let mut v = Vec::new();
                    entry.read_to_end(&mut v).map_err(malformed)?;
                    index = Some(v);
                } else if name == "oci-layout" {
                    layout = true;
                }
            }
        }
        let Some(index) = index else {
            return Err(OciError::Malformed(format!(
                "{} has no index.json: it is not an OCI image layout archive (make one with `skopeo copy docker-archive:… oci-archive:…` or `docker save`)",
                path.display()
            )));
        };
        if !layout {
            return Err(OciError::Malformed(format!("{} has no oci-layout file: it is not an OCI image layout archive", path.display())));
        }
        Ok(Self { blobs: Blobs::Tar(file, blobs), index })
    }

    /// An OCI image layout directory (what a pull writes).
    pub fn open_dir(dir: &Path) -> Result<Self, OciError> {
        let index = std::fs::read(dir.join("index.json"))
            .map_err(|e| OciError::Malformed(format!("{}/index.json: {e}", dir.display())))?;
        if index.len() as u64 > MAX_JSON {
            return Err(OciError::Malformed(format!("index.json is more than {MAX_JSON} bytes")));
        }
        Ok(Self { blobs: Blobs::Dir(dir.to_owned()), index })
    }

    /// A reader of the blob `desc` names: at most its size, checked against
    /// its digest when read to the end (see [`CheckedBlob::finish`]).
    pub fn blob(&self, desc: &Descriptor) -> Result<CheckedBlob<'_>, OciError> {
        let hex = sha256_hex(&desc.digest)?;
        let missing = || OciError::Malformed(format!("blob {} is missing from the image", desc.digest));
        let (inner, size): (Box<dyn Read + '_>, u64) = match &self.blobs {
            Blobs::Tar(file, map) => {
                let &(offset, size) = map.get(hex).ok_or_else(missing)?;
                let mut f = file;
                f.seek(SeekFrom::Start(offset)).map_err(|e| OciError::Io(e.to_string()))?;
                (Box::new(f.take(size)), size)
            }
            Blobs::Dir(dir) => {
                let f = File::open(dir.join("blobs/sha256").join(hex)).map_err(|_| missing())?;
                let size = f.metadata().map_err(|e| OciError::Io(e.to_string()))?.len();
                (Box::new(f.take(size)), size)
            }
        };
        if size != desc.size {
            return Err(OciError::Digest(format!("blob {} is {size} bytes, its descriptor says {}", desc.digest, desc.size)));
        }
        Ok(CheckedBlob { inner, hasher: Sha256::new(), expect: hex.to_owned(), digest: desc.digest.clone() })
    }

    /// A whole JSON blob, bounded.
    fn json<T: serde::de::DeserializeOwned>(&self, desc: &Descriptor, what: &str) -> Result<(T, Vec<u8>), OciError> {
        if desc.size > MAX_JSON {
            return Err(OciError::Malformed(format!("the {what} {} is {} bytes, more than {MAX_JSON}", desc.digest, desc.size)));
        }
        let mut blob = self.blob(desc)?;
        let mut bytes = Vec::new();
        blob.read_to_end(&mut bytes).map_err(|e| OciError::Io(e.to_string()))?;
        blob.finish()?;
        let v = serde_json::from_slice(&bytes).map_err(|e| OciError::Malformed(format!("the {what} {}: {e}", desc.digest)))?;
        Ok((v, bytes))
    }

    /// The name the archive gives its image: `io.containerd.image.name`
    /// (`docker save`) or `org.opencontainers.image.ref.name` (skopeo).
    pub fn ref_name(&self) -> Option<String> {
        let index: Index = serde_json::from_slice(&self.index).ok()?;
        let a = &index.manifests.first()?.annotations;
        a.get("io.containerd.image.name").or_else(|| a.get("org.opencontainers.image.ref.name")).cloned()
    }

    /// The image's manifest (its digest, the manifest) and configuration.
    pub fn image(&self) -> Result<(String, Manifest, ImageConfig), OciError> {
        let index: Index =
            serde_json::from_slice(&self.index).map_err(|e| OciError::Malformed(format!("index.json: {e}")))?;
        if let Some(t) = &index.media_type {
            if t != media::OCI_INDEX {
                return Err(OciError::MediaType(format!("index.json has media type {t}")));
            }
        }
        let mut desc = match index.manifests.as_slice() {
            [one] => one.clone(),
            [] => return Err(OciError::Malformed("index.json lists no image".into())),
            many => return Err(OciError::Malformed(format!("index.json lists {} images; import an archive of one", many.len()))),
        };
        for _ in 0..2 {
            match desc.media_type.as_str() {
                media::OCI_MANIFEST | media::DOCKER_MANIFEST => {
                    let (manifest, _): (Manifest, _) = self.json(&desc, "manifest")?;
                    let (config, _): (ImageConfig, _) = self.json(&manifest.config, "image configuration")?;
                    if !matches!(manifest.config.media_type.as_str(), media::OCI_CONFIG | media::DOCKER_CONFIG) {
                        return Err(OciError::MediaType(format!("image configuration of media type {}", manifest.config.media_type)));
                    }
                    if (!config.os.is_empty() && config.os != "linux") || (!config.architecture.is_empty() && config.architecture != "amd64") {
                        return Err(OciError::Platform(format!("{}/{}", config.os, config.architecture)));
                    }
                    for l in &manifest.layers {
                        if Compression::of_layer(&l.media_type).is_none() {
                            return Err(OciError::MediaType(format!("layer {} of media type {}", l.digest, l.media_type)));
                        }
                    }
                    return Ok((desc.digest, manifest, config));
                }
                media::OCI_INDEX | media::DOCKER_LIST => {
                    let (inner, _): (Index, _) = self.json(&desc, "image index")?;
                    desc = inner
                        .manifests
                        .into_iter()
                        .find(|m| m.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64"))
                        .ok_or_else(|| OciError::Platform("the image index has no linux/amd64 image".into()))?;
                }
                other => return Err(OciError::MediaType(format!("manifest {} of media type {other}", desc.digest))),
            }
        }
        Err(OciError::Malformed("image indexes nest too deep".into()))
    }
}

/// A blob being read: bounded by its size, hashed as it goes.
pub struct CheckedBlob<'a> {
    inner: Box<dyn Read + 'a>,
    hasher: Sha256,
    expect: String,
    digest: String,
}

impl Read for CheckedBlob<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl std::fmt::Debug for CheckedBlob<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedBlob").field("digest", &self.digest).finish_non_exhaustive()
    }
}

impl CheckedBlob<'_> {
    /// Reads what is left and checks the digest.
    pub fn finish(mut self) -> Result<(), OciError> {
        std::io::copy(&mut self, &mut std::io::sink()).map_err(|e| OciError::Io(e.to_string()))?;
        let got = hex::encode(self.hasher.finalize());
        if got != self.expect {
            return Err(OciError::Digest(format!("blob {} has digest sha256:{got}", self.digest)));
        }
        Ok(())
    }
}
