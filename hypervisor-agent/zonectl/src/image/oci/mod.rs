//! OCI images as zone roots: an image (an OCI layout archive) is flattened
//! layer by layer ([`layers`]), written as a squashfs file system
//! ([`squashfs`]) and given a dm-verity hash tree (`image::verity`), then
//! kept in a local store by manifest digest ([`store`]). The same image
//! always gives the same root bytes and verity root hash: entries are
//! written in path order with the layers' own owners, modes and mtimes, the
//! file system's own time is 0, and the verity salt is the manifest digest.

pub mod archive;
pub mod layers;
pub mod pull;
pub mod squashfs;
pub mod store;

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use archive::{Compression, OciArchive};

/// Why an image could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The host's I/O failed.
    #[error("{0}")]
    Io(String),
    /// The archive or a document in it is not what the OCI image spec says.
    #[error("malformed image: {0}")]
    Malformed(String),
    /// A media type this importer does not know.
    #[error("unsupported media type: {0} (zones take OCI or Docker v2 images with tar, tar+gzip or tar+zstd layers)")]
    MediaType(String),
    /// Not a linux/amd64 image.
    #[error("unsupported platform: {0}; zones run linux/amd64 images")]
    Platform(String),
    /// A blob's bytes do not match its digest or size.
    #[error("digest mismatch: {0} (the archive is corrupt or was altered)")]
    Digest(String),
    /// A layer's contents cannot be applied.
    #[error("layer: {0}")]
    Layer(String),
    /// Past a bound.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The store cannot be used.
    #[error("image store: {0}")]
    Store(String),
    /// The registry refused, failed or timed out.
    #[error("registry: {0}")]
    Registry(String),
    /// The registry (or its token realm) refused access.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
}

/// What an import reports as it goes.
pub trait Progress {
    /// Layer `index` (0-based) of `count`, of `bytes` compressed, is being applied.
    fn layer(&mut self, index: usize, count: usize, bytes: u64);
    /// The root file system is being written.
    fn writing(&mut self, files: usize);
}

/// Reports nothing.
#[derive(Debug)]
pub struct Quiet;

impl Progress for Quiet {
    fn layer(&mut self, _: usize, _: usize, _: u64) {}
    fn writing(&mut self, _: usize) {}
}

/// Imports the OCI archive at `path` into `store`, unless the store already
/// has its manifest; names it `name` when given (or by the archive's
/// `org.opencontainers.image.ref.name`). Returns the stored image and
/// whether it was converted now.
pub fn import(
    path: &Path,
    name: Option<&str>,
    store: &store::Store,
    limits: layers::Limits,
    progress: &mut dyn Progress,
) -> Result<(store::ImageRecord, bool), OciError> {
    import_from(OciArchive::open(path)?, name, store, limits, progress)
}

/// [`import`] from an opened archive or layout directory.
pub fn import_from(
    archive: OciArchive,
    name: Option<&str>,
    store: &store::Store,
    limits: layers::Limits,
    progress: &mut dyn Progress,
) -> Result<(store::ImageRecord, bool), OciError> {
    let started = Instant::now();
    let (digest, manifest, config) = archive.image()?;
    let name = name.map(str::to_owned).or_else(|| archive.ref_name());
    if let Some(n) = &name {
        store::check_name(n)?;
    }
    if let Some(mut existing) = store.get_by_digest(&digest)? {
        if let Some(n) = &name {
            store.tag(&digest, n)?;
            existing = store.get_by_digest(&digest)?.unwrap_or(existing);
        }
        return Ok((existing, false));
    }
    let staging = store.staging()?;
    let mut tree = layers::Tree::new(staging.path(), limits)?;
    let count = manifest.layers.len();
    for (i, layer) in manifest.layers.iter().enumerate() {
        progress.layer(i, count, layer.size);
        let compression = Compression::of_layer(&layer.media_type)
            .ok_or_else(|| OciError::MediaType(format!("layer {} of media type {}", layer.digest, layer.media_type)))?;
        let mut blob = archive.blob(layer)?;
        {
            let stream: Box<dyn Read + '_> = match compression {
                Compression::None => Box::new(&mut blob),
                // Every member: writers such as umoci's produce multi-member gzip streams.
                Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut blob)),
                Compression::Zstd => Box::new(
                    zstd::stream::read::Decoder::new(&mut blob)
                        .map_err(|e| OciError::Layer(format!("layer {}: zstd: {e}", layer.digest)))?,
                ),
            };
            tree.apply(stream).map_err(|e| match e {
                OciError::Layer(m) => OciError::Layer(format!("{}: {m}", layer.digest)),
                other => other,
            })?;
        }
        blob.finish()?;
    }
    progress.writing(tree.nodes.len());
    let hex = archive::sha256_hex(&digest)?.to_owned();
    let mut rootfs = staging.create_rootfs()?;
    squashfs::write(&tree, &mut rootfs)?;
    drop(tree);
    let salt = hex::decode(&hex).map_err(|e| OciError::Malformed(e.to_string()))?;
    let verity = crate::image::verity::append_tree(&mut rootfs, &salt)
        .map_err(|e| OciError::Io(format!("computing the verity hash tree: {e}")))?;
    rootfs.sync_all().map_err(|e| OciError::Io(e.to_string()))?;
    let record = store::ImageRecord {
        version: store::RECORD_VERSION,
        digest: digest.clone(),
        config_digest: manifest.config.digest.clone(),
        names: Vec::new(),
        format: "squashfs".into(),
        verity,
        size: rootfs.metadata().map_err(|e| OciError::Io(e.to_string()))?.len(),
        layers: count,
        process: config.config.unwrap_or_default(),
        imported_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        convert_ms: started.elapsed().as_millis() as u64,
    };
    let stored = store.commit(staging, &record)?;
    if let Some(n) = &name {
        store.tag(&digest, n)?;
    }
    Ok((store.get_by_digest(&digest)?.unwrap_or(stored), true))
}
