//! dm-verity hash trees (the kernel's `Documentation/admin-guide/device-mapper/verity.rst`,
//! format version 1, SHA-256, 4096-byte data and hash blocks), appended to
//! the data they protect with no superblock: the table on the measured kernel
//! command line carries every parameter.
//!
//! Level 0 holds one digest per data block, 128 to a hash block (each
//! `SHA-256(salt ‖ block)`, a block's unused tail zero); level `i + 1` hashes
//! the blocks of level `i` the same way, up to a level of one block, whose
//! salted digest is the root hash. The levels are stored from the top down,
//! starting at `hash_start_block` (here: right after the data).
//! `veritysetup format --no-superblock` writes the same bytes (a test checks).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

/// Data and hash block size.
pub const BLOCK: u64 = 4096;
/// Digests per hash block.
const PER_BLOCK: u64 = BLOCK / 32;

/// What a verity table needs besides the device (the measured form).
pub type VerityParams = attestation_proto::launch::Verity;

/// Bytes of a device holding data and its tree.
pub fn device_len(p: &VerityParams) -> u64 {
    (p.hash_start_block + tree_blocks(p.data_blocks)) * BLOCK
}

/// Hash blocks at each level for `data_blocks`, bottom (level 0) first. As
/// the kernel counts: the fewest levels whose top holds one block; a single
/// data block has no tree at all (its salted digest is the root).
fn level_sizes(data_blocks: u64) -> Vec<u64> {
    let bits = PER_BLOCK.trailing_zeros();
    let mut levels = 0u32;
    while bits * levels < 64 && (data_blocks.saturating_sub(1) >> (bits * levels)) != 0 {
        levels += 1;
    }
    (1..=levels).map(|i| data_blocks.div_ceil(PER_BLOCK.saturating_pow(i))).collect()
}

/// Hash blocks the tree of `data_blocks` takes.
pub fn tree_blocks(data_blocks: u64) -> u64 {
    level_sizes(data_blocks).iter().sum()
}

fn salted(salt: &[u8], block: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

/// Pads `file` (holding the data) to whole blocks, appends the hash tree of
/// its blocks and returns the parameters. `salt` is at most 256 bytes.
pub fn append_tree(file: &mut File, salt: &[u8]) -> std::io::Result<VerityParams> {
    let len = file.metadata()?.len();
    let data_blocks = len.div_ceil(BLOCK).max(1);
    file.set_len(data_blocks * BLOCK)?;
    let levels_wanted = level_sizes(data_blocks).len();
    // Level 0 from the data, each higher level from the one below, kept in
    // memory (a 4 GiB image has an 8 MiB level 0).
    let mut levels: Vec<Vec<u8>> = Vec::with_capacity(levels_wanted);
    let mut block = vec![0u8; BLOCK as usize];
    let mut level = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, &*file);
    for _ in 0..data_blocks {
        reader.read_exact(&mut block)?;
        level.extend_from_slice(&salted(salt, &block));
    }
    drop(reader);
    let root = if levels_wanted == 0 {
        // One data block: its digest is the root.
        hex::encode(&level[..32])
    } else {
        pad_to_block(&mut level);
        levels.push(level);
        while levels.len() < levels_wanted {
            let below = levels.last().map(Vec::as_slice).unwrap_or_default();
            let mut up = Vec::new();
            for b in below.chunks(BLOCK as usize) {
                up.extend_from_slice(&salted(salt, b));
            }
            pad_to_block(&mut up);
            levels.push(up);
        }
        hex::encode(salted(salt, levels.last().map(Vec::as_slice).unwrap_or_default()))
    };
    file.seek(SeekFrom::Start(data_blocks * BLOCK))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, &*file);
    for l in levels.iter().rev() {
        out.write_all(l)?;
    }
    out.flush()?;
    Ok(VerityParams { data_blocks, hash_start_block: data_blocks, root, salt: hex::encode(salt) })
}

fn pad_to_block(v: &mut Vec<u8>) {
    let want = (v.len() as u64).div_ceil(BLOCK).max(1) * BLOCK;
    v.resize(usize::try_from(want).unwrap_or(v.len()), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_sizes_follow_the_kernels_geometry() {
        assert_eq!(level_sizes(1), Vec::<u64>::new());
        assert_eq!(level_sizes(2), vec![1]);
        assert_eq!(level_sizes(128), vec![1]);
        assert_eq!(level_sizes(129), vec![2, 1]);
        assert_eq!(level_sizes(128 * 128), vec![128, 1]);
        assert_eq!(level_sizes(128 * 128 + 1), vec![129, 2, 1]);
        let p = VerityParams { data_blocks: 129, hash_start_block: 129, root: "ab".into(), salt: "cd".into() };
        assert_eq!(device_len(&p), (129 + 3) * 4096);
        assert_eq!(p.table("254:0"), "0 1032 verity 1 254:0 254:0 4096 4096 129 129 sha256 ab cd");
    }

    /// The real peer: veritysetup (cryptsetup-bin) computes the same root and
    /// writes the same tree, for sizes with one, two and three levels.
    #[test]
    fn the_tree_matches_veritysetup() {
        let salt = [7u8; 32];
        for blocks in [1u64, 5, 128, 129, 300, 16_385] {
            let dir = tempfile::tempdir().unwrap();
            let ours = dir.path().join("ours");
            let theirs = dir.path().join("theirs");
            let mut data = vec![0u8; usize::try_from(blocks * BLOCK).unwrap() - 100];
            for (i, b) in data.iter_mut().enumerate() {
                *b = (i * 31 % 251) as u8;
            }
            std::fs::write(&ours, &data).unwrap();
            let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&ours).unwrap();
            let p = append_tree(&mut f, &salt).unwrap();
            assert_eq!(p.data_blocks, blocks);
            assert_eq!(f.metadata().unwrap().len(), device_len(&p));

            let mut padded = data.clone();
            padded.resize(usize::try_from(blocks * BLOCK).unwrap(), 0);
            std::fs::write(&theirs, &padded).unwrap();
            let out = std::process::Command::new("veritysetup")
                .args(["format", "--no-superblock", "--hash=sha256", "--format=1"])
                .arg(format!("--salt={}", hex::encode(salt)))
                .arg(format!("--hash-offset={}", blocks * BLOCK))
                .arg(format!("--data-blocks={blocks}"))
                .arg(&theirs)
                .arg(&theirs)
                .output()
                .expect("veritysetup (cryptsetup-bin) must be installed: scripts/setup.sh installs it");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let stdout = String::from_utf8_lossy(&out.stdout);
            let root = stdout
                .lines()
                .find_map(|l| l.strip_prefix("Root hash:"))
                .map(str::trim)
                .unwrap_or_else(|| panic!("no root hash in {stdout}"));
            assert_eq!(p.root, root, "{blocks} blocks");
            assert_eq!(std::fs::read(&ours).unwrap(), std::fs::read(&theirs).unwrap(), "{blocks} blocks: same tree bytes");
        }
    }
}
