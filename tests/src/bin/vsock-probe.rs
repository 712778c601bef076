//! `vsock-probe`: both ends of the zone vsock end-to-end test and of the
//! zone network benchmark, as one static binary (it runs in the zone and on
//! the test host).
//!
//! In the zone (AF_VSOCK; prints `VSOCK-PROBE key=value` lines on stdout):
//!
//! ```text
//! vsock-probe connect PORT MESSAGE     connect to host CID 2:PORT, send MESSAGE\n, read one line back
//! vsock-probe listen PORT COUNT        accept COUNT connections on PORT, echo each until EOF
//! vsock-probe flood PORT MIB STALL     send MIB MiB to host CID 2:PORT; stop when a write makes no
//!                                      progress for STALL seconds (the host does not read)
//! ```
//!
//! On the test host (Unix sockets of the VMM's hybrid vsock):
//!
//! ```text
//! vsock-probe uds-echo PATH            listen on PATH (a U_<port>), echo every connection
//! vsock-probe uds-hold PATH PID SECS   accept one connection on PATH and never read it; sample
//!                                      /proc/PID/status (the VMM) until the peer goes or SECS pass
//! vsock-probe uds-connect U PORT MESSAGE RETRY_SECS
//!                                      `CONNECT PORT` on U, expect `OK <n>`, send MESSAGE\n, read the
//!                                      echo; retry (the guest may not listen yet) for RETRY_SECS
//! ```
//!
//! TCP, either side (prints `VSOCK-PROBE key=value` lines):
//!
//! ```text
//! vsock-probe tcp-sink PORT COUNT      accept COUNT connections, one at a time; read each to EOF;
//!                                      tcp_bytes, tcp_ms (accept to EOF)
//! vsock-probe tcp-send ADDR:PORT MIB   connect (retrying for 60 s), send MIB MiB, close; tcp_send_ms
//! vsock-probe tcp-echo PORT            echo every connection, one byte at a time is fine (forever)
//! vsock-probe tcp-rr ADDR:PORT COUNT   connect (retrying for 60 s), COUNT one-byte round trips
//!                                      with TCP_NODELAY; tcp_rr_us_p50, tcp_rr_us_p90
//! vsock-probe tcp-serve PORT MESSAGE   answer every connection with MESSAGE\n and close (forever);
//!                                      MESSAGE @peer: the connecting address (IPv4 as IPv4)
//! vsock-probe tcp-get ADDR:PORT        connect (retrying for 60 s), read to EOF; tcp_got=<first line>
//! vsock-probe tcp-try ADDR:PORT        one connect (10 s at most), read to EOF;
//!                                      tcp_got=<first line> or tcp_refused / tcp_timeout / tcp_error=<e>
//! vsock-probe udp-flood ADDR:PORT SECS send 1400-byte datagrams as fast as the socket takes them for
//!                                      SECS; udp_flood=started, then udp_sent=<datagrams>
//! vsock-probe kvm-hold                 create a KVM VM with an in-kernel irqchip and one vCPU that
//!                                      never runs, say kvm_hold=ready, and keep them (forever): the
//!                                      host kernel's KVM static keys (preempt notifiers, APIC
//!                                      state) then stay on while zones come and go, instead of being
//!                                      patched into its code at each first VM and out at each last
//! ```
//!
//! Addresses are numeric: the zones have no resolver (and a static glibc's
//! `getaddrinfo` is not to be relied on there).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

fn out(key: &str, value: impl std::fmt::Display) {
    println!("VSOCK-PROBE {key}={value}");
    let _ = io::stdout().flush();
}

fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ECONNRESET) => "ECONNRESET".into(),
        Some(libc::ECONNREFUSED) => "ECONNREFUSED".into(),
        Some(libc::ETIMEDOUT) => "ETIMEDOUT".into(),
        Some(libc::EAGAIN) => "EAGAIN".into(),
        _ => e.to_string(),
    }
}

