//! The test harness shared by the machine-level daemon tests: a daemon in a
//! temporary state directory, with the stub guest as its zones and an
//! embedded swtpm on a free port as its TPM.
#![allow(dead_code, clippy::tests_outside_test_module)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const AGENT: &str = env!("CARGO_BIN_EXE_hypervisor-agent-under-test");
pub const ZONECTL: &str = env!("CARGO_BIN_EXE_zonectl-under-test");
pub const VMM: &str = env!("CARGO_BIN_EXE_zone-vmm-under-test");
pub const STUB: &str = concat!(env!("OUT_DIR"), "/stub.elf");

pub struct Daemon {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    env: Vec<(String, String)>,
}

/// A free loopback TCP port P with P+1 free too (the embedded swtpm's pair).
pub fn free_port_pair() -> u16 {
    zone_tests::free_port_pair().expect("no free pair of loopback ports")
}

impl Daemon {
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("agent.toml")
    }
    /// The name of this daemon's cgroup parent (unique per test daemon).
    pub fn cgroup_parent(&self) -> String {
        format!("zat-{}", self.dir.path().file_name().unwrap().to_string_lossy().trim_start_matches('.'))
    }

    /// A daemon with the stub guest as default kernel, `limits` in its
    /// `[limits]` table and `tpm` in its `[tpm]` table; its TPM is an embedded
    /// swtpm on a free port (never a TPM device of the machine).
    pub fn with(limits: &str, tpm: &str) -> Self {
        assert!(Path::new("/dev/kvm").exists(), "/dev/kvm is missing: these tests need KVM and never skip");
        for tool in ["swtpm", "swtpm_setup"] {
            assert!(
                Command::new(tool).arg("--version").output().is_ok(),
                "{tool} is missing: install it with `apt-get install swtpm swtpm-tools` (these tests never skip)"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let d = Self { dir, child: None, env: Vec::new() };
        std::fs::write(
            d.config(),
            format!(
                "state_dir = {:?}\nsocket = {:?}\nhost_id = \"test-host\"\n[defaults]\nkernel = {STUB:?}\ncmdline = \"h\"\nmemory_mib = 32\n\
                 [limits]\n{limits}\n[tpm]\ndevice = \"/nonexistent/tpm\"\nswtpm_port = {}\n{tpm}\n\
                 [jail]\nvmm = {VMM:?}\ncgroup_parent = {:?}\n",
                d.state(),
                d.socket(),
                free_port_pair(),
                d.cgroup_parent(),
            ),
        )
        .unwrap();
        d
    }

    pub fn new(limits: &str) -> Self {
        Self::with(limits, "")
    }

    /// Sets an environment variable for the next (re)start.
    pub fn set_env(&mut self, k: &str, v: &str) {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.into(), v.into()));
    }

    pub fn clear_env(&mut self) {
        self.env.clear();
    }

    /// Starts the daemon and returns without waiting for its socket.
    pub fn spawn(&mut self) -> Child {
        Command::new(AGENT)
            .args(["daemon", "--config"])
            .arg(self.config())
            .env("ZONE_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("daemon.log")).unwrap())
            .spawn()
            .unwrap()
    }

    /// The embedded swtpm's command port.
    pub fn swtpm_port(&self) -> u16 {
        let config = std::fs::read_to_string(self.config()).unwrap();
        config.lines().find_map(|l| l.strip_prefix("swtpm_port = ")?.trim().parse().ok()).unwrap()
    }

    /// The embedded swtpm's PID.
    pub fn swtpm_pid(&self) -> u32 {
        std::fs::read_to_string(self.state().join("swtpm/swtpm.pid")).expect("the embedded swtpm runs").trim().parse().unwrap()
    }

    /// Stops the embedded swtpm (a new one is a new TPM boot).
    pub fn stop_swtpm(&self) {
        if let Ok(pid) = std::fs::read_to_string(self.state().join("swtpm/swtpm.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
            let t = Instant::now();
            while Path::new(&format!("/proc/{}", pid.trim())).exists() && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn start(mut self) -> Self {
        self.restart();
        self
    }

    pub fn restart(&mut self) {
        let child = self.spawn();
        self.child = Some(child);
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            assert!(t.elapsed() < Duration::from_secs(20), "daemon did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the daemon process to exit on its own (e.g. a fault injection).
    pub fn wait_for_exit(&mut self) {
        let mut c = self.child.take().unwrap();
        let t = Instant::now();
        while c.try_wait().unwrap().is_none() {
            assert!(t.elapsed() < Duration::from_secs(20), "the daemon did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The zone's record once it is live (booting or running).
    pub fn wait_state_alive(&self, name: &str) -> serde_json::Value {
        let z = self.json(&["inspect", name]);
        assert!(z["state"] == "booting" || z["state"] == "running", "{name}: {z}\n{}", self.log());
        z
    }

    /// The daemon's PID.
    pub fn pid(&self) -> i64 {
        i64::from(self.child.as_ref().expect("the daemon runs").id())
    }

    pub fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn zonectl(&self, args: &[&str]) -> Output {
        Command::new(ZONECTL).arg("--socket").arg(self.socket()).args(args).output().unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.zonectl(&a);
        assert!(out.status.success(), "zonectl {args:?} failed: {}\n{}", text(&out.stderr), self.log());
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn launch(&self, name: &str) -> serde_json::Value {
        self.json(&["launch", name, "--no-wait"])
    }

    /// Polls `inspect` until the zone's state is `state`.
    pub fn wait_state(&self, name: &str, state: &str) -> serde_json::Value {
        let t = Instant::now();
        loop {
            let z = self.json(&["inspect", name]);
            if z["state"] == state {
                return z;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "{name} never became {state}: {z}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Stop every VMM this test started, then the daemon.
        if let Ok(rd) = std::fs::read_dir(self.state().join("zones")) {
            for z in rd.flatten() {
                if let Ok(rec) = std::fs::read(z.path().join("zone.json")) {
                    let v: serde_json::Value = serde_json::from_slice(&rec).unwrap_or_default();
                    if let Some(pid) = v["vmm"]["pid"].as_i64() {
                        // SAFETY-free: a plain kill(1) of the test's own VMM child.
                        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                    }
                }
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stop_swtpm();
        remove_cgroup_parent(&self.cgroup_parent());
    }
}

/// Removes a test daemon's (empty) cgroup parent from every hierarchy.
pub fn remove_cgroup_parent(name: &str) {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for line in own.lines() {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or("/"));
        let base = match controllers {
            "" => PathBuf::from("/sys/fs/cgroup"),
            c => PathBuf::from("/sys/fs/cgroup").join(c.split(',').find(|c| !c.starts_with("name=")).unwrap_or(c)).join(path.trim_start_matches('/')),
        };
        for candidate in [base.join(name), PathBuf::from("/sys/fs/cgroup/unified").join(name), PathBuf::from("/sys/fs/cgroup").join(name)] {
            if let Ok(rd) = std::fs::read_dir(&candidate) {
                for e in rd.flatten() {
                    if e.path().is_dir() {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
                let _ = std::fs::remove_dir(&candidate);
            }
        }
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn alive(pid: i64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

pub fn fails_with(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expected failure, stderr: {err}");
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
}


/// Sends `msg` on a new connection to `zone`'s host-channel socket, as the
/// zone's guest arrives there through its VMM (the daemon knows the zone by
/// the socket), and returns the first reply `pick` accepts.
pub fn guest_exchange<T>(
    d: &Daemon,
    zone: &str,
    msg: attestation_proto::guest::guest_message::Message,
    pick: impl Fn(attestation_proto::guest::host_message::Message) -> Option<T>,
) -> T {
    use std::io::{Read, Write};
    let path = d.state().join(format!("zones/{zone}/sock/vsock.sock_{}", attestation_proto::channel::HOST_CHANNEL_PORT));
    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let frame = attestation_proto::channel::encode(&attestation_proto::guest::GuestMessage { message: Some(msg) }).unwrap();
    s.write_all(&frame).unwrap();
    let mut decoder = attestation_proto::channel::Decoder::for_host_messages();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let want = decoder.wanted().min(buf.len());
        let n = s.read(&mut buf[..want]).expect("the daemon answers on the host channel");
        assert!(n > 0, "the daemon closed the host channel");
        if let Some(attestation_proto::guest::HostMessage { message: Some(m) }) =
            decoder.push::<attestation_proto::guest::HostMessage>(&buf[..n]).unwrap()
            && let Some(r) = pick(m)
        {
            return r;
        }
    }
}

/// The host TPM's keys, asked for over `zone`'s host channel.
pub fn guest_keys(d: &Daemon, zone: &str) -> attestation_proto::guest::HostKeys {
    use attestation_proto::guest::{KeysRequest, guest_message, host_message, keys_reply};
    guest_exchange(d, zone, guest_message::Message::KeysRequest(KeysRequest { id: 7 }), |m| match m {
        host_message::Message::KeysReply(r) if r.id == 7 => match r.result {
            Some(keys_reply::Result::Keys(k)) => Some(k),
            other => panic!("no keys: {other:?}"),
        },
        _ => None,
    })
}

/// Evidence about `zone` for `nonce` over its host channel, with the secret
/// of `activation`; `Err` with the daemon's reason when it refuses.
pub fn guest_evidence(
    d: &Daemon,
    zone: &str,
    nonce: &[u8],
    activation: Option<attestation_proto::guest::Activation>,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    use attestation_proto::guest::{EvidenceRequest, evidence_reply, guest_message, host_message};
    let req = EvidenceRequest { id: 9, nonce: nonce.to_vec(), activation };
    guest_exchange(d, zone, guest_message::Message::EvidenceRequest(req), |m| match m {
        host_message::Message::EvidenceReply(r) if r.id == 9 => Some(match r.result {
            Some(evidence_reply::Result::Evidence(e)) => Ok((e, r.activated_secret)),
            Some(evidence_reply::Result::Error(e)) => Err(e),
            None => Err("an empty reply".into()),
        }),
        _ => None,
    })
}
