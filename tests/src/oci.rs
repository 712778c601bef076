//! OCI image layout archives built from a description, for the image tests:
//! layers of any entries (files, directories, symlinks, hard links, device
//! nodes, FIFOs, whiteouts, opaque markers), compressed or not, an image
//! configuration, a manifest and `index.json`, packed as a tar the way
//! `skopeo copy … oci-archive:` writes it.

use sha2::{Digest, Sha256};

/// One entry of a layer.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A directory (path, mode).
    Dir(&'static str, u32),
    /// A regular file (path, mode, contents).
    File(&'static str, u32, Vec<u8>),
    /// A regular file owned by (uid, gid).
    Owned(&'static str, u32, u64, u64, Vec<u8>),
    /// A symlink (path, target).
    Symlink(&'static str, &'static str),
    /// A hard link (path, target path).
    HardLink(&'static str, &'static str),
    /// A character device (path, major, minor).
    Char(&'static str, u32, u32),
    /// A FIFO.
    Fifo(&'static str),
    /// `.wh.<name>` in the entry's directory (path of what it hides).
    Whiteout(&'static str),
    /// `.wh..wh..opq` in a directory.
    Opaque(&'static str),
    /// Raw tar header name bytes (for malformed layers) and contents.
    RawName(&'static [u8], Vec<u8>),
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// gzip as several concatenated members (as umoci and pigz write it).
    GzipMembers,
    /// zstd.
    Zstd,
}

/// A layer tar stream.
pub fn layer_tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        match e {
            Entry::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            Entry::File(p, mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, &data[..]).unwrap();
            }
            Entry::Owned(p, mode, uid, gid, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, &data[..]).unwrap();
            }
            Entry::Symlink(p, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                b.append_link(&mut h, p, t).unwrap();
            }
            Entry::HardLink(p, t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                b.append_link(&mut h, p, t).unwrap();
            }
            Entry::Char(p, ma, mi) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_mode(0o666);
                h.set_device_major(*ma).unwrap();
                h.set_device_minor(*mi).unwrap();
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            Entry::Fifo(p) => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_mode(0o644);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            Entry::Whiteout(p) => {
                let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
                let wh = if dir.is_empty() { format!(".wh.{name}") } else { format!("{dir}/.wh.{name}") };
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                b.append_data(&mut h, wh, &[][..]).unwrap();
            }
            Entry::Opaque(dir) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                b.append_data(&mut h, format!("{dir}/.wh..wh..opq"), &[][..]).unwrap();
            }
            Entry::RawName(name, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                h.as_old_mut().name[..name.len()].copy_from_slice(name);
                h.set_cksum();
                b.append(&h, &data[..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// `bytes` compressed as `c` (gzip with a fixed header, so the same layer
/// gives the same blob).
pub fn compress(bytes: &[u8], c: Compression) -> Vec<u8> {
    use std::io::Write;
    match c {
        Compression::None => bytes.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::default());
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(bytes, 3).unwrap(),
        Compression::GzipMembers => {
            let mut out = Vec::new();
            for chunk in bytes.chunks(bytes.len().div_ceil(3).max(1)) {
                out.extend(compress(chunk, Compression::Gzip));
            }
            out
        }
    }
}

fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// An image being described.
#[derive(Debug, Clone)]
pub struct Image {
    /// Layer blobs (already compressed), their media types and diff ids
    /// (digests of the uncompressed tars), bottom first.
    pub layers: Vec<(Vec<u8>, String, String)>,
    /// The image configuration's `config` object.
    pub process: serde_json::Value,
    /// `org.opencontainers.image.ref.name` of the index entry.
    pub ref_name: Option<String>,
}

impl Image {
    /// No layers, no process, no name.
    pub fn new() -> Self {
        Self { layers: Vec::new(), process: serde_json::json!({}), ref_name: None }
    }

    /// Adds a layer of `entries` compressed with `c`.
    pub fn layer(mut self, entries: &[Entry], c: Compression) -> Self {
        let media = match c {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip | Compression::GzipMembers => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        };
        let tar = layer_tar(entries);
        self.layers.push((compress(&tar, c), media.into(), digest(&tar)));
        self
    }

    /// The archive's files: (path, bytes), with `manifest` and `config`
    /// blobs derived from the layers unless `tweak` changes them.
    pub fn files(&self, tweak: &dyn Fn(&mut serde_json::Value, &mut serde_json::Value)) -> Vec<(String, Vec<u8>)> {
        let mut config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": self.process,
            "rootfs": { "type": "layers", "diff_ids": self.layers.iter().map(|l| l.2.clone()).collect::<Vec<_>>() },
        });
        let mut layers = Vec::new();
        let mut files = vec![("oci-layout".to_owned(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec())];
        for (blob, media, _) in &self.layers {
            layers.push(serde_json::json!({ "mediaType": media, "digest": digest(blob), "size": blob.len() }));
            files.push((format!("blobs/sha256/{}", &digest(blob)[7..]), blob.clone()));
        }
        let mut manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": "", "size": 0 },
            "layers": layers,
        });
        tweak(&mut manifest, &mut config);
        let config_bytes = serde_json::to_vec(&config).unwrap();
        if manifest["config"]["digest"] == "" {
            manifest["config"]["digest"] = digest(&config_bytes).into();
            manifest["config"]["size"] = config_bytes.len().into();
        }
        files.push((format!("blobs/sha256/{}", &digest(&config_bytes)[7..]), config_bytes));
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
        let mut entry = serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(&manifest_bytes),
            "size": manifest_bytes.len(),
        });
        if let Some(n) = &self.ref_name {
            entry["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": n });
        }
        files.push((format!("blobs/sha256/{}", &digest(&manifest_bytes)[7..]), manifest_bytes));
        let index = serde_json::json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [entry] });
        files.push(("index.json".into(), serde_json::to_vec(&index).unwrap()));
        files
    }

    /// The manifest digest of the untweaked archive.
    pub fn manifest_digest(&self) -> String {
        let files = self.files(&|_, _| {});
        let index: serde_json::Value = serde_json::from_slice(&files.last().unwrap().1).unwrap();
        index["manifests"][0]["digest"].as_str().unwrap().to_owned()
    }

    /// The OCI archive (a tar of the layout).
    pub fn archive(&self) -> Vec<u8> {
        Self::pack(&self.files(&|_, _| {}))
    }

    /// Packs layout files into a tar.
    pub fn pack(files: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, bytes) in files {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            h.set_size(bytes.len() as u64);
            h.set_mtime(0);
            b.append_data(&mut h, path, &bytes[..]).unwrap();
        }
        b.into_inner().unwrap()
    }
}

