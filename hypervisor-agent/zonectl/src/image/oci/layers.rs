//! Layers applied in order into one tree, as an OCI runtime's unpacker
//! would leave the root (image spec, "Applying changesets"):
//!
//! - an entry adds or replaces the path (a directory replacing a directory
//!   keeps its children; anything else replacing a directory removes them);
//! - `.wh.NAME` removes `NAME` (and what is under it) from the layers below;
//! - `.wh..wh..opq` in a directory removes what the layers below had in it;
//! - a hard link becomes a copy of its target's file (squashfs keeps no link
//!   counts across the tree we write; the bytes and metadata are the same);
//! - a parent directory that no entry names is created `0755 root:root`.
//!
//! Nothing is written to the host's file system by path: file contents go
//! to an anonymous spool file and the tree is an in-memory map, so no entry
//! can land outside the root. Paths with `..` are refused; symlinks are kept
//! as data (absolute ones resolve inside the zone), and an entry whose parent
//! is a symlink is refused rather than followed. Bounds: total bytes of file
//! contents, number of entries, and path and link lengths.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::OciError;

/// The whiteout prefix.
const WHITEOUT: &str = ".wh.";
/// The opaque-directory marker.
const OPAQUE: &str = ".wh..wh..opq";
/// Longest path or link target kept.
const MAX_PATH: usize = 4096;

/// Bounds on what a set of layers may expand to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of file contents, all layers together (overwritten files count).
    pub max_bytes: u64,
    /// Entries, all layers together.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_bytes: 16 << 30, max_entries: 1_000_000 }
    }
}

/// What a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file: `len` bytes at `offset` of the spool.
    File {
        /// Where its bytes start in the spool.
        offset: u64,
        /// How many.
        len: u64,
    },
    /// A symbolic link.
    Symlink(String),
    /// A character device.
    Char(u32, u32),
    /// A block device.
    Block(u32, u32),
    /// A named pipe.
    Fifo,
}

/// One path of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// What it is.
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky (`0o7777`).
    pub mode: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds).
    pub mtime: u32,
}

impl Node {
    fn implicit_dir() -> Self {
        Self { kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0, mtime: 0 }
    }
}

/// The flattened root: paths relative to `/` (the root itself is `""`),
/// file contents in a spool file.
#[derive(Debug)]
pub struct Tree {
    /// Every path, sorted.
    pub nodes: BTreeMap<String, Node>,
    spool: Arc<File>,
    spool_len: u64,
    entries: u64,
    limits: Limits,
}

/// A pending entry of the layer being applied.
enum Pending {
    Node(String, Node),
    HardLink { path: String, target: String, mode: u16, uid: u32, gid: u32, mtime: u32 },
}