fn sockaddr_vm(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::sa_family_t::try_from(libc::AF_VSOCK).unwrap_or_default();
    addr.svm_cid = cid;
    addr.svm_port = port;
    addr
}

fn vsock_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `size_of::<T>()` as a socket length.
fn len_of<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(0)
}

/// A connected AF_VSOCK stream, as a `UnixStream` for its Read/Write impls
/// (both are plain stream fds to read(2) and write(2)).
fn vsock_connect(port: u32) -> io::Result<UnixStream> {
    let fd = vsock_socket()?;
    let addr = sockaddr_vm(libc::VMADDR_CID_HOST, port);
    // SAFETY: `addr` is a valid sockaddr_vm and the length is its size.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), std::ptr::from_ref(&addr).cast(), len_of::<libc::sockaddr_vm>()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(fd))
}

fn read_line(stream: &UnixStream) -> io::Result<String> {
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim_end().to_owned())
}

fn connect(port: u32, message: &str) -> i32 {
    let stream = match vsock_connect(port) {
        Ok(s) => s,
        Err(e) => {
            out(&format!("connect_{port}_error"), errno_name(&e));
            return 1;
        }
    };
    if let Err(e) = (&stream).write_all(format!("{message}\n").as_bytes()) {
        out(&format!("connect_{port}_error"), errno_name(&e));
        return 1;
    }
    match read_line(&stream) {
        Ok(line) => {
            out(&format!("connect_{port}_reply"), line);
            0
        }
        Err(e) => {
            out(&format!("connect_{port}_error"), errno_name(&e));
            1
        }
    }
}

fn echo(mut stream: UnixStream) -> io::Result<u64> {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        stream.write_all(&buf[..n])?;
        total += n as u64;
    }
}

fn listen(port: u32, count: u32) -> i32 {
    let run = || -> io::Result<()> {
        let fd = vsock_socket()?;
        let addr = sockaddr_vm(libc::VMADDR_CID_ANY, port);
        // SAFETY: `addr` is a valid sockaddr_vm and the length is its size.
        if unsafe { libc::bind(fd.as_raw_fd(), std::ptr::from_ref(&addr).cast(), len_of::<libc::sockaddr_vm>()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: listen(2) on a socket we own; no pointers.
        if unsafe { libc::listen(fd.as_raw_fd(), 8) } < 0 {
            return Err(io::Error::last_os_error());
        }
        out("listening", port);
        for _ in 0..count {
            // SAFETY: accept(2) with null address pointers is allowed.
            let c = unsafe {
                libc::accept4(fd.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC)
            };
            if c < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `c` is a new connected socket owned by nobody else.
            let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(c) });
            let n = echo(stream)?;
            out(&format!("listen_{port}_echoed"), n);
        }
        Ok(())
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            out(&format!("listen_{port}_error"), errno_name(&e));
            1
        }
    }
}

fn flood(port: u32, mib: u64, stall_secs: u64) -> i32 {
    let started = Instant::now();
    // The host listener may not be there yet: retry refusals for a while.
    let stream = loop {
        match vsock_connect(port) {
            Ok(s) => break s,
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                out("flood_error", errno_name(&e));
                return 1;
            }
        }
    };
    let tv = libc::timeval { tv_sec: libc::time_t::try_from(stall_secs).unwrap_or(5), tv_usec: 0 };
    // SAFETY: SO_SNDTIMEO takes a timeval; `tv` is valid for the call.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            std::ptr::from_ref(&tv).cast(),
            len_of::<libc::timeval>(),
        );
    }
    out("flood_started", 1);
    let chunk = vec![0x5au8; 64 * 1024];
    let goal = mib << 20;
    let mut sent = 0u64;
    let mut stalled = false;
    while sent < goal {
        match (&stream).write(&chunk) {
            Ok(n) => sent += n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {
                stalled = true;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                out("flood_error", errno_name(&e));
                break;
            }
        }
    }
    out("flood_sent", sent);
    out("flood_stalled", u8::from(stalled));
    0
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn uds_echo(path: &str) -> i32 {
    let _ = std::fs::remove_file(path);
    let listener = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vsock-probe: bind {path}: {e}");
            return 1;
        }
    };
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = echo(stream);
        });
    }
    0
}

