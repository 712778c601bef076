//! `zonectl image import` on generated OCI archives, checked against real
//! peers: the root it writes (read back with `unsquashfs`) has exactly what
//! `umoci unpack` makes of the same image (whiteouts, opaque directories,
//! hard links, symlinks, device nodes, FIFOs, owners, modes, contents);
//! `veritysetup verify` accepts its hash tree; the same image converts to the
//! same bytes twice; and broken or hostile archives are refused with an error
//! naming what is wrong, leaving nothing in the store.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use zone_tests::oci::{Compression, Entry, Image};
use zonectl::image::oci::layers::Limits;
use zonectl::image::oci::store::Store;
use zonectl::image::oci::{OciError, Quiet, import};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/setup.sh installs umoci, squashfs-tools, cryptsetup-bin)"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a tree holds, path by path: type, mode, owner, and contents, link
/// target or device number.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let ft = m.file_type();
            let what = if ft.is_dir() {
                stack.push(p.clone());
                "dir".to_owned()
            } else if ft.is_symlink() {
                format!("symlink {}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_file() {
                format!("file {}", hex::encode(sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(std::fs::read(&p).unwrap()))))
            } else {
                use std::os::unix::fs::FileTypeExt;
                let kind = if ft.is_char_device() { "char" } else if ft.is_block_device() { "block" } else if ft.is_fifo() { "fifo" } else { "other" };
                format!("{kind} {:x}", m.rdev())
            };
            let mode = m.permissions().mode() & 0o7777;
            let mtime = if ft.is_dir() { String::new() } else { format!(" mtime {}", m.mtime()) };
            out.insert(rel, format!("{what} mode {mode:o} owner {}:{}{mtime}", m.uid(), m.gid()));
        }
    }
    out
}

/// `n` incompressible bytes (xorshift), so the root spans many verity blocks.
fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Three layers; the second compressed with `second` (umoci 0.4 reads no zstd).
fn layered_image(second: Compression) -> Image {
    let mut img = Image::new()
        .layer(
            &[
                Entry::Dir("etc/", 0o755),
                Entry::File("etc/a", 0o644, b"a1".to_vec()),
                Entry::File("etc/b", 0o600, b"b1".to_vec()),
                Entry::Owned("home/u/.profile", 0o640, 1000, 100, b"export X=1\n".to_vec()),
                Entry::Dir("opt/d/", 0o750),
                Entry::File("opt/d/old", 0o644, b"old".to_vec()),
                Entry::File("opt/d/sub/deep", 0o644, b"deep".to_vec()),
                Entry::Symlink("opt/link", "/etc/a"),
                Entry::Symlink("opt/rel", "../etc/b"),
                Entry::Dir("var/lib/", 0o755),
                Entry::File("var/lib/state", 0o644, b"s".to_vec()),
                Entry::File("usr/bin/tool", 0o4755, b"#!/bin/sh\n".to_vec()),
                Entry::Char("dev/null", 1, 3),
                Entry::Fifo("run/fifo"),
                Entry::Dir("tmp/", 0o1777),
            ],
            Compression::Gzip,
        )
        .layer(
            &[
                Entry::Whiteout("etc/a"),
                Entry::Opaque("opt/d"),
                Entry::File("opt/d/new", 0o644, b"new".to_vec()),
                Entry::File("etc/b", 0o644, b"b2".to_vec()),
                Entry::HardLink("etc/b-link", "etc/b"),
                Entry::Whiteout("var/lib"),
                Entry::File("var/new", 0o644, noise(1 << 20)),
            ],
            second,
        )
        .layer(&[Entry::File("etc/c", 0o644, b"plain tar layer".to_vec()), Entry::Dir("opt/d/", 0o700)], Compression::None)
        // A gzip layer of several members, as umoci writes them.
        .layer(&[Entry::File("srv/a", 0o644, noise(200_000)), Entry::File("srv/b", 0o644, noise(150_000))], Compression::GzipMembers);
    img.ref_name = Some("t".into());
    img.process = serde_json::json!({"Cmd": ["/usr/bin/tool"], "Env": ["A=1"], "WorkingDir": "/opt", "User": "1000:100"});
    img
}

