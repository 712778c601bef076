//! Measured launch, the event log, evidence and the verifier, through the
//! real daemon and `zonectl` on this machine's `/dev/kvm` (stub-guest zones)
//! with an embedded swtpm as the TPM; interop with tpm2-tools.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use attestation_proto::evidence;
use attestation_proto::policy::Policy;
use attestation_proto::verify::{Check, Trust, verify};
use common::*;

const NONCE: &str = "00112233445566778899aabbccddeeff";

fn ak_sha256(d: &Daemon) -> [u8; 32] {
    let log = d.json(&["eventlog"]);
    let h = hex::decode(log["ak_sha256"].as_str().unwrap()).unwrap();
    h.try_into().unwrap()
}

/// Evidence about `zone` for NONCE, and the policy admitting it.
fn evidence_and_policy(d: &Daemon, zone: &str) -> (Vec<u8>, Policy) {
    let file = d.dir.path().join(format!("{zone}.evidence"));
    let out = d.zonectl(&["evidence", zone, "--nonce", NONCE, "--out", file.to_str().unwrap()]);
    assert!(out.status.success(), "zonectl evidence: {}\n{}", text(&out.stderr), d.log());
    let policy = d.zonectl(&["policy", "suggest", zone]);
    assert!(policy.status.success(), "{}", text(&policy.stderr));
    (std::fs::read(file).unwrap(), Policy::parse(&text(&policy.stdout)).unwrap())
}

fn check_of(bytes: &[u8], nonce: &[u8], trust: &Trust, policy: &Policy) -> Check {
    verify(bytes, nonce, trust, policy).expect_err("tampered evidence was accepted").check
}

#[test]
fn evidence_verifies_and_each_kind_of_tampering_is_rejected_by_its_check() {
    let d = Daemon::new("").start();
    d.launch("web");
    d.launch("db");
    let trust = Trust::default().with("test-host", ak_sha256(&d));
    let nonce = hex::decode(NONCE).unwrap();
    let (bytes, policy) = evidence_and_policy(&d, "web");
    let v = verify(&bytes, &nonce, &trust, &policy).expect("genuine evidence must verify");
    assert_eq!(v.record.zone, "web");
    assert_eq!(v.record.host, "test-host");
    assert_eq!(v.zone_pcr, 15);
    assert_eq!(v.record.kernel.sha256, attestation_proto::launch::sha256_hex(&std::fs::read(STUB).unwrap()));

    // The CLI says the same, and names the check when it rejects.
    let file = d.dir.path().join("web.evidence");
    let pol = d.dir.path().join("web.policy");
    std::fs::write(&pol, policy.to_toml()).unwrap();
    let ak = format!("test-host={}", hex::encode(ak_sha256(&d)));
    let ok = d.json(&["verify", file.to_str().unwrap(), "--policy", pol.to_str().unwrap(), "--nonce", NONCE, "--trust-ak", &ak]);
    assert_eq!(ok["verified"], true);
    assert_eq!(ok["zone"], "web");
    let stale = d.zonectl(&["verify", file.to_str().unwrap(), "--policy", pol.to_str().unwrap(), "--nonce", "ffeeddccbbaa99887766554433221100", "--trust-ak", &ak, "-o", "json"]);
    assert_eq!(stale.status.code(), Some(3));
    let j: serde_json::Value = serde_json::from_slice(&stale.stdout).unwrap();
    assert_eq!(j["check"], "freshness");

    // The other zone's events are in the log only as digests.
    let ev = evidence::decode(&bytes).unwrap();
    let log = attestation_proto::eventlog::parse(&ev.event_log, &Default::default()).unwrap();
    assert_eq!(log.len(), 2);
    assert!(!String::from_utf8_lossy(&ev.event_log).contains("\"db\""), "another zone's record leaked into web's evidence");

    let retamper = |f: &dyn Fn(&mut evidence::Evidence)| {
        let mut e = evidence::decode(&bytes).unwrap();
        f(&mut e);
        evidence::encode(&e)
    };
    assert_eq!(check_of(b"garbage", &nonce, &trust, &policy), Check::Format);
    assert_eq!(check_of(&bytes, &nonce, &Trust::default().with("test-host", [7; 32]), &policy), Check::AkTrusted);
    // The right AK, trusted for another host: it cannot speak for this one.
    assert_eq!(check_of(&bytes, &nonce, &Trust::default().with("other-host", ak_sha256(&d)), &policy), Check::Host);
    let sig = retamper(&|e| {
        let n = e.quote_attest.len();
        e.quote_attest[n - 40] ^= 1; // inside pcrDigest
    });
    assert_eq!(check_of(&sig, &nonce, &trust, &policy), Check::Signature);
    assert_eq!(check_of(&bytes, &[9; 16], &trust, &policy), Check::Freshness);
    // Another zone's launch record presented with web's quote.
    let (db_bytes, _) = evidence_and_policy(&d, "db");
    let db_record = evidence::decode(&db_bytes).unwrap().launch_record;
    let swapped = retamper(&|e| e.launch_record = db_record.clone());
    assert_eq!(check_of(&swapped, &nonce, &trust, &policy), Check::Freshness);
    let pcr = retamper(&|e| e.pcrs[0].sha256[0] ^= 1);
    assert_eq!(check_of(&pcr, &nonce, &trust, &policy), Check::PcrDigest);
    let extra_pcr = retamper(&|e| e.pcrs.push(evidence::PcrValue { index: 16, sha256: vec![0; 32] }));
    assert_eq!(check_of(&extra_pcr, &nonce, &trust, &policy), Check::PcrSelection);
    let replay = retamper(&|e| {
        let n = e.event_log.len();
        e.event_log.truncate(n - 1);
        e.event_log.extend_from_slice(b"X");
    });
    assert!(matches!(check_of(&replay, &nonce, &trust, &policy), Check::EventLogReplay | Check::EventDigest | Check::LaunchRecord));
    let other_policy = Policy::parse(&policy.to_toml().replace(&v.record.kernel.sha256, &"ab".repeat(32))).unwrap();
    let e = verify(&bytes, &nonce, &trust, &other_policy).unwrap_err();
    assert_eq!(e.check, Check::Policy);
    assert!(e.detail.starts_with("kernel sha256:"), "{e}");
}