fn uds_hold(path: &str, pid: u32, secs: u64) -> i32 {
    let _ = std::fs::remove_file(path);
    let listener = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vsock-probe: bind {path}: {e}");
            return 1;
        }
    };
    let Ok((stream, _)) = listener.accept() else { return 1 };
    let start = rss_kib(pid).map_or(0, |r| r.0);
    let mut max = start;
    let mut hwm = 0;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut pfd = libc::pollfd { fd: stream.as_raw_fd(), events: libc::POLLRDHUP, revents: 0 };
    while Instant::now() < deadline {
        if let Some((rss, peak)) = rss_kib(pid) {
            max = max.max(rss);
            hwm = peak;
        }
        // SAFETY: one valid pollfd, for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        if n > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
            break;
        }
    }
    let mut unread: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into `unread`.
    unsafe { libc::ioctl(stream.as_raw_fd(), libc::FIONREAD, &mut unread) };
    println!("hold_rss_start_kib={start}");
    println!("hold_rss_max_kib={max}");
    println!("hold_vm_hwm_kib={hwm}");
    println!("hold_unread_bytes={unread}");
    0
}

fn uds_connect(path: &str, port: u32, message: &str, retry_secs: u64) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(retry_secs);
    loop {
        let attempt = || -> io::Result<Option<(String, String)>> {
            let mut s = UnixStream::connect(path)?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            s.write_all(format!("CONNECT {port}\n").as_bytes())?;
            let mut reader = BufReader::new(s.try_clone()?);
            let mut ok = String::new();
            if reader.read_line(&mut ok)? == 0 {
                return Ok(None);
            }
            s.write_all(format!("{message}\n").as_bytes())?;
            let mut reply = String::new();
            reader.read_line(&mut reply)?;
            Ok(Some((ok.trim_end().to_owned(), reply.trim_end().to_owned())))
        };
        match attempt() {
            Ok(Some((ok, reply))) => {
                println!("host_connect_{port}_ok={ok}");
                println!("host_connect_{port}_reply={reply}");
                return 0;
            }
            Ok(None) | Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(250)),
            Ok(None) => {
                println!("host_connect_{port}_error=closed without OK");
                return 1;
            }
            Err(e) => {
                println!("host_connect_{port}_error={e}");
                return 1;
            }
        }
    }
}

fn tcp_connect(addr: &str) -> io::Result<std::net::TcpStream> {
    let started = Instant::now();
    loop {
        match std::net::TcpStream::connect(addr) {
            Ok(s) => return Ok(s),
            Err(_) if started.elapsed() < Duration::from_secs(60) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return Err(e),
        }
    }
}

/// A listener on every address: IPv6 and IPv4 (one dual-stack socket), or
/// IPv4 alone where the kernel has no IPv6.
fn listen_any(port: u16) -> io::Result<std::net::TcpListener> {
    std::net::TcpListener::bind(("::", port)).or_else(|_| std::net::TcpListener::bind(("0.0.0.0", port)))
}

