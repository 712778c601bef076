//! The embedded TPM: a `swtpm` the daemon starts and owns when the host has
//! no TPM device.
//!
//! Its state lives in `<state_dir>/swtpm/` (0700): created once by
//! `swtpm_setup` (SHA-256 PCR bank, an EK certificate from a CA private to
//! this daemon in `swtpm/localca/`), then served on TCP — tss-esapi 7.7
//! cannot use swtpm's Unix sockets (it ignores `path=`) — but **in a network
//! namespace of its own**: the ledger thread creates it (`unshare`), brings up
//! its loopback, and starts swtpm from there, so swtpm's command and control
//! ports exist only inside it. Nothing in the host's network namespace (no
//! local user, no zone VMM) can connect to them; entering the namespace takes
//! CAP_SYS_ADMIN. The ledger thread, the only one that talks to the TPM,
//! stays in it.
//!
//! The process is detached, like the zones' VMMs, so a daemon restart finds
//! it running (the new ledger thread joins its namespace through
//! `/proc/<pid>/ns/net`) and keeps its PCRs; a new swtpm process is a new TPM
//! boot (its reset count changes), which starts a new event log.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
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

/// Whether two `/proc/.../ns/net` links name the same namespace.
fn same_netns(a: &str, b: &str) -> bool {
    match (std::fs::read_link(a), std::fs::read_link(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Moves the calling thread into the network namespace `ns` (a `/proc/<pid>/ns/net`).
fn join_netns(ns: &str) -> Result<(), TpmError> {
    let f = std::fs::File::open(ns).map_err(io(format!("cannot open {ns}")))?;
    // SAFETY: setns on a namespace descriptor we hold; only this thread moves.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(TpmError::Swtpm(format!(
            "cannot join the embedded swtpm's network namespace ({}); the daemon must run as root",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Moves the calling thread into a new network namespace with its loopback up.
fn enter_private_netns() -> Result<(), TpmError> {
    // SAFETY: unshare of this thread's network namespace only.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
        return Err(TpmError::Swtpm(format!(
            "cannot create a private network namespace for the embedded swtpm ({}); the daemon must run as root",
            std::io::Error::last_os_error()
        )));
    }
    // `ip link set lo up`, with an ioctl on any socket of the namespace.
    // SAFETY: a plain datagram socket; closed below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(TpmError::Swtpm(format!("socket: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, c) in ifr.ifr_name.iter_mut().zip(b"lo") {
        *d = *c as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS with a valid ifreq on our socket.
    let ok = unsafe {
        libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr) >= 0 && {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr) >= 0
        }
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the socket made above.
    unsafe { libc::close(s) };
    if !ok {
        return Err(TpmError::Swtpm(format!("cannot bring up the loopback of the swtpm's network namespace: {err}")));
    }
    Ok(())
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

    /// Sets the TPM up once, then, on the calling thread (the ledger's):
    /// joins the network namespace of our running swtpm, or creates a private
    /// one and starts swtpm in it.
    pub fn ensure_running(&self) -> Result<(), TpmError> {
        std::fs::create_dir_all(&self.dir).map_err(io(format!("cannot create {}", self.dir.display())))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(format!("cannot make {} private", self.dir.display())))?;
        if !self.state().join("tpm2-00.permall").exists() {
            self.setup()?;
        }
        if let Some(pid) = self.running_pid() {
            let ns = format!("/proc/{pid}/ns/net");
            if same_netns(&ns, "/proc/self/ns/net") {
                // An swtpm on the host's network: open to every local user. A new one, private, replaces it.
                tracing::warn!(pid, "the running embedded swtpm listens in the host's network namespace; replacing it with a private one (a new TPM boot)");
                self.kill(pid);
            } else {
                join_netns(&ns)?;
                if self.accepts() {
                    tracing::info!(pid, port = self.port, "using the running embedded swtpm (private network namespace)");
                    return Ok(());
                }
                return Err(TpmError::Swtpm(format!(
                    "the embedded swtpm (pid {pid}) does not answer in its network namespace; stop it (kill {pid}) and restart the daemon"
                )));
            }
        }
        enter_private_netns()?;
        self.start()
    }

    fn kill(&self, pid: u32) {
        // SAFETY: kill(2) of the swtpm whose pid file and name we checked.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let t = Instant::now();
        while std::path::Path::new(&format!("/proc/{pid}")).exists() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The running swtpm's pid, if it is ours.
    pub fn running_pid(&self) -> Option<u32> {
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
