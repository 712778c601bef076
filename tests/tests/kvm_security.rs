//! Attacks from the host on a zone's identity, each performed for real
//! against the daemon (this machine's `/dev/kvm`, stub-guest zones, the
//! embedded swtpm) and shown refused with nothing lost:
//!
//! - an unprivileged local user reaching the embedded TPM;
//! - a `socket_group` member making the root daemon read a file it cannot;
//! - files on disk altered while the daemon is down (a foreign event appended
//!   to the log, a duplicate launch id, two zones' records swapped, a zone's
//!   launch removed from its record);
//! - oversized input meant to break the log;
//! - a host claiming another host's id.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use attestation_proto::eventlog::{Event, TAG_ZONE_LAUNCH};
use attestation_proto::launch::LaunchRecord;
use attestation_proto::policy::Policy;
use attestation_proto::verify::{Check, Trust, verify};
use common::*;

const NONCE: &str = "00112233445566778899aabbccddeeff";

/// Runs `args` as `nobody` (uid/gid 65534), with `groups` as its only
/// supplementary groups, under a 20-second timeout.
fn as_nobody(groups: &[u32], args: &[&str], env: &[(&str, String)]) -> Output {
    let mut c = Command::new("timeout");
    c.args(["20", "setpriv", "--reuid=65534", "--regid=65534"]);
    if groups.is_empty() {
        c.arg("--clear-groups");
    } else {
        c.arg(format!("--groups={}", groups.iter().map(u32::to_string).collect::<Vec<_>>().join(",")));
    }
    c.args(args).envs(env.iter().map(|(k, v)| (*k, v.as_str()))).output().expect("setpriv (util-linux) runs")
}

fn eventlog(d: &Daemon) -> serde_json::Value {
    d.json(&["eventlog"])
}

fn trust_of(d: &Daemon) -> Trust {
    let log = eventlog(d);
    let entry = log["trust_entry"].as_str().expect("eventlog names its trust entry");
    Trust { aks: vec![Trust::parse_entry(entry).unwrap()] }
}

/// Evidence about `zone` for NONCE and the policy admitting it.
fn evidence_and_policy(d: &Daemon, zone: &str) -> (Vec<u8>, Policy) {
    let file = d.dir.path().join(format!("{zone}.evidence"));
    let out = d.zonectl(&["evidence", zone, "--nonce", NONCE, "--out", file.to_str().unwrap()]);
    assert!(out.status.success(), "zonectl evidence {zone}: {}\n{}", text(&out.stderr), d.log());
    let policy = d.zonectl(&["policy", "suggest", zone]);
    assert!(policy.status.success(), "{}", text(&policy.stderr));
    (std::fs::read(file).unwrap(), Policy::parse(&text(&policy.stdout)).unwrap())
}

fn assert_verifies(d: &Daemon, zone: &str) {
    let (bytes, policy) = evidence_and_policy(d, zone);
    verify(&bytes, &hex::decode(NONCE).unwrap(), &trust_of(d), &policy).unwrap_or_else(|e| panic!("{zone}: {e}"));
}

/// Starts the daemon and waits for it to exit on its own; returns its log.
fn refuses_to_start(d: &mut Daemon) -> String {
    let mut child = d.spawn();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the daemon started anyway:\n{}", d.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "the daemon exited with success:\n{}", d.log());
    d.log()
}

fn log_file(d: &Daemon) -> std::path::PathBuf {
    d.state().join("eventlog/eventlog.bin")
}

/// Extends the zone PCR of the daemon's embedded swtpm as root from inside
/// its private network namespace (what only root can do).
fn extend_as_root(d: &Daemon, digest: &[u8; 32]) {
    let st = Command::new("nsenter")
        .arg(format!("--net=/proc/{}/ns/net", d.swtpm_pid()))
        .arg("tpm2_pcrextend")
        .arg(format!("15:sha256={}", hex::encode(digest)))
        .env("TPM2TOOLS_TCTI", format!("swtpm:host=127.0.0.1,port={}", d.swtpm_port()))
        .status()
        .unwrap();
    assert!(st.success(), "root could not extend the embedded TPM from its namespace");
}

