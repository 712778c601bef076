//! `zone-guest` entry point: PID 1 of a zone. See the library docs.

use std::ffi::CString;
use std::io::Write;
use std::time::Duration;

use attestation_proto::guest::{Exited, GuestMessage, Output, Stream, guest_message};
use zone_guest::channel::Channel;
use zone_guest::evidence;
use zone_guest::{BootRequest, EXIT_MARKER, POWER_PORT, READY_MARKER, parse_cmdline, status_byte};

/// How long zone-guest waits for the host channel before running the
/// command with its output on the console instead (a zone without a
/// daemon, e.g. `zonectl run`). Once the command runs with the channel, its
/// output always goes there, waiting through reconnections.
const CHANNEL_WAIT: Duration = Duration::from_secs(30);

fn main() {
    // SAFETY: getpid(2) has no preconditions.
    if unsafe { libc::getpid() } != 1 {
        std::process::exit(tool(&std::env::args().skip(1).collect::<Vec<_>>()));
    }
    mount_basics();
    if let Err(e) = loopback_up() {
        eprintln!("zone-guest: cannot bring up the loopback interface: {e}");
    }
    let uptime_ms = uptime_ms();
    let request = std::fs::read_to_string("/proc/cmdline").map(|l| parse_cmdline(&l)).unwrap_or_else(|e| {
        eprintln!("zone-guest: cannot read /proc/cmdline ({e}); running no command");
        BootRequest::default()
    });
    match &request.net {
        Some(Ok(net)) => match zone_guest::net::configure(net) {
            Ok(()) => say(&format!("zone-guest: {} is {}/{} via {}", zone_guest::net::INTERFACE, net.address, net.prefix, net.gateway)),
            Err(e) => say(&format!("zone-guest: cannot configure the network interface: {e}")),
        },
        Some(Err(e)) => say(&format!("zone-guest: zone.net= on the kernel command line is unusable ({e}); no network")),
        None => {}
    }
    say(&format!("{READY_MARKER} uptime_ms={uptime_ms}"));
    let channel = has_vsock_device().then(|| Channel::start(u64::try_from(uptime_ms).unwrap_or(u64::MAX)));

    let status = if request.command.is_empty() {
        if !request.oneshot {
            idle();
        }
        0
    } else {
        let relay = channel.as_ref().filter(|c| c.wait_connected(CHANNEL_WAIT));
        match &request.image {
            None => run_command(&request.command, relay, None),
            Some(img) => match zone_guest::rootfs::prepare(img, &request.command)
                .and_then(|p| zone_guest::rootfs::Entry::new(&p).map(|e| (p, e)))
            {
                Ok((process, entry)) => run_command(&request.command, relay, Some((process, entry))),
                Err(e) => {
                    say(&format!("zone-guest: cannot set up the image root: {e}"));
                    report_error(relay, &format!("zone-guest: cannot set up the image root: {e}\n"));
                    126
                }
            },
        }
    };
    say(&format!("{EXIT_MARKER} status={status}"));
    if let Some(c) = &channel {
        let msg = GuestMessage { message: Some(guest_message::Message::Exited(Exited { status: i32::from(status) })) };
        c.send_last(msg, Duration::from_secs(2));
    }
    power_off(status);
}

/// zone-guest run as a command inside the zone: `zone-guest evidence …`.
fn tool(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("evidence") => evidence_command(&args[1..]),
        Some("forward") => match zone_guest::forward::parse_args(&args[1..]) {
            Ok((listen, port)) => match zone_guest::forward::run(listen, port) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("zone-guest forward: cannot listen on {listen}: {e}");
                    1
                }
            },
            Err(e) => {
                eprintln!("zone-guest forward: {e}\n{}", zone_guest::forward::USAGE);
                2
            }
        },
        _ => {
            eprintln!(
                "zone-guest runs as the zone's PID 1; as a command it knows two subcommands:\n{}\n{}",
                evidence::USAGE,
                zone_guest::forward::USAGE
            );
            2
        }
    }
}

