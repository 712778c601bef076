//! `zonectl image pull` against a real registry (Debian's `docker-registry`,
//! started by the test on loopback, the image pushed with `skopeo`): the
//! pulled image is the same manifest and the same verity root as importing
//! the archive it was pushed from; a registry that accepts connections but
//! never answers is given up on after `--timeout`, and a missing image is an
//! error naming it; neither leaves anything in the store. A registry behind
//! token authentication (`auth: token`, its token service run by the test)
//! refuses an anonymous pull and wrong credentials, each an error that says
//! what to do, and serves the pull with the right ones.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use zone_tests::oci::{Compression, Entry, Image};
use zonectl::image::oci::layers::Limits;
use zonectl::image::oci::store::Store;
use zonectl::image::oci::{Quiet, import};

const ZONECTL: &str = env!("CARGO_BIN_EXE_zonectl-under-test");

struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `docker-registry` with its data in `dir`, `extra` appended to its configuration.
fn start_registry(dir: &std::path::Path, extra: &str) -> (Registry, u16) {
    let port = free_port();
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
            dir.join("registry-data").display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry (Debian package docker-registry; scripts/setup.sh installs it)");
    let reg = Registry(child);
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(30), "docker-registry did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    (reg, port)
}

fn zonectl(store: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(ZONECTL).args(["-o", "json", "image"]).args(args).arg("--store").arg(store).output().unwrap()
}

#[test]
fn a_pushed_image_pulls_to_the_same_root_and_bad_registries_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut img = Image::new()
        .layer(&[Entry::Dir("etc/", 0o755), Entry::File("etc/hello", 0o644, b"from the registry\n".to_vec())], Compression::Gzip)
        .layer(&[Entry::Whiteout("etc/hello"), Entry::File("etc/v2", 0o644, vec![7u8; 300_000])], Compression::Gzip);
    img.process = serde_json::json!({"Cmd": ["/bin/true"]});
    let archive = dir.path().join("img.tar");
    std::fs::write(&archive, img.archive()).unwrap();
    let direct = Store::new(dir.path().join("direct"));
    let (want, _) = import(&archive, None, &direct, Limits::default(), &mut Quiet).unwrap();

    let (_registry, port) = start_registry(dir.path(), "");
    let reference = format!("127.0.0.1:{port}/zone/test:1");
    let out = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo (scripts/setup.sh installs it)");
    assert!(out.status.success(), "skopeo: {}", String::from_utf8_lossy(&out.stderr));

    let store = dir.path().join("pulled");
    let out = zonectl(&store, &["pull", &reference]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pull failed: {stderr}");
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["digest"], want.digest, "the registry serves the manifest that was pushed");
    assert_eq!(got["verity"]["root"], want.verity.root, "and it converts to the same root");
    assert_eq!(got["names"][0], reference.as_str());
    assert!(stderr.contains("layer 2/2"), "progress per layer: {stderr}");
    let pulled = Store::new(store.clone());
    assert_eq!(
        std::fs::read(pulled.rootfs(&pulled.resolve(&reference).unwrap()).unwrap()).unwrap(),
        std::fs::read(direct.rootfs(&want).unwrap()).unwrap()
    );

    // A missing image: an error naming it.
    let out = zonectl(&dir.path().join("missing"), &["pull", &format!("127.0.0.1:{port}/zone/nope:1")]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("zone/nope") && e.contains("manifest"), "{e}");

    // A registry that accepts and never answers: given up on after --timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sport = silent.local_addr().unwrap().port();
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming().take(8) {
            let mut c = c.unwrap();
            c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let _ = c.read(&mut [0u8; 64]);
            held.push(c);
        }
    });
    let stuck = dir.path().join("stuck");
    let t = Instant::now();
    let out = zonectl(&stuck, &["pull", &format!("127.0.0.1:{sport}/zone/test:1"), "--timeout", "2"]);
    let took = t.elapsed();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("registry") && e.to_lowercase().contains("time"), "{e}");
    assert!(took < Duration::from_secs(30), "gave up after {took:?}");
    let stuck_store = Store::new(stuck.clone());
    assert!(stuck_store.list().unwrap().is_empty(), "nothing stored");
    let leftovers: Vec<_> = std::fs::read_dir(&stuck).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(leftovers.is_empty(), "no download left behind: {leftovers:?}");
    drop(holder);
}

/// `zonectl image pull` with the password on stdin (`None`: anonymous).
fn pull_as(store: &std::path::Path, reference: &str, credentials: Option<(&str, &str)>) -> std::process::Output {
    use std::io::Write;
    let mut cmd = Command::new(ZONECTL);
    cmd.args(["-o", "json", "image", "pull", reference]).arg("--store").arg(store);
    if let Some((user, _)) = credentials {
        cmd.args(["--username", user, "--password-stdin"]);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some((_, password)) = credentials {
        writeln!(stdin, "{password}").unwrap();
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn a_registry_behind_token_auth_serves_only_the_right_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let img = Image::new().layer(&[Entry::Dir("etc/", 0o755), Entry::File("etc/secret", 0o644, b"behind a token\n".to_vec())], Compression::Gzip);
    let archive = dir.path().join("img.tar");
    std::fs::write(&archive, img.archive()).unwrap();
    let tokens = zone_tests::token_service::TokenService::start(dir.path(), "zone-ci", "s3cret-pass");
    let auth = format!(
        "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
        tokens.realm(),
        zone_tests::token_service::SERVICE,
        zone_tests::token_service::ISSUER,
        tokens.cert.display()
    );
    let (_registry, port) = start_registry(dir.path(), &auth);
    let reference = format!("127.0.0.1:{port}/zone/private:1");
    let out = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--dest-creds", "zone-ci:s3cret-pass"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo (scripts/setup.sh installs it)");
    assert!(out.status.success(), "skopeo push with a token: {}", String::from_utf8_lossy(&out.stderr));
    assert!(tokens.issued.load(Ordering::SeqCst) >= 1, "skopeo went through the token service");

    // Anonymous: refused, and the error says how to give credentials.
    let anon = dir.path().join("anon");
    let out = pull_as(&anon, &reference, None);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an anonymous pull succeeded: {e}");
    assert!(e.contains("refused anonymous access") && e.contains("--username") && e.contains("--password-stdin"), "{e}");
    // Wrong password: refused as such.
    let refused_before = tokens.refused.load(Ordering::SeqCst);
    let wrong = dir.path().join("wrong");
    let out = pull_as(&wrong, &reference, Some(("zone-ci", "not-the-password")));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a pull with a wrong password succeeded: {e}");
    assert!(e.contains("refused these credentials"), "{e}");
    assert!(tokens.refused.load(Ordering::SeqCst) > refused_before, "the token service saw the wrong password");
    for store in [&anon, &wrong] {
        assert!(Store::new(store.to_path_buf()).list().unwrap().is_empty(), "a refused pull stored nothing");
    }

    // The right credentials: a token, then the image.
    let issued_before = tokens.issued.load(Ordering::SeqCst);
    let good = dir.path().join("good");
    let out = pull_as(&good, &reference, Some(("zone-ci", "s3cret-pass")));
    assert!(out.status.success(), "pull with credentials: {}", String::from_utf8_lossy(&out.stderr));
    assert!(tokens.issued.load(Ordering::SeqCst) > issued_before, "zonectl fetched a token");
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["digest"], img.manifest_digest());
}
