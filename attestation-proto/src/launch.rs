//! The launch record: what the host measured before a zone booted, and the
//! stop record that ends it.
//!
//! Both are canonical JSON: fields in the order declared here, no
//! whitespace, integers only. The daemon writes them as the data of the
//! zone's events in the host's event log (see [`crate::eventlog`]); the
//! verifier parses them back and refuses any encoding that does not
//! re-encode to the same bytes, so one record has exactly one byte form and
//! one digest.
//!
//! Every digest is SHA-256 of the bytes the VMM loads: the kernel file, the
//! initramfs file and the full kernel command line (the daemon's device
//! parameters and the zone's command included).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of the launch and stop record layouts.
pub const RECORD_VERSION: u32 = 1;
/// Largest launch or stop record accepted (bytes).
pub const MAX_RECORD_LEN: usize = 16 * 1024;

/// A record that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// Larger than [`MAX_RECORD_LEN`].
    #[error("record is {0} bytes, more than the {MAX_RECORD_LEN} allowed")]
    TooLarge(usize),
    /// Not JSON of the expected shape.
    #[error("record is not a valid version-{RECORD_VERSION} record: {0}")]
    Malformed(String),
    /// Valid JSON, but not in canonical form.
    #[error("record is not in canonical form (fields in order, no whitespace)")]
    NotCanonical,
    /// A version this code does not know.
    #[error("record version {0} is not supported (this verifier knows version {RECORD_VERSION})")]
    Version(u32),
    /// A field out of range.
    #[error("record field {0}")]
    Field(String),
}

/// A measured boot artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Where it was read from (informational: the digest is what counts).
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its bytes, lower-case hex.
    pub sha256: String,
}

impl Artifact {
    /// Measures `bytes` read from `path`.
    pub fn measure(path: &str, bytes: &[u8]) -> Self {
        Self { path: path.to_owned(), size: bytes.len() as u64, sha256: sha256_hex(bytes) }
    }
}

/// What the host measured before booting a zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchRecord {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// The host's identity (its configured host id).
    pub host: String,
    /// The zone's name.
    pub zone: String,
    /// Unique per launch (16 random bytes, hex): tells a relaunch under the
    /// same name apart and ties the stop record to this launch.
    pub launch_id: String,
    /// The kernel.
    pub kernel: Artifact,
    /// The initramfs, if any.
    pub initrd: Option<Artifact>,
    /// The command line the kernel gets, exactly.
    pub cmdline: String,
    /// SHA-256 of [`Self::cmdline`]'s bytes, hex.
    pub cmdline_sha256: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest memory (MiB).
    pub memory_mib: u64,
    /// The zone's devices, e.g. `virtio-vsock:cid=3`.
    pub devices: Vec<String>,
    /// When the daemon launched it (Unix ms, host clock; informational).
    pub launched_unix_ms: u64,
    /// The image root the zone's command runs in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<Rootfs>,
}

/// The device-mapper name of an image zone's verity root.
pub const VERITY_DM_NAME: &str = "zone-root";
/// The device of an image zone's root disk in the zone kernel (`/dev/vda`,
/// the first virtio-blk disk: block major 254, which the zone kernel gives
/// virtio-blk as the first dynamically numbered block driver).
pub const ROOT_DISK_DEVT: &str = "254:0";

/// An image root: the image it came from and the dm-verity parameters the
/// zone kernel checks every block of it against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rootfs {
    /// The image's manifest digest, `sha256:<hex>`.
    pub image: String,
    /// Its file system (`squashfs`).
    pub format: String,
    /// Its dm-verity parameters.
    pub verity: Verity,
}

/// dm-verity parameters (format 1, SHA-256, 4096-byte blocks, hash tree on
/// the data device after the data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verity {
    /// Data blocks covered.
    pub data_blocks: u64,
    /// Where the hash tree starts, in blocks of the same device.
    pub hash_start_block: u64,
    /// Root hash, hex.
    pub root: String,
    /// Salt, hex.
    pub salt: String,
}

impl Rootfs {
    /// Checks the fields' shapes: a `sha256:` image digest, squashfs, and
    /// verity parameters as [`Verity::check`] wants them.
    pub fn check(&self) -> Result<(), RecordError> {
        if !self.image.strip_prefix("sha256:").is_some_and(is_hex_digest) {
            return Err(RecordError::Field("rootfs.image is not sha256:<64 lower-case hex digits>".into()));
        }
        if self.format != "squashfs" {
            return Err(RecordError::Field(format!("rootfs.format {:?} is not squashfs (the only image root format)", self.format)));
        }
        self.verity.check()
    }