fn evidence_command(args: &[String]) -> i32 {
    let parsed = match evidence::parse_args(args) {
        Ok(p) => p,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("zone-guest evidence: {e}");
            }
            eprintln!("{}", evidence::USAGE);
            return 2;
        }
    };
    let nonce = match parsed.nonce {
        Some(n) => n,
        None => {
            let mut n = vec![0u8; 32];
            if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut n)) {
                eprintln!("zone-guest evidence: cannot read /dev/urandom for a nonce ({e}); pass --nonce HEX");
                return 1;
            }
            eprintln!("nonce={}", hex::encode(&n));
            n
        }
    };
    let bytes = match evidence::request(&nonce, parsed.timeout) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("zone-guest evidence: {e}");
            return 1;
        }
    };
    let written = match &parsed.out {
        Some(path) => std::fs::write(path, &bytes),
        None => std::io::stdout().lock().write_all(&bytes).and_then(|()| std::io::stdout().flush()),
    };
    if let Err(e) = written {
        eprintln!("zone-guest evidence: cannot write the evidence to {}: {e}", parsed.out.as_deref().unwrap_or("stdout"));
        return 1;
    }
    0
}

/// Writes one line to the console and flushes it.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn mount_basics() {
    for (src, target, fstype, mode) in [
        ("proc", "/proc", "proc", 0o555),
        ("sysfs", "/sys", "sysfs", 0o555),
        ("devtmpfs", "/dev", "devtmpfs", 0o755),
        ("tmpfs", "/tmp", "tmpfs", 0o1777),
        ("tmpfs", "/run", "tmpfs", 0o755),
    ] {
        let _ = std::fs::create_dir_all(target);
        let (src_c, target_c, fs_c) = (cstr(src), cstr(target), cstr(fstype));
        let data = cstr(&format!("mode={mode:o}"));
        let data_ptr = if fstype == "tmpfs" { data.as_ptr().cast() } else { std::ptr::null() };
        // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
        let rc = unsafe { libc::mount(src_c.as_ptr(), target_c.as_ptr(), fs_c.as_ptr(), libc::MS_NOSUID, data_ptr) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EBUSY) {
                eprintln!("zone-guest: mounting {fstype} on {target} failed: {err}");
            }
        }
    }
}