fn kvm_hold() -> i32 {
    const KVM_CREATE_VM: libc::Ioctl = 0xae01;
    const KVM_CREATE_VCPU: libc::Ioctl = 0xae41;
    const KVM_CREATE_IRQCHIP: libc::Ioctl = 0xae60;
    let kvm = match std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(f) => f,
        Err(e) => {
            out("kvm_hold_error", e);
            return 1;
        }
    };
    // SAFETY: KVM_CREATE_VM takes a machine type (0) and returns a new descriptor, which stays open until exit.
    let vm = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_CREATE_VM, 0) };
    // SAFETY: KVM_CREATE_IRQCHIP takes no argument; KVM_CREATE_VCPU takes the vCPU id (0) and returns a descriptor.
    if vm < 0 || unsafe { libc::ioctl(vm, KVM_CREATE_IRQCHIP, 0) } < 0 || unsafe { libc::ioctl(vm, KVM_CREATE_VCPU, 0) } < 0 {
        out("kvm_hold_error", io::Error::last_os_error());
        return 1;
    }
    out("kvm_hold", "ready");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn tcp_sink(port: u32, count: u32) -> i32 {
    let l = match listen_any(port as u16) {
        Ok(l) => l,
        Err(e) => {
            out("tcp_sink_error", e);
            return 1;
        }
    };
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..count {
        let Ok((mut s, _)) = l.accept() else { return 1 };
        let t = Instant::now();
        let mut n = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => n += k as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    out("tcp_sink_error", e);
                    return 1;
                }
            }
        }
        out("tcp_bytes", n);
        out("tcp_ms", t.elapsed().as_millis());
    }
    0
}

fn tcp_send(addr: &str, mib: u64) -> i32 {
    let mut s = match tcp_connect(addr) {
        Ok(s) => s,
        Err(e) => {
            out("tcp_send_error", e);
            return 1;
        }
    };
    let buf = vec![0u8; 1 << 20];
    let t = Instant::now();
    for _ in 0..mib {
        if let Err(e) = s.write_all(&buf) {
            out("tcp_send_error", e);
            return 1;
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    let _ = s.read(&mut [0u8; 1]);
    out("tcp_send_ms", t.elapsed().as_millis());
    0
}

fn tcp_echo(port: u32) -> i32 {
    let l = match listen_any(port as u16) {
        Ok(l) => l,
        Err(e) => {
            out("tcp_echo_error", e);
            return 1;
        }
    };
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        std::thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    0
}

fn tcp_rr(addr: &str, count: u32) -> i32 {
    let mut s = match tcp_connect(addr) {
        Ok(s) => s,
        Err(e) => {
            out("tcp_rr_error", e);
            return 1;
        }
    };
    let _ = s.set_nodelay(true);
    let mut times = Vec::with_capacity(count as usize);
    let mut b = [0u8; 1];
    for _ in 0..count {
        let t = Instant::now();
        if s.write_all(b"x").and_then(|()| s.read_exact(&mut b)).is_err() {
            out("tcp_rr_error", "connection lost");
            return 1;
        }
        times.push(t.elapsed().as_micros());
    }
    times.sort_unstable();
    if let (Some(p50), Some(p90)) = (times.get(times.len() / 2), times.get(times.len() * 9 / 10)) {
        out("tcp_rr_us_p50", p50);
        out("tcp_rr_us_p90", p90);
    }
    0
}

fn tcp_serve(port: u32, message: &str) -> i32 {
    let l = match listen_any(port as u16) {
        Ok(l) => l,
        Err(e) => {
            out("tcp_serve_error", e);
            return 1;
        }
    };
    for s in l.incoming() {
        if let Ok(mut s) = s {
            let _ = match (message, s.peer_addr()) {
                ("@peer", Ok(peer)) => writeln!(s, "{}", peer.ip().to_canonical()),
                _ => writeln!(s, "{message}"),
            };
        }
    }
    0
}

fn tcp_try(addr: &str) -> i32 {
    let Some(to) = addr.parse::<std::net::SocketAddr>().ok() else {
        out("tcp_error", "ADDR:PORT must be numeric");
        return 2;
    };
    let s = match std::net::TcpStream::connect_timeout(&to, Duration::from_secs(10)) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            out("tcp_refused", 1);
            return 1;
        }
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            out("tcp_timeout", 1);
            return 1;
        }
        Err(e) => {
            out("tcp_error", e);
            return 1;
        }
    };
    print_first_line(s, Duration::from_secs(10), "tcp_error")
}