    /// Checks the fields' shapes and that `cmdline` (the measured one) sets
    /// exactly this verity root up: its `dm-mod.create=` parameter, before
    /// the zone's command, is the one these parameters give. A record cannot
    /// claim one root while the kernel checks another.
    pub fn check_against(&self, cmdline: &str) -> Result<(), RecordError> {
        self.check()?;
        let kernel_part = match cmdline.find(" -- ") {
            Some(i) => &cmdline[..i],
            None => cmdline,
        };
        let want = self.verity.dm_create_param();
        let creates: Vec<&str> = kernel_part.match_indices("dm-mod.create=").map(|(i, _)| &kernel_part[i..]).collect();
        if creates.len() != 1 || !creates[0].starts_with(&want) || !creates[0][want.len()..].chars().next().is_none_or(char::is_whitespace) {
            return Err(RecordError::Field("rootfs does not match the dm-mod.create= parameter of cmdline".into()));
        }
        Ok(())
    }
}

impl Verity {
    /// The device-mapper table with `dev` as data and hash device.
    pub fn table(&self, dev: &str) -> String {
        format!(
            "0 {} verity 1 {dev} {dev} 4096 4096 {} {} sha256 {} {}",
            self.data_blocks.saturating_mul(8),
            self.data_blocks,
            self.hash_start_block,
            self.root,
            self.salt
        )
    }

    /// The kernel parameter that sets the root up before init (`DM_INIT`):
    /// `dm-mod.create="zone-root,,,ro,<table>"` over [`ROOT_DISK_DEVT`].
    pub fn dm_create_param(&self) -> String {
        format!("dm-mod.create=\"{VERITY_DM_NAME},,,ro,{}\"", self.table(ROOT_DISK_DEVT))
    }

    /// Checks the fields' shapes: a 64-hex-digit root, an even-length hex
    /// salt of at most 256 bytes, at least one data block, the tree after the data.
    pub fn check(&self) -> Result<(), RecordError> {
        let hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if self.root.len() != 64 || !hex(&self.root) {
            return Err(RecordError::Field("rootfs.verity.root must be 64 lower-case hex digits".into()));
        }
        if self.salt.len() % 2 != 0 || self.salt.len() > 512 || !hex(&self.salt) {
            return Err(RecordError::Field("rootfs.verity.salt must be lower-case hex of at most 256 bytes".into()));
        }
        if self.data_blocks == 0 || self.hash_start_block < self.data_blocks || self.hash_start_block > u64::MAX / 8192 {
            return Err(RecordError::Field("rootfs.verity blocks are out of range".into()));
        }
        Ok(())
    }
}

/// The end of a launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRecord {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// The zone's name.
    pub zone: String,
    /// The launch that ended.
    pub launch_id: String,
    /// Why it ended (e.g. `stopped`, `failed: …`).
    pub reason: String,
    /// When (Unix ms, host clock; informational).
    pub stopped_unix_ms: u64,
}

/// A checkpoint of the log: which launches were live when it was made.
///
/// The ledger appends one every so many events and has the TPM quote the
/// zone PCR right after it; evidence then carries that checkpoint and only
/// the events after it, so its size and the cost of checking it do not grow
/// with the host's history (see [`crate::verify`]). The live launches are
/// committed to by a Merkle root (so the record stays small however many
/// zones run); evidence about a launch from before the checkpoint carries
/// its inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRecord {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// 1 for the first checkpoint of a TPM boot, then one more each time.
    pub seq: u64,
    /// Events of the log before this one.
    pub events_before: u64,
    /// Launches logged before and not stopped.
    pub live_count: u64,
    /// Hex of [`CheckpointRecord::live_root`] over their launch records'
    /// SHA-256 digests (all zero without any).
    pub live_root: String,
}

impl CheckpointRecord {
    /// The Merkle leaves of a live set: `leaf_hash(SHA-256(record))` of each
    /// launch record, in ascending order of the record digests (which must
    /// be sorted and distinct).
    pub fn live_leaves(sorted_digests: &[[u8; 32]]) -> Vec<[u8; 32]> {
        sorted_digests.iter().map(|d| crate::merkle::leaf_hash(d)).collect()
    }

    /// The root over [`Self::live_leaves`] (all zero for an empty set).
    pub fn live_root(sorted_digests: &[[u8; 32]]) -> [u8; 32] {
        crate::merkle::root(&Self::live_leaves(sorted_digests)).unwrap_or([0; 32])
    }

