//! Interoperability of `attestation_proto::tpm` with a real TPM stack:
//! swtpm plus tpm2-tools create an EK, an ECC AK and quotes; the pure-Rust
//! code must parse and verify what the tools wrote, reproduce the Names and
//! the Qualified Name, and write a PCR file byte-identical to `tpm2_quote -o`
//! that `tpm2_checkquote` accepts together with our PEM key.
//!
//! Needs `swtpm` and `tpm2-tools` on PATH; without them the test fails (it
//! never skips) and says what to install.
#![allow(clippy::tests_outside_test_module, reason = "an integration test crate holds nothing but tests")]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use attestation_proto::tpm::{
    ALG_SHA256, Attest, PublicArea, Signature, TPM_RH_ENDORSEMENT, TpmError, pcr_digest, qualified_name_of_child,
    qualified_name_of_primary, serialize_tpm2_tools_pcrs,
};

const TOOLS: [&str; 9] = [
    "swtpm",
    "tpm2_createek",
    "tpm2_createak",
    "tpm2_readpublic",
    "tpm2_pcrextend",
    "tpm2_pcrread",
    "tpm2_quote",
    "tpm2_checkquote",
    "tpm2_flushcontext",
];
const NONCE: &str = "5a6f6e652061747465737465722074706d322d746f6f6c7320696e7465726f70";
const NONCE9: &str = "0123456789abcdef0123456789abcdef";
const EXTEND: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// A running swtpm, killed when dropped (also when the test panics).
struct Swtpm {
    child: Child,
    port: u16,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// A port P such that P and P + 1 are both free on loopback right now.
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let Ok(first) = TcpListener::bind("127.0.0.1:0") else { continue };
        let Ok(port) = first.local_addr().map(|a| a.port()) else { continue };
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free pair of loopback TCP ports");
}