/// Reads `s` to EOF (at most `timeout` per read) and prints `tcp_got=<first
/// line>`, or `<error_key>=<error>`.
fn print_first_line(mut s: std::net::TcpStream, timeout: Duration, error_key: &str) -> i32 {
    let _ = s.set_read_timeout(Some(timeout));
    let mut text = String::new();
    if let Err(e) = s.read_to_string(&mut text) {
        out(error_key, e);
        return 1;
    }
    out("tcp_got", text.lines().next().unwrap_or(""));
    0
}

fn tcp_get(addr: &str) -> i32 {
    let s = match tcp_connect(addr) {
        Ok(s) => s,
        Err(e) => {
            out("tcp_get_error", e);
            return 1;
        }
    };
    print_first_line(s, Duration::from_secs(30), "tcp_get_error")
}

fn udp_flood(addr: &str, secs: u64) -> i32 {
    // Unconnected: an ICMP error for one datagram does not fail the next send.
    let (s, to) = match (std::net::UdpSocket::bind("0.0.0.0:0"), addr.parse::<std::net::SocketAddr>()) {
        (Ok(s), Ok(to)) => (s, to),
        (Err(e), _) => {
            out("udp_flood_error", e);
            return 1;
        }
        (_, Err(e)) => {
            out("udp_flood_error", e);
            return 1;
        }
    };
    let payload = [0x5au8; 1400];
    let end = Instant::now() + Duration::from_secs(secs);
    out("udp_flood", "started");
    let mut sent = 0u64;
    while Instant::now() < end {
        // Refusals (ICMP port unreachable, queue full) only mean it goes on.
        if s.send_to(&payload, to).is_ok() {
            sent += 1;
        }
    }
    out("udp_sent", sent);
    0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let num = |s: &str| s.parse::<u64>().ok();
    let port = |s: &str| s.parse::<u32>().ok();
    let code = match a.as_slice() {
        ["connect", p, msg] if port(p).is_some() => connect(port(p).unwrap_or(0), msg),
        ["listen", p, n] if port(p).is_some() && port(n).is_some() => {
            listen(port(p).unwrap_or(0), port(n).unwrap_or(0))
        }
        ["flood", p, mib, stall] if port(p).is_some() && num(mib).is_some() && num(stall).is_some() => {
            flood(port(p).unwrap_or(0), num(mib).unwrap_or(0), num(stall).unwrap_or(5))
        }
        ["tcp-sink", p, n] if port(p).is_some() && port(n).is_some() => tcp_sink(port(p).unwrap_or(0), port(n).unwrap_or(0)),
        ["tcp-send", addr, mib] if num(mib).is_some() => tcp_send(addr, num(mib).unwrap_or(0)),
        ["tcp-echo", p] if port(p).is_some() => tcp_echo(port(p).unwrap_or(0)),
        ["tcp-rr", addr, n] if port(n).is_some() => tcp_rr(addr, port(n).unwrap_or(0)),
        ["tcp-serve", p, msg] if port(p).is_some() => tcp_serve(port(p).unwrap_or(0), msg),
        ["tcp-get", addr] => tcp_get(addr),
        ["tcp-try", addr] => tcp_try(addr),
        ["udp-flood", addr, secs] if num(secs).is_some() => udp_flood(addr, num(secs).unwrap_or(0)),
        ["uds-echo", path] => uds_echo(path),
        ["kvm-hold"] => kvm_hold(),
        ["uds-hold", path, pid, secs] if port(pid).is_some() && num(secs).is_some() => {
            uds_hold(path, port(pid).unwrap_or(0), num(secs).unwrap_or(0))
        }
        ["uds-connect", path, p, msg, retry] if port(p).is_some() && num(retry).is_some() => {
            uds_connect(path, port(p).unwrap_or(0), msg, num(retry).unwrap_or(0))
        }
        _ => {
            eprintln!("usage: see the module documentation of tests/src/bin/vsock-probe.rs");
            2
        }
    };
    std::process::exit(code);
}
