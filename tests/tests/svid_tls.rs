//! `svid-tls` on loopback, with SVID-shaped certificates (a P-256 CA, leaves
//! whose one URI SAN is a SPIFFE ID) made by the `openssl` CLI: mutual TLS
//! completes between the expected IDs, and is refused for a server that is
//! not the expected ID, a client that is not, a client without a
//! certificate, one with a self-signed certificate claiming the expected
//! ID, and one whose certificate chains to another CA; `openssl s_client`
//! with the client's SVID completes the handshake with `svid-tls serve` (a
//! peer that is not ours). The test-host run with real SPIRE is
//! `testhost_spire::verified_zones_talk_mutual_tls_over_the_zone_network_and_a_denied_zone_cannot`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SVID_TLS: &str = env!("CARGO_BIN_EXE_svid-tls");
const SERVER_ID: &str = "spiffe://example.org/workload/server";
const CLIENT_ID: &str = "spiffe://example.org/workload/client";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is needed to make the test certificates: apt-get install openssl (scripts/setup.sh does)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`<ca>.pem`, `<ca>.key`) in `dir`.
fn ca(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", &format!("{ca}.key"), "-out",
            &format!("{ca}.pem"), "-subj", &format!("/O=SPIFFE/CN={ca}"), "-days", "1", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// The files `spire-agent api fetch x509 -write` leaves, in `dir/name`: a
/// leaf for `id` signed by `ca`, its key, and `bundle` as the trust bundle.
fn svid(dir: &Path, name: &str, id: &str, ca: &str, bundle: &str) -> std::path::PathBuf {
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!(
            "subjectAltName=URI:{id}\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature,keyAgreement\nbasicConstraints=critical,CA:FALSE\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", &format!("{name}/svid.0.key"), "-out",
            &format!("{name}.csr"), "-subj", "/O=SPIRE",
        ],
    );
    openssl(
        dir,
        &[
            "x509", "-req", "-in", &format!("{name}.csr"), "-CA", &format!("{ca}.pem"), "-CAkey", &format!("{ca}.key"), "-CAcreateserial",
            "-days", "1", "-out", &format!("{name}/svid.0.pem"), "-extfile", &format!("{name}.ext"),
        ],
    );
    std::fs::copy(dir.join(format!("{bundle}.pem")), out.join("bundle.0.pem")).unwrap();
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `svid-tls serve` on `port`, once it listens; its stdout is read line by line.
struct Server {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Server {
    fn start(port: u16, dir: &Path, peer: &str) -> Self {
        let mut child = Command::new(SVID_TLS)
            .args(["serve", &port.to_string(), dir.to_str().unwrap(), peer])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let s = Self { child, lines };
        assert_eq!(s.next(), format!("SVID-TLS listening={port}"));
        s
    }

    /// The next line it prints (10 s at most).
    fn next(&self) -> String {
        self.lines.recv_timeout(Duration::from_secs(10)).expect("svid-tls serve printed nothing for 10 s")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(SVID_TLS).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn mutual_tls_completes_only_between_the_expected_spiffe_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ca(d, "ca");
    ca(d, "other-ca");
    let server = svid(d, "server", SERVER_ID, "ca", "ca");
    let client = svid(d, "client", CLIENT_ID, "ca", "ca");
    let stranger = svid(d, "stranger", "spiffe://example.org/workload/stranger", "ca", "ca");
    let outsider = svid(d, "outsider", CLIENT_ID, "other-ca", "ca");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let srv = Server::start(port, &server, CLIENT_ID);

    let (code, out) = run(&["connect", &addr, client.to_str().unwrap(), SERVER_ID]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("SVID-TLS ok={SERVER_ID}\n")), "{out}");
    assert!(out.contains(&format!("SVID-TLS said=hello {CLIENT_ID}\n")), "{out}");
    assert_eq!(srv.next(), format!("SVID-TLS accepted={CLIENT_ID}"));

    // The client expects another server: it refuses this one.
    let (code, out) = run(&["connect", &addr, client.to_str().unwrap(), "spiffe://example.org/workload/db"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("the peer is {SERVER_ID}, not spiffe://example.org/workload/db")), "{out}");
    assert!(srv.next().starts_with("SVID-TLS refused="));

    // A verified workload of the trust domain that is not the expected client.
    let (code, out) = run(&["connect", &addr, stranger.to_str().unwrap(), SERVER_ID]);
    assert_eq!(code, 1, "{out}");
    let refused = srv.next();
    assert!(refused.contains("the peer is spiffe://example.org/workload/stranger, not spiffe://example.org/workload/client"), "{refused}");

    // The expected ID, from a CA the bundle does not hold.
    let (code, out) = run(&["connect", &addr, outsider.to_str().unwrap(), SERVER_ID]);
    assert_eq!(code, 1, "{out}");
    let refused = srv.next();
    assert!(refused.contains("UnknownIssuer"), "{refused}");

    // No certificate; a self-signed one claiming the client's ID.
    let (code, out) = run(&["forge", &addr, CLIENT_ID]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("SVID-TLS anonymous=refused:"), "{out}");
    assert!(out.contains("SVID-TLS forged=refused:"), "{out}");
    let anonymous = srv.next();
    assert!(anonymous.contains("no certificates"), "{anonymous}");
    let forged = srv.next();
    assert!(forged.contains("UnknownIssuer"), "{forged}");

    // Another TLS stack with the client's SVID.
    let s_client = Command::new("openssl")
        .args(["s_client", "-connect", &addr, "-ign_eof", "-verify_return_error", "-CAfile"])
        .arg(client.join("bundle.0.pem"))
        .arg("-cert")
        .arg(client.join("svid.0.pem"))
        .arg("-key")
        .arg(client.join("svid.0.key"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&s_client.stdout);
    assert!(said.contains(&format!("hello {CLIENT_ID}")), "openssl s_client did not get the greeting:\n{said}\n{}", String::from_utf8_lossy(&s_client.stderr));
    assert!(said.contains("Verify return code: 0 (ok)"), "{said}");
    assert_eq!(srv.next(), format!("SVID-TLS accepted={CLIENT_ID}"));

    // Bad input: a directory without an SVID says which file.
    let (code, out) = run(&["connect", &addr, d.join("nowhere").to_str().unwrap(), SERVER_ID]);
    assert_eq!(code, 1);
    assert!(out.contains("svid.0.pem"), "{out}");
    let (code, _) = run(&["serve"]);
    assert_eq!(code, 2);
}