#[test]
fn only_the_daemon_reaches_its_embedded_tpm() {
    let d = Daemon::new("").start();
    d.launch("web");
    let before = eventlog(&d);
    assert_eq!(before["software_tpm"], true, "{before}");
    assert!(before["tpm_kind"].as_str().unwrap().contains("software TPM"), "{before}");
    assert!(d.log().contains("SOFTWARE TPM"), "the daemon says at start that its TPM is a software TPM:\n{}", d.log());
    let port = d.swtpm_port();
    let tcti = format!("swtpm:host=127.0.0.1,port={port}");

    // As nobody: extend the zone PCR, and shut down / save the TPM over its control port.
    let extend = as_nobody(&[], &["tpm2_pcrextend", &format!("15:sha256={}", "ab".repeat(32))], &[("TPM2TOOLS_TCTI", tcti.clone())]);
    assert!(!extend.status.success(), "nobody extended the daemon's PCR: {}", text(&extend.stdout));
    let ctrl = format!("127.0.0.1:{}", port + 1);
    let save_to = d.dir.path().join("stolen-state");
    let save = as_nobody(&[], &["swtpm_ioctl", "--tcp", &ctrl, "--save", "permanent", save_to.to_str().unwrap()], &[]);
    assert!(!save.status.success(), "nobody saved the TPM's state");
    let stop = as_nobody(&[], &["swtpm_ioctl", "--tcp", &ctrl, "-s"], &[]);
    assert!(!stop.status.success(), "nobody shut the TPM down");
    // Not even root reaches it from the host's network namespace: the ports are not there.
    let root = Command::new("timeout")
        .args(["20", "tpm2_pcrextend", &format!("15:sha256={}", "cd".repeat(32))])
        .env("TPM2TOOLS_TCTI", &tcti)
        .output()
        .unwrap();
    assert!(!root.status.success(), "the embedded TPM listens in the host's network namespace");
    // Nor can nobody read its state files (the AK's context among them).
    let swtpm_dir = d.state().join("swtpm");
    assert_eq!(std::fs::metadata(&swtpm_dir).unwrap().permissions().mode() & 0o777, 0o700);
    let ls = as_nobody(&[], &["ls", swtpm_dir.to_str().unwrap()], &[]);
    assert!(!ls.status.success(), "nobody lists the swtpm state directory");

    // Nothing changed: same PCR value, the same TPM boot, and the zone still attests.
    let after = eventlog(&d);
    assert_eq!(after["pcr_value"], before["pcr_value"], "the PCR changed");
    assert_eq!(after["reset_count"], before["reset_count"], "the TPM was reset");
    assert_eq!(after["replays_to_pcr"], true);
    let (bytes, policy) = evidence_and_policy(&d, "web");
    let v = verify(&bytes, &hex::decode(NONCE).unwrap(), &trust_of(&d), &policy).unwrap();
    let ek = attestation_proto::ek::describe(v.ek_certificate.as_deref().expect("the evidence carries the EK certificate")).unwrap();
    assert!(ek.software, "the evidence's EK certificate says the TPM is a software TPM: {ek:?}");

    // With tpm.require_device, no software TPM: the daemon refuses to start.
    let mut strict = Daemon::with("", "require_device = true");
    let log = refuses_to_start(&mut strict);
    assert!(log.contains("tpm.require_device = true"), "{log}");
    assert!(!strict.state().join("swtpm/swtpm.pid").exists(), "a software TPM was started anyway");
}