impl Default for Image {
    fn default() -> Self {
        Self::new()
    }
}

/// `/app/big.bin` of [`testhost_image`]: 1 MiB of xorshift noise.
pub fn big_bin() -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..1usize << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The image the test host boots: busybox (from `busybox`), a user `app`,
/// data files, and a second layer that whites out, makes a directory opaque,
/// adds a hard link and a file; entrypoint `/bin/sh -c`, a cmd, env,
/// working directory `/app`, user `app`.
pub fn testhost_image(busybox: &[u8]) -> Image {
    let mut base = vec![
        Entry::Dir("bin/", 0o755),
        Entry::File("bin/busybox", 0o755, busybox.to_vec()),
        Entry::Dir("etc/", 0o755),
        Entry::File("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n".to_vec()),
        Entry::File("etc/group", 0o644, b"root:x:0:\napp:x:1000:\n".to_vec()),
        Entry::Dir("app/", 0o755),
        Entry::Owned("app/data.txt", 0o644, 1000, 1000, b"image-data-v1\n".to_vec()),
        Entry::Dir("old/", 0o755),
        Entry::File("old/gone.txt", 0o644, b"should be whited out\n".to_vec()),
        Entry::Dir("cfg/", 0o755),
        Entry::File("cfg/lower.txt", 0o644, b"hidden by the opaque dir\n".to_vec()),
        Entry::Dir("home/", 0o755),
        Entry::Dir("tmp/", 0o1777),
        Entry::Dir("proc/", 0o555),
        Entry::Dir("sys/", 0o555),
        Entry::Dir("dev/", 0o755),
        // 1 MiB of incompressible bytes: stored as they are, so a test can
        // find (and flip) them in the root disk.
        Entry::File("app/big.bin", 0o644, big_bin()),
    ];
    for tool in ["sh", "cat", "echo", "id", "pwd", "env", "ls", "sha256sum", "dd", "head", "wc", "touch", "rm", "grep", "cut", "test", "sync", "sleep"] {
        base.push(Entry::Symlink(Box::leak(format!("bin/{tool}").into_boxed_str()), "busybox"));
    }
    let mut img = Image::new().layer(&base, Compression::Gzip).layer(
        &[
            Entry::Whiteout("old"),
            Entry::Opaque("cfg"),
            Entry::File("cfg/upper.txt", 0o644, b"from the upper layer\n".to_vec()),
            Entry::HardLink("app/data-link.txt", "app/data.txt"),
            Entry::File("etc/motd", 0o644, b"layer-two\n".to_vec()),
        ],
        Compression::Zstd,
    );
    img.process = serde_json::json!({
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo image-cmd-ran; echo uid=$(id -u) gid=$(id -g); echo pwd=$(pwd); echo greeting=$GREETING; cat data.txt"],
        "Env": ["PATH=/bin", "GREETING=hello from the image"],
        "WorkingDir": "/app",
        "User": "app",
    });
    img.ref_name = Some("zone-test:1".into());
    img
}