#[test]
fn the_root_matches_umoci_and_veritysetup_accepts_its_tree() {
    let dir = tempfile::tempdir().unwrap();
    let img = layered_image(Compression::Gzip);
    let archive = dir.path().join("img.tar");
    std::fs::write(&archive, img.archive()).unwrap();
    let store = Store::new(dir.path().join("store"));
    let (rec, converted) = import(&archive, None, &store, Limits::default(), &mut Quiet).unwrap();
    assert!(converted);
    assert_eq!(rec.digest, img.manifest_digest());
    assert_eq!(rec.names, vec!["t".to_owned()], "named by the archive's ref name");
    assert_eq!(rec.process.cmd.as_deref(), Some(&["/usr/bin/tool".to_owned()][..]));
    assert_eq!(rec.process.working_dir, "/opt");
    assert_eq!(rec.layers, 4);

    // Ours, read back by squashfs-tools.
    let rootfs = store.rootfs(&rec).unwrap();
    let ours = dir.path().join("ours");
    run(Command::new("unsquashfs").arg("-no-progress").arg("-d").arg(&ours).arg(&rootfs));
    // The reference unpacker on the same image.
    let layout = dir.path().join("layout");
    for (path, bytes) in img.files(&|_, _| {}) {
        let p = layout.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    let bundle = dir.path().join("bundle");
    run(Command::new("umoci").arg("unpack").arg("--image").arg(format!("{}:t", layout.display())).arg(&bundle));
    let mut theirs = snapshot(&bundle.join("rootfs"));
    let mut ours = snapshot(&ours);
    // umoci keeps hard links as links and creates missing parents with the
    // umask's mode; the bytes, modes and owners of everything else agree.
    for m in [&mut theirs, &mut ours] {
        m.retain(|k, _| !["home", "home/u", "usr", "usr/bin", "run", "var"].contains(&k.as_str()));
    }
    assert_eq!(ours, theirs, "our root differs from umoci's");
    assert!(ours["etc/b-link"].starts_with(&ours["etc/b"][..70]), "the hard link has the file's bytes");
    assert!(!ours.contains_key("etc/a") && !ours.contains_key("opt/d/old") && !ours.contains_key("var/lib"));
    assert!(ours["dev/null"].starts_with("char 103"), "{}", ours["dev/null"]);

    // veritysetup verifies the appended tree against the root hash.
    let v = &rec.verity;
    run(Command::new("veritysetup")
        .args(["verify", "--no-superblock", "--hash=sha256", "--format=1"])
        .arg(format!("--data-blocks={}", v.data_blocks))
        .arg(format!("--hash-offset={}", v.hash_start_block * 4096))
        .arg(format!("--salt={}", v.salt))
        .arg(&rootfs)
        .arg(&rootfs)
        .arg(&v.root));
    assert_eq!(v.salt, rec.digest.trim_start_matches("sha256:"), "the salt is the manifest digest");

    // A flipped byte in the file system: veritysetup finds it.
    let mut bytes = std::fs::read(&rootfs).unwrap();
    assert!(v.data_blocks > 128, "a tree of two levels ({} blocks)", v.data_blocks);
    bytes[4096 * 100 + 7] ^= 0x40;
    let flipped = dir.path().join("flipped.img");
    std::fs::write(&flipped, &bytes).unwrap();
    let out = Command::new("veritysetup")
        .args(["verify", "--no-superblock"])
        .arg(format!("--data-blocks={}", v.data_blocks))
        .arg(format!("--hash-offset={}", v.hash_start_block * 4096))
        .arg(format!("--salt={}", v.salt))
        .arg(&flipped)
        .arg(&flipped)
        .arg(&v.root)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a corrupt root must fail verification");

    // The same layers with a zstd layer give the same tree.
    let zimg = layered_image(Compression::Zstd);
    let zarchive = dir.path().join("zimg.tar");
    std::fs::write(&zarchive, zimg.archive()).unwrap();
    let (zrec, _) = import(&zarchive, Some("z"), &store, Limits::default(), &mut Quiet).unwrap();
    assert_ne!(zrec.digest, rec.digest);
    let zdir = dir.path().join("zours");
    run(Command::new("unsquashfs").arg("-no-progress").arg("-d").arg(&zdir).arg(store.rootfs(&zrec).unwrap()));
    let mut z = snapshot(&zdir);
    z.retain(|k, _| !["home", "home/u", "usr", "usr/bin", "run", "var"].contains(&k.as_str()));
    assert_eq!(z, ours, "a zstd layer applies as its gzip twin");
}

#[test]
fn the_same_image_converts_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("img.tar");
    std::fs::write(&archive, layered_image(Compression::Zstd).archive()).unwrap();
    let a = Store::new(dir.path().join("a"));
    let b = Store::new(dir.path().join("b"));
    let (ra, _) = import(&archive, Some("x:1"), &a, Limits::default(), &mut Quiet).unwrap();
    let (rb, _) = import(&archive, Some("y:2"), &b, Limits::default(), &mut Quiet).unwrap();
    assert_eq!(ra.verity, rb.verity);
    assert_eq!(std::fs::read(a.rootfs(&ra).unwrap()).unwrap(), std::fs::read(b.rootfs(&rb).unwrap()).unwrap());
    // A second import of the same manifest reuses the stored root and adds the name.
    let (again, converted) = import(&archive, Some("x:latest"), &a, Limits::default(), &mut Quiet).unwrap();
    assert!(!converted);
    assert_eq!(again.names, vec!["x:1".to_owned(), "x:latest".to_owned()]);
    assert_eq!(a.resolve("x:latest").unwrap().digest, ra.digest);
    assert_eq!(a.resolve(&ra.digest[..19]).unwrap().digest, ra.digest, "a digest prefix resolves");
    assert!(a.resolve("nope").unwrap_err().to_string().contains("zonectl image import"));
    a.remove("x:1").unwrap();
    assert!(a.list().unwrap().is_empty());
    assert!(a.resolve("x:latest").is_err(), "its names go with it");
}