/// `path` as a key: no leading `/` or `./`, no `.` components, no trailing
/// `/`; `..` and NUL refused.
pub fn normalize(path: &str) -> Result<String, OciError> {
    if path.len() > MAX_PATH || path.contains('\0') {
        return Err(OciError::Layer(format!("path {:?}… is too long or holds a NUL", path.chars().take(64).collect::<String>())));
    }
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(OciError::Layer(format!("path {path} leaves the root (`..`)"))),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

impl Tree {
    /// An empty root (`0755 root:root`), spooling file contents to an
    /// unlinked temporary file in `spool_dir`.
    pub fn new(spool_dir: &std::path::Path, limits: Limits) -> Result<Self, OciError> {
        let spool = tempfile::tempfile_in(spool_dir)
            .map_err(|e| OciError::Io(format!("cannot create a spool file in {}: {e}", spool_dir.display())))?;
        let mut nodes = BTreeMap::new();
        nodes.insert(String::new(), Node::implicit_dir());
        Ok(Self { nodes, spool: Arc::new(spool), spool_len: 0, entries: 0, limits })
    }

    /// The spool, for reading file contents back.
    pub fn spool(&self) -> Arc<File> {
        Arc::clone(&self.spool)
    }

    /// Removes `path` and everything under it.
    fn remove_tree(&mut self, path: &str) {
        self.nodes.remove(path);
        self.remove_children(path);
    }

    /// Removes everything under `dir` (not `dir` itself).
    fn remove_children(&mut self, dir: &str) {
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    /// Makes sure every ancestor of `path` is a directory (creating missing
    /// ones); a symlink or other non-directory on the way is refused.
    fn ensure_parents(&mut self, path: &str) -> Result<(), OciError> {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let dir = &path[..at + i];
            match self.nodes.get(dir) {
                None => {
                    self.nodes.insert(dir.to_owned(), Node::implicit_dir());
                }
                Some(n) if n.kind == Kind::Dir => {}
                Some(n) if matches!(n.kind, Kind::Symlink(_)) => {
                    return Err(OciError::Layer(format!("{path} lies under the symlink /{dir}; the layer must name the real path")));
                }
                Some(_) => return Err(OciError::Layer(format!("{path} lies under /{dir}, which is not a directory"))),
            }
            at += i + 1;
        }
        Ok(())
    }

    fn insert(&mut self, path: String, node: Node) -> Result<(), OciError> {
        if path.is_empty() {
            if node.kind != Kind::Dir {
                return Err(OciError::Layer("the root is not a directory".into()));
            }
            self.nodes.insert(path, node);
            return Ok(());
        }
        self.ensure_parents(&path)?;
        let was_dir = self.nodes.get(&path).is_some_and(|n| n.kind == Kind::Dir);
        if was_dir && node.kind != Kind::Dir {
            self.remove_children(&path);
        }
        self.nodes.insert(path, node);
        Ok(())
    }

    fn spool_from(&mut self, from: &mut impl Read, len: u64) -> Result<u64, OciError> {
        let total = self.spool_len.checked_add(len).filter(|&t| t <= self.limits.max_bytes).ok_or_else(|| {
            OciError::TooLarge(format!("the layers hold more than {} bytes of files", self.limits.max_bytes))
        })?;
        let offset = self.spool_len;
        let mut w = std::io::BufWriter::with_capacity(256 * 1024, SpoolWriter { file: &self.spool, at: offset });
        let copied = std::io::copy(&mut from.take(len), &mut w).map_err(|e| OciError::Layer(format!("reading a layer: {e}")))?;
        w.flush().map_err(|e| OciError::Io(format!("writing the spool: {e}")))?;
        if copied != len {
            return Err(OciError::Layer(format!("a file's data ends after {copied} of {len} bytes (truncated layer)")));
        }
        self.spool_len = total;
        Ok(offset)
    }

    /// Applies one layer, a plain tar stream (decompress first).
    pub fn apply(&mut self, layer: impl Read) -> Result<(), OciError> {
        let bad = |e: std::io::Error| OciError::Layer(format!("not a readable tar stream: {e}"));
        let mut archive = tar::Archive::new(layer);
        let mut pending = Vec::new();
        let mut whiteouts = Vec::new();
        let mut opaque = Vec::new();
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(OciError::TooLarge(format!("the layers hold more than {} entries", self.limits.max_entries)));
            }
            let raw = entry.path().map_err(bad)?.to_string_lossy().into_owned();
            let path = normalize(&raw)?;
            let name = path.rsplit('/').next().unwrap_or("");
            if name == OPAQUE {
                opaque.push(parent_of(&path).to_owned());
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT) {
                if hidden.is_empty() {
                    return Err(OciError::Layer(format!("whiteout {raw} names nothing")));
                }
                let parent = parent_of(&path);
                whiteouts.push(if parent.is_empty() { hidden.to_owned() } else { format!("{parent}/{hidden}") });
                continue;
            }
            let h = entry.header();
            let meta = (
                u16::try_from(h.mode().map_err(bad)? & 0o7777).unwrap_or(0o644),
                u32::try_from(h.uid().map_err(bad)?).map_err(|_| OciError::Layer(format!("{raw}: uid out of range")))?,
                u32::try_from(h.gid().map_err(bad)?).map_err(|_| OciError::Layer(format!("{raw}: gid out of range")))?,
                u32::try_from(h.mtime().map_err(bad)?).unwrap_or(u32::MAX),
            );
            let (mode, uid, gid, mtime) = meta;
            let link = || -> Result<String, OciError> {
                let l = entry.link_name().map_err(bad)?.map(|l| l.to_string_lossy().into_owned()).unwrap_or_default();
                if l.is_empty() || l.len() > MAX_PATH || l.contains('\0') {
                    return Err(OciError::Layer(format!("{raw}: link target is empty, too long or holds a NUL")));
                }
                Ok(l)
            };
            let device = |h: &tar::Header| -> Result<(u32, u32), OciError> {
                Ok((h.device_major().map_err(bad)?.unwrap_or(0), h.device_minor().map_err(bad)?.unwrap_or(0)))
            };
            let kind = match h.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let len = h.size().map_err(bad)?;
                    let offset = self.spool_from(&mut entry, len)?;
                    Kind::File { offset, len }
                }
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Symlink => Kind::Symlink(link()?),
                tar::EntryType::Link => {
                    let target = normalize(&link()?)?;
                    pending.push(Pending::HardLink { path, target, mode, uid, gid, mtime });
                    continue;
                }
                tar::EntryType::Char => {
                    let (ma, mi) = device(h)?;
                    Kind::Char(ma, mi)
                }
                tar::EntryType::Block => {
                    let (ma, mi) = device(h)?;
                    Kind::Block(ma, mi)
                }
                tar::EntryType::Fifo => Kind::Fifo,
                other => return Err(OciError::Layer(format!("{raw}: tar entry type {other:?} is not supported"))),
            };
            pending.push(Pending::Node(path, Node { kind, mode, uid, gid, mtime }));
        }
        // Whiteouts and opaque markers apply to the layers below only.
        for dir in &opaque {
            self.remove_children(dir);
        }
        for w in &whiteouts {
            self.remove_tree(w);
        }
        for p in pending {
            match p {
                Pending::Node(path, node) => self.insert(path, node)?,
                Pending::HardLink { path, target, mode, uid, gid, mtime } => {
                    let kind = match self.nodes.get(&target) {
                        Some(Node { kind: k @ Kind::File { .. }, .. }) => k.clone(),
                        _ => return Err(OciError::Layer(format!("hard link /{path} → /{target}: no such regular file"))),
                    };
                    self.insert(path, Node { kind, mode, uid, gid, mtime })?;
                }
            }
        }
        Ok(())
    }

    /// The bytes of a file node.
    pub fn reader(&self, offset: u64, len: u64) -> SpoolReader {
        SpoolReader { file: Arc::clone(&self.spool), at: offset, end: offset + len }
    }
}