#[test]
fn a_socket_group_member_cannot_boot_a_file_it_cannot_read() {
    let group = "zone-test-clients";
    let st = Command::new("groupadd").args(["-f", group]).status().unwrap();
    assert!(st.success(), "groupadd {group}");
    let gid: u32 = text(&Command::new("getent").args(["group", group]).output().unwrap().stdout)
        .split(':')
        .nth(2)
        .and_then(|g| g.parse().ok())
        .expect("the group exists");
    let mut d = Daemon::new("");
    // The socket's group; the test directory must be traversable for the member to reach the socket.
    let config = std::fs::read_to_string(d.config()).unwrap();
    std::fs::write(d.config(), format!("socket_group = {group:?}\n{config}")).unwrap();
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    d.restart();
    let sock_mode = std::fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(sock_mode, 0o660, "the control socket is group-accessible");

    // Root-only copies of the kernel and of an initramfs-sized secret.
    let secret_dir = d.dir.path().join("secret");
    std::fs::create_dir(&secret_dir).unwrap();
    let kernel = secret_dir.join("vmlinux");
    std::fs::copy(STUB, &kernel).unwrap();
    std::fs::set_permissions(&kernel, std::fs::Permissions::from_mode(0o600)).unwrap();
    let shadow = secret_dir.join("shadow");
    std::fs::write(&shadow, b"root:$6$secret:19000:0:99999:7:::\n").unwrap();
    std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A readable kernel the member may use.
    let public = d.dir.path().join("public-vmlinux");
    std::fs::copy(STUB, &public).unwrap();
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();

    let socket = d.socket();
    let zonectl_as_member = |args: &[&str]| {
        let mut a = vec![ZONECTL, "--socket", socket.to_str().unwrap()];
        a.extend_from_slice(args);
        as_nobody(&[gid], &a, &[])
    };
    // The member can use the daemon at all.
    let list = zonectl_as_member(&["list"]);
    assert!(list.status.success(), "a socket-group member cannot list: {}", text(&list.stderr));

    let refused = |args: &[&str], needle: &str| {
        let out = zonectl_as_member(args);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(needle), "{args:?}: {needle:?} not in {err}");
    };
    let (k, s, p) = (kernel.to_str().unwrap(), shadow.to_str().unwrap(), public.to_str().unwrap());
    refused(&["launch", "a", "--no-wait", "--kernel", k], "cannot be read by you (uid 65534): Permission denied");
    refused(&["launch", "b", "--no-wait", "--kernel", p, "--initrd", s], "cannot be read by you (uid 65534): Permission denied");
    refused(&["launch", "c", "--no-wait", "--kernel", p, "--initrd", "/etc/shadow"], "Permission denied");
    // Special files: refused at once, never blocking the daemon.
    let fifo = d.dir.path().join("fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o666)).unwrap();
    let t = Instant::now();
    refused(&["launch", "d", "--no-wait", "--kernel", p, "--initrd", fifo.to_str().unwrap()], "not a regular file");
    refused(&["launch", "e", "--no-wait", "--kernel", "/dev/zero"], "not a regular file");
    refused(&["launch", "f", "--no-wait", "--kernel", "/tmp"], "not a regular file");
    assert!(t.elapsed() < Duration::from_secs(15), "refusing special files took {:?}", t.elapsed());
    // Nothing was logged or left behind by the refusals.
    assert!(eventlog(&d)["events"].as_array().unwrap().is_empty());
    assert!(d.json(&["list"]).as_array().unwrap().is_empty());

    // What the member may read, it may boot; root may boot the root-only file.
    let ok = zonectl_as_member(&["launch", "mine", "--no-wait", "--kernel", p]);
    assert!(ok.status.success(), "{}\n{}", text(&ok.stderr), d.log());
    d.json(&["launch", "rooted", "--no-wait", "--kernel", k]);
    assert_eq!(d.json(&["list"]).as_array().unwrap().len(), 2);
}

