//! The embedded TPM: a `swtpm` the daemon starts and owns when the host has
//! no TPM device.
//!
//! Its state lives in `<state_dir>/swtpm/`: created once by `swtpm_setup`
//! (SHA-256 PCR bank, an EK certificate from a CA private to this daemon in
//! `swtpm/localca/`), then served on loopback TCP (tss-esapi 7.7 cannot use
//! swtpm's Unix sockets). The process is detached, like the zones' VMMs, so
//! a daemon restart finds it running and keeps its PCRs; a new swtpm
//! process is a new TPM boot (its reset count changes), which starts a new
//! event log.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::TpmError;

/// How long a fresh swtpm may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and on which ports the embedded swtpm runs.
#[derive(Debug, Clone)]
pub struct Swtpm {
    dir: PathBuf,
    port: u16,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> TpmError {
    move |e| TpmError::Swtpm(format!("{what}: {e}"))
}

impl Swtpm {
    /// The swtpm whose state is in `dir`, serving on `port` (control on `port + 1`).
    pub fn new(dir: &Path, port: u16) -> Self {
        Self { dir: dir.to_owned(), port }
    }

    /// The TCTI configuration string for tss-esapi.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("swtpm.pid")
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Sets the TPM up once, then starts swtpm unless ours already runs.
    pub fn ensure_running(&self) -> Result<(), TpmError> {
        std::fs::create_dir_all(&self.dir).map_err(io(format!("cannot create {}", self.dir.display())))?;
        if !self.state().join("tpm2-00.permall").exists() {
            self.setup()?;
        }
        if let Some(pid) = self.running_pid() {
            if self.accepts() {
                tracing::info!(pid, port = self.port, "using the running embedded swtpm");
                return Ok(());
            }
        }
        if self.accepts() {
            return Err(TpmError::Swtpm(format!(
                "127.0.0.1:{} is served by a process that is not this daemon's swtpm; \
                 set tpm.swtpm_port to a free port in the config",
                self.port
            )));
        }
        self.start()
    }

    fn running_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pid_file()).ok()?.trim().parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "swtpm").then_some(pid)
    }

    fn accepts(&self) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    }

    fn setup(&self) -> Result<(), TpmError> {
        let state = self.state();
        let ca = self.dir.join("localca");
        for d in [&state, &ca] {
            std::fs::create_dir_all(d).map_err(io(format!("cannot create {}", d.display())))?;
        }
        let localca_conf = self.dir.join("swtpm-localca.conf");
        let setup_conf = self.dir.join("swtpm_setup.conf");
        let write = |p: &Path, text: String| std::fs::write(p, text).map_err(io(format!("cannot write {}", p.display())));
        write(
            &localca_conf,
            format!(
                "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
                ca = ca.display()
            ),
        )?;
        write(
            &setup_conf,
            format!(
                "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\n\
                 create_certs_tool_options = /etc/swtpm-localca.options\nactive_pcr_banks = sha256\n",
                localca_conf.display()
            ),
        )?;
        tracing::info!(dir = %self.dir.display(), "creating the embedded TPM (swtpm_setup)");
        let out = Command::new("swtpm_setup")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(&state)
            .args(["--create-ek-cert", "--create-platform-cert", "--pcr-banks", "sha256", "--config"])
            .arg(&setup_conf)
            .output()
            .map_err(|e| TpmError::Swtpm(format!("cannot run swtpm_setup ({e}); install it with `apt-get install swtpm-tools`")))?;
        if !out.status.success() {
            return Err(TpmError::Swtpm(format!(
                "swtpm_setup failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    fn start(&self) -> Result<(), TpmError> {
        let _ = std::fs::remove_file(self.pid_file());
        let log = self.dir.join("swtpm.log");
        let status = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--server")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", self.port))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", u32::from(self.port) + 1))
            .arg("--tpmstate")
            .arg(format!("dir={}", self.state().display()))
            .args(["--flags", "not-need-init,startup-clear"])
            .arg("--pid")
            .arg(format!("file={}", self.pid_file().display()))
            .arg("--log")
            .arg(format!("file={},level=1", log.display()))
            .arg("--daemon")
            .status()
            .map_err(|e| TpmError::Swtpm(format!("cannot run swtpm ({e}); install it with `apt-get install swtpm`")))?;
        if !status.success() {
            return Err(TpmError::Swtpm(format!("swtpm exited with {status}; see {}", log.display())));
        }
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.accepts() {
                tracing::info!(port = self.port, pid = ?self.running_pid(), "embedded swtpm started");
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(TpmError::Swtpm(format!("swtpm did not accept connections on 127.0.0.1:{} in time; see {}", self.port, log.display())))
    }
}
