//! A deterministic writer for the `newc` cpio format the Linux initramfs
//! loader reads (`Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Entries are written in byte order of their paths with inode numbers
//! assigned in that order, owner 0:0 and a fixed mtime, so the archive depends
//! only on the paths, modes and contents given.

use std::io::{self, Write};

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// What an archive entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir,
    /// A regular file with its contents.
    File(Vec<u8>),
    /// A symbolic link to `target`.
    Symlink(String),
    /// A character device `major:minor`.
    CharDev(u32, u32),
}

/// One archive entry. `path` is relative (no leading `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the archive.
    pub path: String,
    /// Permission bits (the type bits come from `node`).
    pub perm: u32,
    /// Contents.
    pub node: Node,
}

impl Entry {
    fn mode(&self) -> u32 {
        let kind = match self.node {
            Node::Dir => S_IFDIR,
            Node::File(_) => S_IFREG,
            Node::Symlink(_) => S_IFLNK,
            Node::CharDev(..) => S_IFCHR,
        };
        kind | (self.perm & 0o7777)
    }

    fn data(&self) -> &[u8] {
        match &self.node {
            Node::File(d) => d,
            Node::Symlink(t) => t.as_bytes(),
            _ => &[],
        }
    }
}

/// Writes `entries` (already sorted and unique) plus the trailer to `out`,
/// every entry with modification time `mtime`.
pub fn write_archive<W: Write>(out: &mut W, entries: &[Entry], mtime: u32) -> io::Result<u64> {
    let mut written = 0u64;
    for (i, e) in entries.iter().enumerate() {
        let ino = u32::try_from(i + 1).map_err(|_| io::Error::other("too many entries"))?;
        let (rmaj, rmin) = match e.node {
            Node::CharDev(ma, mi) => (ma, mi),
            _ => (0, 0),
        };
        let nlink = if matches!(e.node, Node::Dir) { 2 } else { 1 };
        written += write_entry(out, &e.path, ino, e.mode(), nlink, mtime, e.data(), rmaj, rmin)?;
    }
    written += write_entry(out, "TRAILER!!!", 0, 0, 1, 0, &[], 0, 0)?;
    Ok(written)
}

#[allow(clippy::too_many_arguments)]
fn write_entry<W: Write>(
    out: &mut W,
    name: &str,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    data: &[u8],
    rdev_major: u32,
    rdev_minor: u32,
) -> io::Result<u64> {
    let size = u32::try_from(data.len()).map_err(|_| io::Error::other(format!("{name}: larger than 4 GiB")))?;
    let namesize = u32::try_from(name.len() + 1).map_err(|_| io::Error::other("name too long"))?;
    let header = format!(
        "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{size:08x}{dmaj:08x}{dmin:08x}\
         {rdev_major:08x}{rdev_minor:08x}{namesize:08x}{check:08x}",
        uid = 0,
        gid = 0,
        dmaj = 0,
        dmin = 0,
        check = 0
    );
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    let head_len = header.len() + name.len() + 1;
    let pad1 = (4 - head_len % 4) % 4;
    out.write_all(&[0; 3][..pad1])?;
    out.write_all(data)?;
    let pad2 = (4 - data.len() % 4) % 4;
    out.write_all(&[0; 3][..pad2])?;
    Ok((head_len + pad1 + data.len() + pad2) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_matches_newc() {
        let entries = vec![Entry { path: "init".into(), perm: 0o755, node: Node::File(b"abc".to_vec()) }];
        let mut out = Vec::new();
        let n = write_archive(&mut out, &entries, 0).unwrap();
        assert_eq!(n as usize, out.len());
        assert_eq!(&out[..6], b"070701");
        // mode field (second field) = regular file 0755.
        assert_eq!(&out[14..22], b"000081ed");
        // filesize = 3, namesize = 5 ("init\0").
        assert_eq!(&out[54..62], b"00000003");
        assert_eq!(&out[94..102], b"00000005");
        // 110-byte header + 5 name bytes = 115, padded to 116; then data padded to 4.
        assert_eq!(&out[110..115], b"init\0");
        assert_eq!(&out[116..119], b"abc");
        assert_eq!(out.len() % 4, 0);
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn output_is_a_function_of_the_entries() {
        let entries = vec![
            Entry { path: "dev".into(), perm: 0o755, node: Node::Dir },
            Entry { path: "dev/console".into(), perm: 0o600, node: Node::CharDev(5, 1) },
            Entry { path: "sh".into(), perm: 0o777, node: Node::Symlink("busybox".into()) },
        ];
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_archive(&mut a, &entries, 0).unwrap();
        write_archive(&mut b, &entries, 0).unwrap();
        assert_eq!(a, b);
    }
}
