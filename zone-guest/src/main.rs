//! `zone-guest` entry point: PID 1 of a zone. See the library docs.

use std::ffi::CString;
use std::io::Write;
use std::time::Duration;

use zone_guest::{BootRequest, EXIT_MARKER, POWER_PORT, READY_MARKER, parse_cmdline, status_byte};

fn main() {
    mount_basics();
    let uptime_ms = uptime_ms();
    let request = std::fs::read_to_string("/proc/cmdline").map(|l| parse_cmdline(&l)).unwrap_or_else(|e| {
        eprintln!("zone-guest: cannot read /proc/cmdline ({e}); running no command");
        BootRequest::default()
    });
    say(&format!("{READY_MARKER} uptime_ms={uptime_ms}"));

    let status = if request.command.is_empty() {
        if !request.oneshot {
            idle();
        }
        0
    } else {
        run_command(&request.command)
    };
    say(&format!("{EXIT_MARKER} status={status}"));
    power_off(status);
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

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

fn uptime_ms() -> u128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return 0;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32).as_millis()
}

/// Runs the command with a minimal environment, reaping any other children
/// (PID 1 adopts orphans) until the command itself exits.
fn run_command(command: &[String]) -> u8 {
    let mut cmd = std::process::Command::new(&command[0]);
    cmd.args(&command[1..])
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/root")
        .env("TERM", "linux");
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("zone-guest: cannot run {}: {e}", command[0]);
            return 127;
        }
    };
    let pid = child.id() as libc::pid_t;
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