#[test]
fn a_foreign_event_appended_to_the_log_stops_the_daemon_and_the_log_is_kept() {
    let mut d = Daemon::new("").start();
    d.launch("web");
    d.kill9();
    // A launch event no daemon recorded, appended while the daemon is down (not extended).
    let mut forged: LaunchRecord = serde_json::from_value(d_record(&d, "web")).unwrap();
    forged.zone = "forged".into();
    forged.launch_id = "f".repeat(32);
    let event = Event::zone(15, TAG_ZONE_LAUNCH, &forged.launch_id, &forged.encode());
    append(&log_file(&d), &event);
    let before = std::fs::read(log_file(&d)).unwrap();
    let log = refuses_to_start(&mut d);
    assert!(log.contains("no matching intent"), "{log}");
    assert_eq!(std::fs::read(log_file(&d)).unwrap(), before, "the log file was changed");

    // Extended too (by root, from the TPM's namespace): the log replays, but
    // a second launch event of a logged launch id is refused at start.
    let mut d = Daemon::new("").start();
    d.launch("web");
    d.kill9();
    let mut dup: LaunchRecord = serde_json::from_value(d_record(&d, "web")).unwrap();
    dup.cmdline.push_str(" init=/bin/evil");
    dup.cmdline_sha256 = attestation_proto::launch::sha256_hex(dup.cmdline.as_bytes());
    let event = Event::zone(15, TAG_ZONE_LAUNCH, &dup.launch_id, &dup.encode());
    append(&log_file(&d), &event);
    extend_as_root(&d, &event.digest);
    let before = std::fs::read(log_file(&d)).unwrap();
    let log = refuses_to_start(&mut d);
    assert!(log.contains("is logged twice"), "the duplicate launch id is named: {log}");
    assert!(log.contains(&dup.launch_id), "{log}");
    assert_eq!(std::fs::read(log_file(&d)).unwrap(), before, "the log file was changed");
}

/// A zone's launch record as the daemon keeps it in its `zone.json`.
fn d_record(d: &Daemon, zone: &str) -> serde_json::Value {
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(d.state().join(format!("zones/{zone}/zone.json"))).unwrap()).unwrap();
    rec["launch"].clone()
}

fn append(path: &Path, e: &Event) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(&e.encode()).unwrap();
    f.sync_all().unwrap();
}

fn edit_record(d: &Daemon, zone: &str, f: impl FnOnce(&mut serde_json::Value)) {
    let path = d.state().join(format!("zones/{zone}/zone.json"));
    let mut rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    f(&mut rec);
    std::fs::write(&path, serde_json::to_vec_pretty(&rec).unwrap()).unwrap();
}

#[test]
fn altered_zone_records_get_no_evidence_and_nothing_forged_verifies() {
    let mut d = Daemon::new("").start();
    d.launch("web");
    d.launch("db");
    d.launch("cache");
    assert_verifies(&d, "web");
    d.kill9();
    // web and db swap launch ids (each would be served the other's logged record).
    let (web_id, db_id) = (d_record(&d, "web")["launch_id"].clone(), d_record(&d, "db")["launch_id"].clone());
    edit_record(&d, "web", |r| r["launch"]["launch_id"] = db_id.clone());
    edit_record(&d, "db", |r| r["launch"]["launch_id"] = web_id.clone());
    // cache's measured launch is removed from its record.
    edit_record(&d, "cache", |r| {
        r.as_object_mut().unwrap().remove("launch");
    });
    d.restart();
    for zone in ["web", "db"] {
        let out = d.zonectl(&["evidence", zone, "--nonce", NONCE]);
        assert!(!out.status.success(), "{zone} got evidence for another zone's launch");
        let err = text(&out.stderr);
        assert!(err.contains("not what the daemon recorded") || err.contains("altered"), "{zone}: {err}");
    }
    let out = d.zonectl(&["evidence", "cache", "--nonce", NONCE]);
    assert!(!out.status.success(), "a zone without a measured launch got evidence");
    assert!(text(&out.stderr).contains("no measured launch"), "{}", text(&out.stderr));
    // The daemon keeps serving: a new zone attests.
    d.launch("fresh");
    assert_verifies(&d, "fresh");
}