    /// The record of a checkpoint over the live set `sorted_digests`.
    pub fn new(seq: u64, events_before: u64, sorted_digests: &[[u8; 32]]) -> Self {
        Self {
            version: RECORD_VERSION,
            seq,
            events_before,
            live_count: sorted_digests.len() as u64,
            live_root: hex::encode(Self::live_root(sorted_digests)),
        }
    }

    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        encode_canonical(self)
    }

    /// Parses canonical bytes and checks every field.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let r: Self = decode_canonical(bytes, |r: &Self| r.version)?;
        if !is_hex_digest(&r.live_root) {
            return Err(RecordError::Field("live_root must be a SHA-256 hex digest".into()));
        }
        if r.seq == 0 {
            return Err(RecordError::Field("seq starts at 1".into()));
        }
        Ok(r)
    }
}

/// SHA-256 of `bytes` as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn is_hex_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The canonical bytes of a record (a struct of strings, integers and
/// vectors always serialises).
fn encode_canonical<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Parses a record of [`RECORD_VERSION`], refusing any non-canonical form.
fn decode_canonical<T: Serialize + for<'de> Deserialize<'de>>(
    bytes: &[u8],
    version: impl Fn(&T) -> u32,
) -> Result<T, RecordError> {
    if bytes.len() > MAX_RECORD_LEN {
        return Err(RecordError::TooLarge(bytes.len()));
    }
    let value: T = serde_json::from_slice(bytes).map_err(|e| RecordError::Malformed(e.to_string()))?;
    if encode_canonical(&value) != bytes {
        return Err(RecordError::NotCanonical);
    }
    match version(&value) {
        RECORD_VERSION => Ok(value),
        v => Err(RecordError::Version(v)),
    }
}

impl LaunchRecord {
    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        encode_canonical(self)
    }

    /// Parses canonical bytes and checks every field.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let r: Self = decode_canonical(bytes, |r: &Self| r.version)?;
        let mut digests = vec![("kernel.sha256", &r.kernel.sha256), ("cmdline_sha256", &r.cmdline_sha256)];
        if let Some(i) = &r.initrd {
            digests.push(("initrd.sha256", &i.sha256));
        }
        for (what, d) in digests {
            if !is_hex_digest(d) {
                return Err(RecordError::Field(format!("{what} is not 64 lower-case hex digits")));
            }
        }
        if sha256_hex(r.cmdline.as_bytes()) != r.cmdline_sha256 {
            return Err(RecordError::Field("cmdline_sha256 is not the SHA-256 of cmdline".into()));
        }
        if r.zone.is_empty() || r.host.is_empty() || r.launch_id.is_empty() {
            return Err(RecordError::Field("zone, host and launch_id must not be empty".into()));
        }
        if let Some(fs) = &r.rootfs {
            fs.check_against(&r.cmdline)?;
        }
        Ok(r)
    }

    /// The image's manifest digest (hex, without `sha256:`), or `none`.
    pub fn image_sha256(&self) -> &str {
        self.rootfs.as_ref().map_or("none", |f| f.image.trim_start_matches("sha256:"))
    }

    /// The image root's verity root hash, or `none`.
    pub fn rootfs_verity(&self) -> &str {
        self.rootfs.as_ref().map_or("none", |f| f.verity.root.as_str())
    }

    /// The initrd digest, or `none`.
    pub fn initrd_sha256(&self) -> &str {
        self.initrd.as_ref().map_or("none", |i| i.sha256.as_str())
    }

    /// The command line's digest as policies and selectors name it: SHA-256
    /// of [`crate::zone::without_net_addresses`] of [`Self::cmdline`] (the
    /// same as [`Self::cmdline_sha256`] for a zone without a network
    /// interface; for one with, the same whichever address it was assigned).
    pub fn policy_cmdline_sha256(&self) -> String {
        sha256_hex(crate::zone::without_net_addresses(&self.cmdline).as_bytes())
    }

    /// The zone's network interface as its measured command line configures
    /// it: `None` without one, an error if zone-guest cannot use the `zone.net=`
    /// parameter it was given.
    pub fn net(&self) -> Option<Result<crate::zone::NetParams, String>> {
        crate::zone::parse_cmdline(&self.cmdline).net
    }
}