fn start_swtpm(dir: &Path) -> Swtpm {
    let state = dir.join("tpmstate");
    std::fs::create_dir_all(&state).unwrap();
    for attempt in 0..3 {
        let port = free_port_pair();
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2"])
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start swtpm ({e}); apt-get install swtpm tpm2-tools"));
        let mut swtpm = Swtpm { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if swtpm.child.try_wait().ok().flatten().is_some() {
                break; // lost the port race; try another pair
            }
            let up = |p: u16| TcpStream::connect_timeout(&([127, 0, 0, 1], p).into(), Duration::from_millis(200)).is_ok();
            if up(port) && up(port + 1) {
                return swtpm;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("swtpm attempt {attempt} on port {port} did not come up");
        drop(swtpm);
    }
    panic!("swtpm did not start");
}

/// Runs a tpm2-tools command against the swtpm in `dir`; panics with its output on failure.
fn tpm2(swtpm: &Swtpm, dir: &Path, args: &[&str]) -> Output {
    let out = run(swtpm, dir, args);
    assert!(
        out.status.success(),
        "`{}` failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // No resource manager and three transient slots: flush after every tool.
    let flush = run(swtpm, dir, &["tpm2_flushcontext", "-t"]);
    assert!(flush.status.success(), "tpm2_flushcontext -t failed: {}", String::from_utf8_lossy(&flush.stderr));
    out
}

fn run(swtpm: &Swtpm, dir: &Path, args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .env("TPM2TOOLS_TCTI", format!("swtpm:host=127.0.0.1,port={}", swtpm.port))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}); apt-get install swtpm tpm2-tools", args[0]))
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn values(bytes: &[u8]) -> Vec<[u8; 32]> {
    assert_eq!(bytes.len() % 32, 0, "tpm2_pcrread -o writes whole SHA-256 digests");
    bytes.chunks(32).map(|c| c.try_into().unwrap()).collect()
}

#[test]
fn tpm2_tools_quotes_verify_and_our_pcr_file_matches() {
    let missing: Vec<&str> = TOOLS.into_iter().filter(|t| !on_path(t)).collect();
    assert!(missing.is_empty(), "missing {missing:?}: apt-get install swtpm tpm2-tools");

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let swtpm = start_swtpm(dir);

    // EK (RSA, transient) and an ECC P-256 ECDSA-SHA256 AK under it.
    tpm2(&swtpm, dir, &["tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"]);
    tpm2(&swtpm, dir, &["tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256", "-s", "ecdsa"]
        .into_iter()
        .chain(["-u", "ak.pem", "-n", "ak.name", "-q", "ak.qname", "-f", "pem"])
        .collect::<Vec<_>>());
    tpm2(&swtpm, dir, &["tpm2_readpublic", "-c", "ek.ctx", "-n", "ek.name", "-o", "ek.tpm2b"]);
    tpm2(&swtpm, dir, &["tpm2_readpublic", "-c", "ak.ctx", "-f", "tss", "-o", "ak.tpm2b"]);

    // Extend PCR 15, quote it, read it.
    tpm2(&swtpm, dir, &["tpm2_pcrextend", &format!("15:sha256={EXTEND}")]);
    tpm2(&swtpm, dir, &["tpm2_quote", "-c", "ak.ctx", "-l", "sha256:15", "-q", NONCE]
        .into_iter()
        .chain(["-m", "quote.msg", "-s", "quote.sig", "-o", "quote.pcrs", "-g", "sha256"])
        .collect::<Vec<_>>());
    tpm2(&swtpm, dir, &["tpm2_pcrread", "sha256:15", "-o", "pcr15.bin"]);

    // The quote parses and carries our nonce and selection.
    let msg = read(dir, "quote.msg");
    let attest = Attest::parse(&msg).unwrap();
    assert_eq!(hex::encode(&attest.extra_data), NONCE);
    assert_eq!(attest.pcr_select.len(), 1);
    assert_eq!(attest.pcr_select[0].hash_alg, ALG_SHA256);
    assert_eq!(attest.pcr_select[0].pcrs(), vec![15]);
    assert!(attest.clock.safe);

    // The AK and EK parse; our Names equal the TPM's.
    let ak = PublicArea::parse_tpm2b(&read(dir, "ak.tpm2b")).unwrap();
    assert!(ak.is_restricted_signing_key());
    assert_eq!(ak.name(), read(dir, "ak.name"));
    let ek = PublicArea::parse_tpm2b(&read(dir, "ek.tpm2b")).unwrap();
    assert_eq!(ek.name(), read(dir, "ek.name"));
    assert_eq!(PublicArea::parse_tpm2b(&read(dir, "ek.pub")).unwrap(), ek);
    assert!(!ek.is_restricted_signing_key());

    // Our SubjectPublicKeyInfo PEM is the one tpm2-tools wrote.
    let pem = ak.to_spki_pem().unwrap();
    assert_eq!(pem.trim(), String::from_utf8(read(dir, "ak.pem")).unwrap().trim());

    // The signature verifies; a flipped bit of the message or signature does not.
    let sig = Signature::parse(&read(dir, "quote.sig")).unwrap();
    ak.verify(&msg, &sig).unwrap();
    let mut tampered = msg.clone();
    tampered[50] ^= 1;
    assert_eq!(ak.verify(&tampered, &sig), Err(TpmError::BadSignature));
    let mut bad_sig = sig.clone();
    bad_sig.s[31] ^= 1;
    assert_eq!(ak.verify(&msg, &bad_sig), Err(TpmError::BadSignature));

    // qualifiedSigner is QN(AK) = H(QN(EK) ‖ Name(AK)), QN(EK) = H(TPM_RH_ENDORSEMENT ‖ Name(EK)).
    let qn = qualified_name_of_child(&qualified_name_of_primary(TPM_RH_ENDORSEMENT, &ek.name()), &ak.name());
    assert_eq!(qn, attest.qualified_signer);
    assert_eq!(qn, read(dir, "ak.qname"));
    assert_ne!(ak.name(), attest.qualified_signer);

    // PCR digest and the serialized PCR file.
    let pcr15 = values(&read(dir, "pcr15.bin"));
    assert_eq!(pcr_digest(&pcr15).to_vec(), attest.pcr_digest);
    let ours = serialize_tpm2_tools_pcrs(&[15], &pcr15).unwrap();
    assert_eq!(ours, read(dir, "quote.pcrs"), "our serialized PCR file differs from tpm2_quote -o");

    // tpm2_checkquote accepts our key and our PCR file, with the TSS and the DER signature.
    write(dir, "ours.pem", pem.as_bytes());
    write(dir, "ours.pcrs", &ours);
    write(dir, "quote.der", &sig.to_der().unwrap());
    for sig_file in ["quote.sig", "quote.der"] {
        let args = ["tpm2_checkquote", "-u", "ours.pem", "-m", "quote.msg", "-s", sig_file, "-f", "ours.pcrs", "-g", "sha256", "-q", NONCE];
        tpm2(&swtpm, dir, &args);
    }
    // ... and rejects a wrong PCR value or a wrong nonce.
    let mut wrong = pcr15.clone();
    wrong[0][0] ^= 1;
    write(dir, "wrong.pcrs", &serialize_tpm2_tools_pcrs(&[15], &wrong).unwrap());
    let args = ["tpm2_checkquote", "-u", "ours.pem", "-m", "quote.msg", "-s", "quote.sig", "-f", "wrong.pcrs", "-g", "sha256", "-q", NONCE];
    assert!(!run(&swtpm, dir, &args).status.success(), "tpm2_checkquote accepted a wrong PCR value");
    let args = ["tpm2_checkquote", "-u", "ours.pem", "-m", "quote.msg", "-s", "quote.sig", "-f", "ours.pcrs", "-g", "sha256", "-q", NONCE9];
    assert!(!run(&swtpm, dir, &args).status.success(), "tpm2_checkquote accepted a wrong nonce");

    // Nine PCRs: two digest lists in the serialized file (8 + 1).
    let selection = [0, 1, 2, 3, 4, 5, 6, 7, 15];
    let list = "sha256:0,1,2,3,4,5,6,7,15";
    tpm2(&swtpm, dir, &["tpm2_quote", "-c", "ak.ctx", "-l", list, "-q", NONCE9]
        .into_iter()
        .chain(["-m", "q9.msg", "-s", "q9.sig", "-o", "q9.pcrs", "-g", "sha256"])
        .collect::<Vec<_>>());
    tpm2(&swtpm, dir, &["tpm2_pcrread", list, "-o", "p9.bin"]);
    let msg9 = read(dir, "q9.msg");
    let attest9 = Attest::parse(&msg9).unwrap();
    assert_eq!(attest9.pcr_select[0].pcrs(), selection.to_vec());
    assert_eq!(hex::encode(&attest9.extra_data), NONCE9);
    ak.verify(&msg9, &Signature::parse(&read(dir, "q9.sig")).unwrap()).unwrap();
    let values9 = values(&read(dir, "p9.bin"));
    assert_eq!(values9.len(), 9);
    assert_eq!(pcr_digest(&values9).to_vec(), attest9.pcr_digest);
    let ours9 = serialize_tpm2_tools_pcrs(&selection, &values9).unwrap();
    assert_eq!(ours9.len(), 1200);
    assert_eq!(ours9, read(dir, "q9.pcrs"), "our 9-PCR serialized file differs from tpm2_quote -o");
    write(dir, "ours9.pcrs", &ours9);
    let args = ["tpm2_checkquote", "-u", "ours.pem", "-m", "q9.msg", "-s", "q9.sig", "-f", "ours9.pcrs", "-g", "sha256", "-q", NONCE9];
    tpm2(&swtpm, dir, &args);
}