#[test]
fn tpm2_tools_accept_the_exported_quote_and_log_and_reject_tampering() {
    for tool in ["tpm2_checkquote", "tpm2_eventlog"] {
        assert!(Command::new(tool).arg("--version").output().is_ok(), "{tool} is missing: apt-get install tpm2-tools");
    }
    let d = Daemon::new("").start();
    d.launch("web");
    let dir = d.dir.path().join("export");
    let out = d.zonectl(&["evidence", "web", "--nonce", NONCE, "--export", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let f = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    let qual = std::fs::read_to_string(dir.join("qualifying-data.hex")).unwrap();
    let checkquote = |msg: &str, log: &str| {
        Command::new("tpm2_checkquote")
            .args(["-u", &f("ak.pem"), "-m", msg, "-s", &f("quote.sig"), "-f", &f("quote.pcrs"), "-g", "sha256"])
            .args(["-q", qual.trim(), "-e", log])
            .output()
            .unwrap()
    };
    let ok = checkquote(&f("quote.msg"), &f("eventlog.bin"));
    assert!(ok.status.success(), "tpm2_checkquote rejected our quote: {}{}", text(&ok.stdout), text(&ok.stderr));
    let ev = Command::new("tpm2_eventlog").arg(f("eventlog.bin")).output().unwrap();
    assert!(ev.status.success(), "tpm2_eventlog: {}", text(&ev.stderr));
    let pcr = d.json(&["eventlog"])["pcr_value"].as_str().unwrap().to_owned();
    assert!(text(&ev.stdout).to_lowercase().contains(&pcr), "tpm2_eventlog's replay lacks PCR value {pcr}:\n{}", text(&ev.stdout));

    let tampered = |name: &str, at: usize| {
        let mut b = std::fs::read(dir.join(name)).unwrap();
        b[at] ^= 0x01;
        let p = d.dir.path().join(format!("tampered-{name}"));
        std::fs::write(&p, b).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let n = std::fs::read(dir.join("quote.msg")).unwrap().len();
    let bad_quote = checkquote(&tampered("quote.msg", n - 40), &f("eventlog.bin"));
    assert!(!bad_quote.status.success(), "tpm2_checkquote accepted a tampered quote");
    // A flipped byte in the first event's digest (65-byte header, then
    // pcrIndex, eventType, digest count, hashAlg): the log no longer replays.
    let bad_log = tampered("eventlog.bin", 65 + 14 + 5);
    let rejected = checkquote(&f("quote.msg"), &bad_log);
    assert!(!rejected.status.success(), "tpm2_checkquote accepted a tampered event log");

    // The keys a verifier pins: the same AK as in the evidence, and the EK
    // certificate (the embedded swtpm has one), whose key is the EK's.
    let keys = d.dir.path().join("keys");
    let out = d.zonectl(&["eventlog", "--export-keys", keys.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(keys.join("ak.pem")).unwrap(), std::fs::read(dir.join("ak.pem")).unwrap());
    let ak_pub = std::fs::read(keys.join("ak.pub")).unwrap();
    assert_eq!(hex::encode(attestation_proto::verify::ak_digest(&ak_pub)), d.json(&["eventlog"])["ak_sha256"].as_str().unwrap());
    let ek = attestation_proto::tpm::public::PublicArea::parse(&std::fs::read(keys.join("ek.pub")).unwrap()).unwrap();
    let attestation_proto::tpm::public::KeyParams::Rsa(rsa) = ek.params else { panic!("the EK is RSA") };
    let modulus = Command::new("openssl")
        .args(["x509", "-inform", "DER", "-noout", "-modulus", "-in", keys.join("ek-cert.der").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(modulus.status.success(), "openssl cannot read ek-cert.der: {}", text(&modulus.stderr));
    assert_eq!(text(&modulus.stdout).trim().to_lowercase(), format!("modulus={}", hex::encode(&rsa.modulus)));
}

#[test]
fn a_crash_between_log_append_and_pcr_extend_is_reconciled_at_restart() {
    for point in ["before-append", "after-append", "after-extend"] {
        let mut d = Daemon::new("").start();
        d.launch("before");
        d.kill9();
        d.set_env("HYPERVISOR_AGENT_FAULT", point);
        d.restart();
        // This launch aborts the daemon at `point`.
        let _ = d.zonectl(&["launch", "victim", "--no-wait"]);
        d.wait_for_exit();
        d.clear_env();
        d.restart();
        let log = d.json(&["eventlog"]);
        assert_eq!(log["replays_to_pcr"], true, "{point}: {log}\n{}", d.log());
        let kinds: Vec<&str> = log["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
        match point {
            "before-append" => assert_eq!(kinds, ["launch"], "{point}"),
            // The interrupted launch is completed in the PCR and closed with a stop event.
            _ => assert_eq!(kinds, ["launch", "launch", "stop"], "{point}: {log}"),
        }
        d.launch("after");
        let (bytes, policy) = evidence_and_policy(&d, "after");
        let trust = Trust::default().with("test-host", ak_sha256(&d));
        verify(&bytes, &hex::decode(NONCE).unwrap(), &trust, &policy).unwrap_or_else(|e| panic!("{point}: {e}"));
    }
}

#[test]
fn the_daemon_refuses_to_start_when_something_else_extended_its_pcr() {
    let mut d = Daemon::new("").start();
    d.launch("web");
    d.kill9();
    let port = d.swtpm_port();
    // Only root can reach the embedded swtpm (in its private network namespace).
    let st = Command::new("nsenter")
        .arg(format!("--net=/proc/{}/ns/net", d.swtpm_pid()))
        .arg("tpm2_pcrextend")
        .arg(format!("15:sha256={}", "ab".repeat(32)))
        .env("TPM2TOOLS_TCTI", format!("swtpm:host=127.0.0.1,port={port}"))
        .status()
        .unwrap();
    assert!(st.success());
    let mut child = d.spawn();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "the daemon started despite a foreign extend");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let log = d.log();
    assert!(log.contains("something else extended PCR 15"), "{log}");
}

#[test]
fn the_log_survives_daemon_restarts_until_the_tpm_resets() {
    let mut d = Daemon::new("").start();
    d.launch("web");
    d.kill9();
    d.restart();
    let log = d.json(&["eventlog"]);
    assert_eq!(log["events"].as_array().unwrap().len(), 1);
    assert_eq!(log["replays_to_pcr"], true);
    let reset = log["reset_count"].as_u64().unwrap();
    // A new swtpm process is a TPM reset (a host reboot for the embedded TPM).
    d.kill9();
    d.stop_swtpm();
    d.restart();
    let log = d.json(&["eventlog"]);
    assert_ne!(log["reset_count"].as_u64().unwrap(), reset);
    assert!(log["events"].as_array().unwrap().is_empty(), "{log}");
    assert!(d.state().join(format!("eventlog/eventlog-{reset}.bin")).exists(), "the old log is archived");
    let out = d.zonectl(&["evidence", "web", "--nonce", NONCE]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("before the TPM was reset"), "{}", text(&out.stderr));
}

#[test]
fn the_zone_boots_the_measured_bytes_even_if_the_file_is_replaced_after_measurement() {
    let mut d = Daemon::new("");
    let kernel = d.dir.path().join("vmlinux");
    let original = std::fs::read(STUB).unwrap();
    std::fs::write(&kernel, &original).unwrap();
    d.set_env("HYPERVISOR_AGENT_PAUSE_AFTER_MEASURE_MS", "1500");
    d.restart();
    let zonectl = std::process::Command::new(ZONECTL)
        .arg("--socket")
        .arg(d.socket())
        .args(["launch", "web", "--no-wait", "--kernel", kernel.to_str().unwrap(), "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // Replaced after measurement, before the VMM starts: not even an ELF file.
    std::fs::write(&kernel, b"this is not the kernel that was measured").unwrap();
    let out = zonectl.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", d.log());
    let z = d.wait_state_alive("web");
    assert_eq!(z["measurement"]["kernel_sha256"], attestation_proto::launch::sha256_hex(&original));
    assert!(Path::new(&format!("/proc/{}", z["vmm_pid"])).exists(), "the VMM booted the measured bytes and runs");
}

#[test]
fn an_unchanged_file_is_measured_once_and_a_rewritten_one_is_measured_again() {
    let d = Daemon::new("").start();
    let kernel = d.dir.path().join("vmlinux");
    let original = std::fs::read(STUB).unwrap();
    std::fs::write(&kernel, &original).unwrap();
    let aged = || std::time::SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options().write(true).open(&kernel).unwrap().set_modified(aged()).unwrap();
    // Out of the racy window (host_attest::cache::RACY_WINDOW) of that change.
    std::thread::sleep(host_attest::cache::RACY_WINDOW + Duration::from_millis(100));
    let launch = |name: &str| {
        let out = d.zonectl(&["launch", name, "--no-wait", "--kernel", kernel.to_str().unwrap(), "-o", "json"]);
        assert!(out.status.success(), "{}\n{}", text(&out.stderr), d.log());
        let z = d.wait_state_alive(name);
        (z["measurement"]["kernel_sha256"].as_str().unwrap().to_owned(), z)
    };
    let cached = |name: &str| {
        let log = d.log();
        let line = log.lines().filter(|l| l.contains("VMM started") && l.contains(&format!("zone={name}"))).last().map(str::to_owned);
        line.unwrap_or_else(|| panic!("no launch line for {name}:\n{log}")).contains("kernel_cached=true")
    };
    let (a, _) = launch("a");
    assert_eq!(a, attestation_proto::launch::sha256_hex(&original));
    assert!(!cached("a"), "the first launch measures the file");
    let (b, _) = launch("b");
    assert_eq!(b, a);
    assert!(cached("b"), "an unchanged file is not read again:\n{}", d.log());

    // Rewritten in place (still a bootable ELF: bytes appended), its
    // modification time put back: the change time moved, so it is measured anew.
    let mut grown = original.clone();
    grown.extend_from_slice(b"appended after the cache was filled");
    std::fs::write(&kernel, &grown).unwrap();
    std::fs::File::options().write(true).open(&kernel).unwrap().set_modified(aged()).unwrap();
    let (c, z) = launch("c");
    assert_eq!(c, attestation_proto::launch::sha256_hex(&grown), "the new content is measured, never the cached digest");
    assert!(!cached("c"));
    assert!(Path::new(&format!("/proc/{}", z["vmm_pid"])).exists(), "and it boots");
    // The zone launched before the rewrite still holds the bytes it measured.
    let zb = d.json(&["inspect", "b"]);
    assert_eq!(zb["measurement"]["kernel_sha256"], a);
}

/// Stops the embedded swtpm a ledger in `dir` started, when dropped.
struct SwtpmGuard<'a>(&'a Path);

impl Drop for SwtpmGuard<'_> {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0.join("swtpm/swtpm.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

#[test]
fn after_100000_events_a_new_zones_evidence_is_small_and_verifies() {
    use attestation_proto::eventlog::{Event, TAG_ZONE_LAUNCH, TAG_ZONE_STOP};
    use attestation_proto::launch::{Artifact, LaunchRecord, RECORD_VERSION, StopRecord, sha256_hex};
    use host_attest::evidence::Expected;
    use host_attest::{Ledger, TpmSettings};

    let record = |i: u64| {
        let cmdline = format!("console=ttyS0 zone.history={i}");
        LaunchRecord {
            version: RECORD_VERSION,
            host: "history-host".into(),
            zone: format!("zone-{i}"),
            launch_id: format!("{i:032x}"),
            kernel: Artifact::measure("/opt/zone/kernel/vmlinux", b"kernel"),
            initrd: Some(Artifact::measure("/opt/zone/images/base.cpio", b"initrd")),
            cmdline_sha256: sha256_hex(cmdline.as_bytes()),
            cmdline,
            vcpus: 1,
            memory_mib: 64,
            devices: vec![format!("virtio-vsock:cid={}", i + 3)],
            launched_unix_ms: 1,
            rootfs: None,
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let _swtpm = SwtpmGuard(dir.path());
    let settings = TpmSettings { device: "/nonexistent/tpm".into(), swtpm_port: free_port_pair(), ..TpmSettings::default() };
    let ledger = Ledger::start(&settings, dir.path()).expect("the ledger starts on an embedded swtpm");
    // A zone launched before all that history, still running after it.
    let early = record(2_000_000);
    ledger.record_launch(15, &early).unwrap();
    // 50,000 zones launched and stopped in this TPM boot: 100,000 events,
    // each appended and extended into the real (software) TPM.
    let started = Instant::now();
    for chunk in 0..50u64 {
        let mut events = Vec::with_capacity(2000);
        for i in chunk * 1000..(chunk + 1) * 1000 {
            let r = record(i);
            events.push(Event::zone(15, TAG_ZONE_LAUNCH, &r.launch_id, &r.encode()));
            let stop = StopRecord { version: RECORD_VERSION, zone: r.zone.clone(), launch_id: r.launch_id.clone(), reason: "stopped".into(), stopped_unix_ms: 2 };
            events.push(Event::zone(15, TAG_ZONE_STOP, &r.launch_id, &stop.encode()));
        }
        ledger.record_bulk(events).unwrap();
    }
    let history = started.elapsed();
    let snap = ledger.snapshot().unwrap();
    assert!(snap.events >= 100_000, "{} events", snap.events);

    // A new zone on that host.
    let ours = record(1_000_000);
    ledger.record_launch(15, &ours).unwrap();
    let nonce = [0x5a; 32];
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let expected = Expected { zone: ours.zone.clone(), record: ours.encode() };
    let bytes = rt.block_on(ledger.evidence(&ours.launch_id, expected, &nonce)).unwrap();
    let trust = Trust::default().with("history-host", attestation_proto::verify::ak_digest(&snap.ak_public));
    let v = verify(&bytes, &nonce, &trust, &Policy::admitting(&ours)).expect("the new zone's evidence verifies");
    assert_eq!(v.record, ours);
    assert!(v.checkpoint_seq.is_some(), "the evidence starts after a checkpoint");
    assert!(v.events <= host_attest::ledger::CHECKPOINT_EVERY + 1, "{} events in the evidence", v.events);
    let own = Event::zone(15, TAG_ZONE_LAUNCH, &ours.launch_id, &ours.encode()).encode().len();
    assert!(bytes.len() < 64 * 1024 + own, "evidence of {} bytes after 100,000 events", bytes.len());
    // The early zone's launch is before the checkpoint: it proves it was live there.
    let expected = Expected { zone: early.zone.clone(), record: early.encode() };
    let bytes_early = rt.block_on(ledger.evidence(&early.launch_id, expected, &nonce)).unwrap();
    let v_early = verify(&bytes_early, &nonce, &trust, &Policy::admitting(&early)).expect("the early zone's evidence verifies");
    assert_eq!(v_early.record, early);
    assert!(attestation_proto::evidence::decode(&bytes_early).unwrap().checkpoint.unwrap().live_proof.is_some());
    assert!(bytes_early.len() < 64 * 1024, "{} bytes", bytes_early.len());
    eprintln!("100,000 events of history in {history:?}; the new zone's evidence: {} bytes, {} events after checkpoint {:?}", bytes.len(), v.events, v.checkpoint_seq);

    // A log over the verifier's event limit was never what bounded this:
    // the whole log is far larger than any evidence.
    assert!(snap.events as usize > attestation_proto::verify::MAX_EVENTS);
}