impl StopRecord {
    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        encode_canonical(self)
    }

    /// Parses canonical bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        decode_canonical(bytes, |r: &Self| r.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> LaunchRecord {
        let cmdline = "console=ttyS0 -- /bin/true".to_owned();
        LaunchRecord {
            version: RECORD_VERSION,
            host: "host-a".into(),
            zone: "web".into(),
            launch_id: "00112233445566778899aabbccddeeff".into(),
            kernel: Artifact::measure("/k", b"kernel"),
            initrd: Some(Artifact::measure("/i", b"initrd")),
            cmdline_sha256: sha256_hex(cmdline.as_bytes()),
            cmdline,
            vcpus: 1,
            memory_mib: 128,
            devices: vec!["virtio-vsock:cid=3".into()],
            launched_unix_ms: 1,
            rootfs: None,
        }
    }

    #[test]
    fn round_trips_and_is_canonical() {
        let r = sample();
        let b = r.encode();
        assert_eq!(LaunchRecord::decode(&b).unwrap(), r);
        let spaced = String::from_utf8(b.clone()).unwrap().replacen(',', ", ", 1);
        assert_eq!(LaunchRecord::decode(spaced.as_bytes()), Err(RecordError::NotCanonical));
        let mut big = b.clone();
        big.resize(MAX_RECORD_LEN + 1, b' ');
        assert!(matches!(LaunchRecord::decode(&big), Err(RecordError::TooLarge(_))));
    }

    #[test]
    fn fields_are_checked() {
        let mut r = sample();
        r.cmdline.push('x');
        assert!(matches!(LaunchRecord::decode(&r.encode()), Err(RecordError::Field(_))));
        let mut r = sample();
        r.version = 2;
        assert_eq!(LaunchRecord::decode(&r.encode()), Err(RecordError::Version(2)));
        let mut r = sample();
        r.kernel.sha256 = "ABC".into();
        assert!(matches!(LaunchRecord::decode(&r.encode()), Err(RecordError::Field(_))));
        let extra = String::from_utf8(sample().encode()).unwrap().replacen('{', "{\"x\":1,", 1);
        assert!(matches!(LaunchRecord::decode(extra.as_bytes()), Err(RecordError::Malformed(_))));
        assert!(matches!(LaunchRecord::decode(b"\xff\xfe"), Err(RecordError::Malformed(_))));
    }

    pub(crate) fn image_sample() -> LaunchRecord {
        let verity = Verity { data_blocks: 300, hash_start_block: 300, root: "ab".repeat(32), salt: "cd".repeat(32) };
        let cmdline = format!("console=ttyS0 {} zone.root=squashfs -- /bin/sh -c x", verity.dm_create_param());
        let mut r = sample();
        r.cmdline_sha256 = sha256_hex(cmdline.as_bytes());
        r.cmdline = cmdline;
        r.rootfs = Some(Rootfs { image: format!("sha256:{}", "ef".repeat(32)), format: "squashfs".into(), verity });
        r
    }

    #[test]
    fn an_image_root_must_be_the_one_the_command_line_sets_up() {
        let r = image_sample();
        assert_eq!(LaunchRecord::decode(&r.encode()).unwrap(), r);
        assert!(!String::from_utf8(sample().encode()).unwrap().contains("rootfs"), "no image: the record is as before");
        // The record claims another root than the kernel checks.
        let mut other = r.clone();
        other.rootfs.as_mut().unwrap().verity.root = "00".repeat(32);
        assert!(matches!(LaunchRecord::decode(&other.encode()), Err(RecordError::Field(m)) if m.contains("dm-mod.create")));
        // A second table smuggled in after the first.
        let mut twice = r.clone();
        twice.cmdline = twice.cmdline.replacen(" zone.root", " dm-mod.create=\"evil,,,ro,0 8 zero\" zone.root", 1);
        twice.cmdline_sha256 = sha256_hex(twice.cmdline.as_bytes());
        assert!(LaunchRecord::decode(&twice.encode()).is_err());
        // Only in the command, not the kernel's part.
        let mut cmd = r.clone();
        let table = cmd.rootfs.as_ref().unwrap().verity.dm_create_param();
        cmd.cmdline = format!("console=ttyS0 -- {table}");
        cmd.cmdline_sha256 = sha256_hex(cmd.cmdline.as_bytes());
        assert!(LaunchRecord::decode(&cmd.encode()).is_err());
        // Bad shapes.
        for f in [
            |v: &mut Rootfs| v.image = "sha256:xyz".into(),
            |v: &mut Rootfs| v.format = "ext4".into(),
            |v: &mut Rootfs| v.verity.salt = "abc".into(),
            |v: &mut Rootfs| v.verity.hash_start_block = 1,
        ] {
            let mut b = r.clone();
            f(b.rootfs.as_mut().unwrap());
            assert!(matches!(LaunchRecord::decode(&b.encode()), Err(RecordError::Field(_))));
        }
    }
}