#[test]
fn oversized_input_is_refused_before_anything_is_logged() {
    let mut d = Daemon::new("").start();
    d.launch("web");
    let before = std::fs::read(log_file(&d)).unwrap();
    let long = "x".repeat(3000);
    let out = d.zonectl(&["launch", "big", "--no-wait", "--cmdline", &long]);
    fails_with(&out, "at most");
    let words: Vec<String> = (0..400).map(|i| format!("argument-{i}")).collect();
    let mut args = vec!["launch", "big", "--no-wait", "--"];
    args.extend(words.iter().map(String::as_str));
    fails_with(&d.zonectl(&args), "at most");
    let path = format!("/{}", "p".repeat(5000));
    fails_with(&d.zonectl(&["launch", "big", "--no-wait", "--kernel", &path]), "at most 4096 bytes");
    assert_eq!(std::fs::read(log_file(&d)).unwrap(), before, "a refused launch touched the log");
    // The log is intact across a restart and the zone still attests.
    d.kill9();
    d.restart();
    assert_eq!(eventlog(&d)["replays_to_pcr"], true);
    assert_verifies(&d, "web");
}

#[test]
fn a_host_cannot_speak_for_another_host() {
    let alpha = Daemon::new("").start();
    // beta's operator (or an attacker on beta) configures alpha's host id,
    // test-host, where beta's own is "beta".
    let beta = Daemon::new("").start();
    alpha.launch("web");
    beta.launch("web");
    let alpha_ak = trust_of(&alpha).aks[0].ak_sha256;
    let beta_ak = trust_of(&beta).aks[0].ak_sha256;
    assert_ne!(alpha_ak, beta_ak, "two TPMs, two AKs");
    // The verifier trusts both hosts, each AK for its own host id.
    let trust = Trust::default().with("test-host", alpha_ak).with("beta", beta_ak);
    let nonce = hex::decode(NONCE).unwrap();
    let (a, policy) = evidence_and_policy(&alpha, "web");
    verify(&a, &nonce, &trust, &policy).expect("alpha's zone verifies");
    let (b, _) = evidence_and_policy(&beta, "web");
    let r = verify(&b, &nonce, &trust, &policy).expect_err("beta spoke for alpha");
    assert_eq!(r.check, Check::Host, "{r}");
    assert!(r.detail.contains("\"test-host\"") && r.detail.contains("beta"), "{r}");
    // zonectl verify says the same.
    let file = beta.dir.path().join("web.evidence");
    let pol = beta.dir.path().join("policy.toml");
    std::fs::write(&pol, policy.to_toml()).unwrap();
    let out = beta.zonectl(&[
        "verify",
        file.to_str().unwrap(),
        "--policy",
        pol.to_str().unwrap(),
        "--nonce",
        NONCE,
        "--trust-ak",
        &format!("test-host={}", hex::encode(alpha_ak)),
        "--trust-ak",
        &format!("beta={}", hex::encode(beta_ak)),
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["check"], "host");
}

/// Connects to a zone's host-channel socket as its guest would arrive
/// there through the VMM (the daemon knows the zone by the socket).
fn guest_connect(d: &Daemon, zone: &str) -> std::os::unix::net::UnixStream {
    let path = d.state().join(format!("zones/{zone}/sock/vsock.sock_{}", attestation_proto::channel::HOST_CHANNEL_PORT));
    std::os::unix::net::UnixStream::connect(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn frame(msg: attestation_proto::guest::guest_message::Message) -> Vec<u8> {
    attestation_proto::channel::encode(&attestation_proto::guest::GuestMessage { message: Some(msg) }).unwrap()
}

fn hello(ms: u64) -> Vec<u8> {
    frame(attestation_proto::guest::guest_message::Message::Hello(attestation_proto::guest::Hello { ready_uptime_ms: ms, version: "flood".into() }))
}

#[test]
fn a_guest_flooding_its_host_channel_hurts_only_itself() {
    use std::io::{Read, Write};
    let d = Daemon::new("").start();
    d.launch("noisy");
    d.launch("web");
    // The first hello counts: it makes the zone ready.
    let mut first = guest_connect(&d, "noisy");
    first.write_all(&hello(1)).unwrap();
    d.wait_state("noisy", "running");

    // Connections beyond the zone's limit are closed at once; the others get
    // the daemon's first ping. The first connection stays open (closing it
    // would race the daemon releasing its slot), so 7 more fit.
    let mut conns: Vec<_> = (0..16).map(|_| guest_connect(&d, "noisy")).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut open = Vec::new();
    for mut c in conns.drain(..) {
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut b = [0u8; 64];
        match c.read(&mut b) {
            Ok(n) if n > 0 => open.push(c),
            _ => {}
        }
    }
    assert_eq!(open.len() + 1, 8, "connections the daemon kept open for one zone (the first and {} more)", open.len());
    open.push(first);

    // Every open connection floods: hellos and output frames, as fast as it can.
    let output = frame(attestation_proto::guest::guest_message::Message::Output(attestation_proto::guest::Output {
        stream: 1,
        data: vec![b'x'; 60 * 1024],
    }));
    let mut burst = Vec::new();
    for i in 0..200 {
        burst.extend_from_slice(&hello(100 + i));
    }
    burst.extend_from_slice(&output);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooders: Vec<_> = open
        .into_iter()
        .map(|mut c| {
            let (burst, stop) = (burst.clone(), stop.clone());
            std::thread::spawn(move || {
                c.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = c.write_all(&burst);
                }
            })
        })
        .collect();

    // Meanwhile the daemon serves everyone else, and noisy's record is never torn.
    let started = Instant::now();
    let record = d.state().join("zones/noisy/zone.json");
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(5) {
        let t = Instant::now();
        assert_eq!(d.json(&["list"]).as_array().unwrap().len(), 2);
        assert_verifies(&d, "web");
        assert!(t.elapsed() < Duration::from_secs(3), "list + evidence took {:?} during the flood", t.elapsed());
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).expect("zone.json is always whole");
        assert_eq!(r["name"], "noisy");
        rounds += 1;
    }
    let flood = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    assert!(rounds >= 3, "only {rounds} rounds of list + evidence in {flood:?}");
    // One throttle for the zone across its 8 connections: a 1 MiB burst, then 1 MiB/s.
    let logged = std::fs::metadata(d.state().join("zones/noisy/workload.log")).map(|m| m.len()).unwrap_or(0);
    let allowed = (1.0 + flood.as_secs_f64() + 1.0) * 1024.0 * 1024.0;
    assert!((logged as f64) <= allowed, "{logged} bytes of output logged in {flood:?} (the zone's rate allows {allowed:.0})");
    assert!(logged > 0, "no output was logged at all");
    // Repeated hellos changed nothing: the first one's uptime stays.
    let z = d.json(&["inspect", "noisy"]);
    assert_eq!(z["ready_uptime_ms"], 1, "{z}");
}

#[test]
fn an_unreadable_zone_record_fails_that_zone_and_the_others_are_served() {
    let mut d = Daemon::new("").start();
    let bad_pid = d.launch("bad")["vmm_pid"].as_i64().unwrap();
    d.launch("good");
    d.kill9();
    let path = d.state().join("zones/bad/zone.json");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&path, &bytes).unwrap();
    d.restart();
    let bad = d.json(&["inspect", "bad"]);
    assert_eq!(bad["state"], "failed", "{bad}");
    let failure = bad["failure"].as_str().unwrap();
    assert!(failure.contains("could not be read") && failure.contains("zonectl destroy bad"), "{failure}");
    assert_eq!(std::fs::read(d.state().join("zones/bad/zone.json.corrupt")).unwrap(), bytes, "the unreadable bytes are kept");
    let t = Instant::now();
    while alive(bad_pid) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(bad_pid), "the unmanaged VMM of the unreadable zone still runs");
    // The other zone is managed as before.
    assert_eq!(d.json(&["inspect", "good"])["state"], "booting");
    assert_verifies(&d, "good");
    d.json(&["destroy", "bad"]);
    d.launch("bad");
    d.json(&["stop", "good"]);
    assert_eq!(d.json(&["inspect", "good"])["state"], "stopped");
}