/// Every way an archive can be bad: a clear error naming it, and no image,
/// staging directory or name left behind.
#[test]
fn broken_and_hostile_archives_are_refused_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("store"));
    let good = layered_image(Compression::Zstd);
    let try_import = |bytes: Vec<u8>, limits: Limits| -> OciError {
        let p = dir.path().join("bad.tar");
        std::fs::write(&p, bytes).unwrap();
        let e = import(&p, Some("bad:1"), &store, limits, &mut Quiet).expect_err("must be refused");
        assert!(store.list().unwrap().is_empty(), "{e}: an image was stored");
        assert!(store.resolve("bad:1").is_err(), "{e}: a name was left");
        let staging = store.root().join("staging");
        let left = std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0, "{e}: a staging directory was left");
        e
    };
    let full = good.archive();
    // Truncated.
    let e = try_import(full[..full.len() / 3].to_vec(), Limits::default());
    assert!(matches!(e, OciError::Malformed(_) | OciError::Digest(_)), "{e}");
    // Not an archive at all.
    let e = try_import(b"hello, not a tar".repeat(100), Limits::default());
    assert!(e.to_string().contains("index.json") || e.to_string().contains("tar"), "{e}");
    // index.json is not JSON.
    let mut files = good.files(&|_, _| {});
    files.last_mut().unwrap().1 = b"{not json".to_vec();
    let e = try_import(Image::pack(&files), Limits::default());
    assert!(e.to_string().contains("index.json"), "{e}");
    // An unknown layer media type.
    let files = good.files(&|m, _| m["layers"][0]["mediaType"] = "application/x-unknown-layer".into());
    let e = try_import(Image::pack(&files), Limits::default());
    assert!(matches!(e, OciError::MediaType(ref m) if m.contains("application/x-unknown-layer")), "{e}");
    // Another platform.
    let files = good.files(&|_, c| c["architecture"] = "arm64".into());
    let e = try_import(Image::pack(&files), Limits::default());
    assert!(matches!(e, OciError::Platform(_)), "{e}");
    // A layer blob whose bytes do not match its digest.
    let mut files = good.files(&|_, _| {});
    let (_, blob) = files.iter_mut().find(|(p, _)| p.starts_with("blobs/")).unwrap();
    let mid = blob.len() / 2;
    blob[mid] ^= 1;
    let e = try_import(Image::pack(&files), Limits::default());
    assert!(matches!(e, OciError::Digest(_) | OciError::Layer(_)), "{e}");
    // A layer that climbs out of the root.
    let escape = Image::new().layer(&[Entry::RawName(b"../../etc/passwd", b"x".to_vec())], Compression::Gzip);
    let e = try_import(escape.archive(), Limits::default());
    assert!(e.to_string().contains("leaves the root"), "{e}");
    // A file under a symlink that points outside.
    let through = Image::new()
        .layer(&[Entry::Symlink("etc", "/host-etc")], Compression::Gzip)
        .layer(&[Entry::File("etc/shadow", 0o600, b"x".to_vec())], Compression::Gzip);
    let e = try_import(through.archive(), Limits::default());
    assert!(e.to_string().contains("symlink"), "{e}");
    // A decompression bomb: 64 MiB of zeros in a small gzip layer, 16 MiB allowed.
    let bomb = Image::new().layer(&[Entry::File("zeros", 0o644, vec![0u8; 64 << 20])], Compression::Gzip);
    assert!(bomb.layers[0].0.len() < 1 << 20, "the bomb is small compressed");
    let e = try_import(bomb.archive(), Limits { max_bytes: 16 << 20, max_entries: 1000 });
    assert!(matches!(e, OciError::TooLarge(_)), "{e}");
    // After all that, a good import still works.
    let p = dir.path().join("good.tar");
    std::fs::write(&p, &full).unwrap();
    import(&p, None, &store, Limits::default(), &mut Quiet).unwrap();
}