/// Brings up `lo` (127.0.0.1), which nothing else in a zone does: services
/// inside the zone (e.g. `zone-guest forward` for spire-agent) listen there.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket we own.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: an all-zero ifreq is valid; the name and flags are set below.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: SIOCGIFFLAGS on a valid socket with a valid, NUL-terminated ifreq.
    if unsafe { libc::ioctl(raw, libc::SIOCGIFFLAGS, &mut req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel filled the flags member of the union above.
    unsafe { req.ifr_ifru.ifru_flags |= libc::c_short::try_from(libc::IFF_UP).unwrap_or(1) };
    // SAFETY: SIOCSIFFLAGS on a valid socket with a valid ifreq.
    if unsafe { libc::ioctl(raw, libc::SIOCSIFFLAGS, &req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

fn uptime_ms() -> u128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return 0;
    }
    Duration::new(u64::try_from(ts.tv_sec).unwrap_or(0), u32::try_from(ts.tv_nsec).unwrap_or(0)).as_millis()
}

/// Whether the zone has a virtio vsock device (virtio device id 19).
fn has_vsock_device() -> bool {
    std::fs::read_dir("/sys/bus/virtio/devices")
        .map(|dir| {
            dir.flatten().any(|d| {
                std::fs::read_to_string(d.path().join("device")).map(|id| id.trim() == "0x0013").unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

/// Copies a pipe of the command to the host channel (the channel's queue
/// bounds what is buffered; a full queue makes this wait, and the command
/// with it).
fn relay(mut from: impl std::io::Read, stream: Stream, channel: Channel) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
            Ok(n) => n,
        };
        let msg = GuestMessage {
            message: Some(guest_message::Message::Output(Output { stream: stream as i32, data: buf[..n].to_vec() })),
        };
        channel.send_output(msg);
    }
}

/// Sends `text` as the workload's stderr when there is a channel.
fn report_error(channel: Option<&Channel>, text: &str) {
    if let Some(c) = channel {
        let msg = GuestMessage {
            message: Some(guest_message::Message::Output(Output { stream: Stream::Stderr as i32, data: text.as_bytes().to_vec() })),
        };
        c.send_output(msg);
    }
}

/// Runs the command with a minimal environment (or, in an image root, the
/// image's environment, user and directory), reaping any other children
/// (PID 1 adopts orphans) until the command itself exits. With a host
/// channel, its stdout and stderr go there; otherwise to the console.
fn run_command(
    command: &[String],
    channel: Option<&Channel>,
    image: Option<(zone_guest::rootfs::Process, zone_guest::rootfs::Entry)>,
) -> u8 {
    let mut cmd = match image {
        None => {
            let mut cmd = std::process::Command::new(&command[0]);
            cmd.env_clear()
                .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
                .env("HOME", "/root")
                .env("TERM", "linux");
            cmd
        }
        Some((process, entry)) => {
            let mut cmd = std::process::Command::new(&process.program);
            cmd.env_clear().envs(process.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            // SAFETY: `enter` only makes system calls (chroot, chdir, setgroups,
            // setgid, setuid) on data prepared before fork.
            unsafe { std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || entry.enter()) };
            cmd
        }
    };
    cmd.args(&command[1..]);
    if channel.is_some() {
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("zone-guest: cannot run {}: {e}", command[0]);
            return 127;
        }
    };
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let mut relays = 0;
    if let Some(ch) = channel {
        let pipes: [(Option<Box<dyn std::io::Read + Send>>, Stream); 2] = [
            (child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>), Stream::Stdout),
            (child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>), Stream::Stderr),
        ];
        for (pipe, stream) in pipes {
            if let Some(pipe) = pipe {
                let (ch, done) = (ch.clone(), done_tx.clone());
                relays += 1;
                std::thread::spawn(move || {
                    relay(pipe, stream, ch);
                    let _ = done.send(());
                });
            }
        }
    }
    let pid = child.id() as libc::pid_t;
    let status = wait_for(pid);
    // Drain what the command wrote; a background process that keeps the pipes
    // open must not keep the zone from powering off.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    for _ in 0..relays {
        if done_rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).is_err() {
            break;
        }
    }
    status
}

/// Reaps children until `pid` exits; returns its status byte.
fn wait_for(pid: libc::pid_t) -> u8 {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer; -1 waits for any child.
        let got = unsafe { libc::waitpid(-1, &mut status, 0) };
        if got == pid {
            return status_byte(status);
        }
        if got < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            return 255;
        }
    }
}

/// Service mode: stay up, reaping orphans, until the zone is stopped from outside.
fn idle() -> ! {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer; -1 waits for any child.
        if unsafe { libc::waitpid(-1, &mut status, 0) } < 0 {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// Powers the zone off reporting `status`: the zone power port first; if the
/// VMM has none, a reset (`reboot=k`), and as a last resort a kernel power-off.
fn power_off(status: u8) -> ! {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    // SAFETY: ioperm only changes this process's I/O permission bitmap.
    if unsafe { libc::ioperm(libc::c_ulong::from(POWER_PORT), 1, 1) } == 0 {
        // SAFETY: the port was granted above; writing it is the documented
        // power-off request of the zone's VMM and touches no memory.
        unsafe { std::arch::asm!("out dx, al", in("dx") POWER_PORT, in("al") status, options(nomem, nostack)) };
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: reboot(2) with a valid command; PID 1 running as root.
    unsafe { libc::reboot(libc::RB_AUTOBOOT) };
    // SAFETY: as above.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