/// Every path under `root` with its mode, uid and gid.
fn walk(root: &Path, out: &mut Vec<(std::path::PathBuf, u32, u32, u32)>) {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::symlink_metadata(root) else { return };
    out.push((root.to_owned(), m.mode(), m.uid(), m.gid()));
    if m.is_dir() {
        for e in std::fs::read_dir(root).unwrap().flatten() {
            walk(&e.path(), out);
        }
    }
}

#[test]
fn nothing_the_daemon_creates_is_open_to_other_users() {
    let d = Daemon::new("").start();
    d.launch("web");
    d.launch("gone");
    d.json(&["stop", "gone"]);
    let _ = d.zonectl(&["evidence", "web", "--nonce", NONCE]);
    let mut all = Vec::new();
    walk(&d.state(), &mut all);
    walk(&d.socket(), &mut all);
    assert!(all.len() > 20, "{all:?}");
    let web_record: serde_json::Value = serde_json::from_slice(&std::fs::read(d.state().join("zones/web/zone.json")).unwrap()).unwrap();
    let web_gid = web_record["jail"]["gid"].as_u64();
    assert!(web_gid.is_some_and(|g| g >= 3_000_000), "{web_record}");
    let mut report = String::new();
    for (path, mode, uid, gid) in &all {
        report.push_str(&format!("{:o} {uid}:{gid} {}\n", mode & 0o7777, path.display()));
    }
    eprintln!("{report}");
    for (path, mode, uid, gid) in &all {
        let p = path.display();
        assert_eq!(mode & 0o007, 0, "{p} is open to other users ({:o})\n{report}", mode & 0o7777);
        assert_eq!(mode & 0o6000, 0, "{p} is setuid/setgid\n{report}");
        assert_eq!(*uid, 0, "{p} is not root's\n{report}");
        let sock_dir = path.components().any(|c| c.as_os_str() == "sock");
        if *gid != 0 {
            assert!(sock_dir, "{p} is group-accessible to gid {gid} outside a zone's socket directory\n{report}");
            assert!(p.to_string().contains("/zones/web/"), "{p}: only the live zone has a socket directory\n{report}");
            assert_eq!(Some(u64::from(*gid)), web_gid, "{p} belongs to another zone's group\n{report}");
        }
        let name = path.file_name().unwrap().to_string_lossy();
        if mode & 0o170000 == 0o140000 {
            // Sockets: the control socket and a zone's console are root's alone;
            // the VMM's listeners are passed to it as descriptors; the sockets
            // the VMM connects to (`vsock.sock_<port>`) are shared with its group.
            let expected = if name.starts_with("vsock.sock_") { 0o660 } else { 0o600 };
            assert_eq!(mode & 0o777, expected, "{p}\n{report}");
        }
        if name == "zone.json" || name.ends_with(".log") || name == "eventlog.bin" {
            assert_eq!(mode & 0o077, 0, "{p} ({:o}) is readable by a group\n{report}", mode & 0o777);
        }
    }
}

