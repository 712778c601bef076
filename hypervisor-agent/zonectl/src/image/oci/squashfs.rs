//! The flattened tree written as a squashfs 4.0 file system (rust's
//! `backhand`; the zone kernel mounts it with `SQUASHFS_ZLIB`): gzip, 128 KiB
//! blocks, duplicate files stored once, the file system's own time 0 and
//! every entry's owner, mode and mtime as the layers gave them. Device
//! numbers use the kernel's encoding (`new_encode_dev`).

use std::fs::File;

use backhand::compression::Compressor;
use backhand::{FilesystemCompressor, FilesystemWriter, NodeHeader};

use super::OciError;
use super::layers::{Kind, Tree};

/// The kernel's `new_encode_dev`: what squashfs stores as `rdev`.
pub fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// Writes `tree` to `out` (from its start); returns the bytes written.
pub fn write(tree: &Tree, out: &mut File) -> Result<u64, OciError> {
    let fail = |what: &str, path: &str, e: backhand::BackhandError| OciError::Io(format!("squashfs: {what} /{path}: {e}"));
    let mut fs = FilesystemWriter::default();
    fs.set_time(0);
    fs.set_compressor(FilesystemCompressor::new(Compressor::Gzip, None).map_err(|e| fail("compressor", "", e))?);
    if let Some(root) = tree.nodes.get("") {
        fs.set_root_mode(root.mode);
        fs.set_root_uid(root.uid);
        fs.set_root_gid(root.gid);
    }
    for (path, node) in tree.nodes.iter().filter(|(p, _)| !p.is_empty()) {
        let h = NodeHeader::new(node.mode, node.uid, node.gid, node.mtime);
        match &node.kind {
            Kind::Dir => fs.push_dir(path, h).map_err(|e| fail("directory", path, e))?,
            Kind::File { offset, len } => {
                fs.push_file(tree.reader(*offset, *len), path, h).map_err(|e| fail("file", path, e))?;
            }
            Kind::Symlink(target) => fs.push_symlink(target, path, h).map_err(|e| fail("symlink", path, e))?,
            Kind::Char(ma, mi) => fs.push_char_device(encode_dev(*ma, *mi), path, h).map_err(|e| fail("device", path, e))?,
            Kind::Block(ma, mi) => fs.push_block_device(encode_dev(*ma, *mi), path, h).map_err(|e| fail("device", path, e))?,
            Kind::Fifo => fs.push_fifo(path, h).map_err(|e| fail("fifo", path, e))?,
        }
    }
    let mut w = std::io::BufWriter::with_capacity(1 << 20, &*out);
    let (_, written) = fs.write(&mut w).map_err(|e| fail("writing", "", e))?;
    std::io::Write::flush(&mut w).map_err(|e| OciError::Io(format!("squashfs: writing: {e}")))?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_use_the_kernels_encoding() {
        assert_eq!(encode_dev(1, 3), 0x103, "/dev/null");
        assert_eq!(encode_dev(254, 0), 0xfe00);
        assert_eq!(encode_dev(8, 0x1234), 0x34 | (8 << 8) | (0x1200 << 12));
    }
}