struct SpoolWriter<'a> {
    file: &'a File,
    at: u64,
}

impl Write for SpoolWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A file's bytes in the spool.
#[derive(Debug)]
pub struct SpoolReader {
    file: Arc<File>,
    at: u64,
    end: u64,
}

impl Read for SpoolReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = usize::try_from(self.end - self.at).unwrap_or(usize::MAX);
        let n = buf.len().min(left);
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.at)?;
        self.at += got as u64;
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar stream from (path, type, data or link target).
    fn layer(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for &(path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
            h.set_uid(1000);
            h.set_gid(1000);
            h.set_mtime(1_700_000_000);
            match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    h.set_size(0);
                    b.append_link(&mut h, path, data).unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, data.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn content(t: &Tree, path: &str) -> Option<String> {
        match &t.nodes.get(path)?.kind {
            Kind::File { offset, len } => {
                let mut s = String::new();
                t.reader(*offset, *len).read_to_string(&mut s).unwrap();
                Some(s)
            }
            Kind::Symlink(l) => Some(format!("-> {l}")),
            k => Some(format!("{k:?}")),
        }
    }

    use tar::EntryType as E;

    #[test]
    fn whiteouts_opaque_dirs_links_and_replacements() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tree::new(dir.path(), Limits::default()).unwrap();
        t.apply(&layer(&[
            ("etc/", E::Directory, ""),
            ("etc/a", E::Regular, "a1"),
            ("etc/b", E::Regular, "b1"),
            ("var/lib/x", E::Regular, "x"),
            ("opt/d/", E::Directory, ""),
            ("opt/d/old", E::Regular, "old"),
            ("bin", E::Symlink, "usr/bin"),
            ("replace-me/", E::Directory, ""),
            ("replace-me/child", E::Regular, "c"),
        ])[..])
        .unwrap();
        assert_eq!(t.nodes.get("var").map(|n| n.mode), Some(0o755), "implicit parent");
        t.apply(&layer(&[
            ("etc/.wh.a", E::Regular, ""),
            ("opt/d/.wh..wh..opq", E::Regular, ""),
            ("opt/d/new", E::Regular, "new"),
            ("etc/b", E::Regular, "b2"),
            ("etc/hard", E::Link, "etc/b"),
            ("replace-me", E::Regular, "now a file"),
            ("./var/.wh.lib", E::Regular, ""),
        ])[..])
        .unwrap();
        assert_eq!(content(&t, "etc/a"), None, "whited out");
        assert_eq!(content(&t, "etc/b").as_deref(), Some("b2"), "replaced");
        assert_eq!(content(&t, "etc/hard").as_deref(), Some("b2"), "hard link to this layer's file");
        assert_eq!(content(&t, "opt/d/old"), None, "opaque dir hides the lower layer");
        assert_eq!(content(&t, "opt/d/new").as_deref(), Some("new"), "but keeps its own layer's entries");
        assert_eq!(content(&t, "replace-me").as_deref(), Some("now a file"));
        assert_eq!(content(&t, "replace-me/child"), None, "a file replacing a directory removes its children");
        assert_eq!(content(&t, "var/lib/x"), None, "a whited-out directory goes with its children");
        assert!(t.nodes.contains_key("var"));
        assert_eq!(content(&t, "bin").as_deref(), Some("-> usr/bin"));
    }

    #[test]
    fn escapes_and_bombs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tree::new(dir.path(), Limits::default()).unwrap();
        // `..` (the tar crate's builder refuses to write it, so patch the raw name).
        let mut bytes = layer(&[("aa/bb/cc", E::Regular, "x")]);
        bytes[..8].copy_from_slice(b"../../cc");
        let mut h = tar::Header::from_byte_slice(&bytes[..512]).clone();
        h.set_cksum();
        bytes[..512].copy_from_slice(h.as_bytes());
        let e = t.apply(&bytes[..]).unwrap_err();
        assert!(e.to_string().contains("leaves the root"), "{e}");
        // An entry under a symlink is not followed.
        let mut t = Tree::new(dir.path(), Limits::default()).unwrap();
        t.apply(&layer(&[("lib", E::Symlink, "/etc")])[..]).unwrap();
        let e = t.apply(&layer(&[("lib/passwd", E::Regular, "x")])[..]).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        // A hard link to nothing.
        let e = t.apply(&layer(&[("a", E::Link, "nope")])[..]).unwrap_err();
        assert!(e.to_string().contains("hard link"), "{e}");
        // Too many bytes, too many entries.
        let mut t = Tree::new(dir.path(), Limits { max_bytes: 10, max_entries: 100 }).unwrap();
        let e = t.apply(&layer(&[("big", E::Regular, "0123456789a")])[..]).unwrap_err();
        assert!(matches!(e, OciError::TooLarge(_)), "{e}");
        let mut t = Tree::new(dir.path(), Limits { max_bytes: 1 << 20, max_entries: 2 }).unwrap();
        let e = t.apply(&layer(&[("a", E::Regular, ""), ("b", E::Regular, ""), ("c", E::Regular, "")])[..]).unwrap_err();
        assert!(matches!(e, OciError::TooLarge(_)), "{e}");
        // A truncated stream.
        let mut t = Tree::new(dir.path(), Limits::default()).unwrap();
        let full = layer(&[("f", E::Regular, &"y".repeat(5000))]);
        assert!(t.apply(&full[..2048]).is_err());
    }
}