#[test]
fn a_log_damaged_before_its_end_stops_the_daemon_and_is_never_cut() {
    let mut d = Daemon::new("").start();
    d.launch("web");
    d.launch("db");
    d.kill9();
    // The first event's data size (after the 65-byte header: PCR, type,
    // digest count, algorithm, digest), made to run past the end of the file.
    let mut bytes = std::fs::read(log_file(&d)).unwrap();
    bytes[65 + 14 + 32..65 + 14 + 32 + 4].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    std::fs::write(log_file(&d), &bytes).unwrap();
    let log = refuses_to_start(&mut d);
    assert!(log.contains("eventlog.bin"), "the message names the file: {log}");
    assert_eq!(std::fs::read(log_file(&d)).unwrap(), bytes, "the damaged log was changed");
    // A torn tail (a crash mid-append) is the one thing cut, and only that.
    let mut d = Daemon::new("").start();
    d.launch("web");
    d.kill9();
    let whole = std::fs::read(log_file(&d)).unwrap();
    let mut torn = whole.clone();
    torn.extend_from_slice(&[0x0f, 0, 0, 0, 6, 0]);
    std::fs::write(log_file(&d), &torn).unwrap();
    d.restart();
    assert_eq!(std::fs::read(log_file(&d)).unwrap(), whole, "only the torn tail was cut");
    assert_verifies(&d, "web");
}
