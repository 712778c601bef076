//! `zone-bench`: times a VMM command over repeated runs.
//!
//! ```text
//! zone-bench --label NAME --marker TEXT [--runs N] [--warmup N] [--kill-at-marker] -- CMD [ARGS...]
//! ```
//!
//! For each run it spawns CMD (no shell), reads its stdout until a line
//! contains TEXT (start → marker), waits for it to exit (start → exit) and
//! reads its peak RSS from `wait4`. It prints one JSON object with
//! min/median/max of each, which `scripts/bench-boot` turns into a table.
//! A run whose output never shows the marker, or that takes longer than
//! 120 s, makes the whole benchmark fail.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zone_tests::bench::{Summary, parse_args};

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("zone-bench: {e}\nusage: zone-bench --label NAME --marker TEXT [--runs N] [--warmup N] [--kill-at-marker] -- CMD [ARGS...]");
            std::process::exit(2);
        }
    };
    let mut marker_ms = Vec::new();
    let mut exit_ms = Vec::new();
    let mut rss_kib = Vec::new();
    for i in 0..args.warmup + args.runs {
        let (m, e, r) = match one_run(&args.command, &args.marker, args.kill_at_marker) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("zone-bench: {}: run {i}: {e}", args.label);
                std::process::exit(1);
            }
        };
        if i >= args.warmup {
            marker_ms.push(m);
            exit_ms.push(e);
            rss_kib.push(r);
        }
    }
    let out = serde_json::json!({
        "label": args.label,
        "runs": args.runs,
        "marker_ms": Summary::of(&marker_ms),
        "exit_ms": Summary::of(&exit_ms),
        "peak_rss_mib": Summary::of(&rss_kib.iter().map(|k| k / 1024.0).collect::<Vec<_>>()),
    });
    println!("{out}");
}

/// How long one run may take before it is killed as hung.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Output lines kept to report where a failed run stopped.
const TAIL_LINES: usize = 15;

fn one_run(command: &[String], marker: &str, kill_at_marker: bool) -> Result<(f64, f64, f64), String> {
    let start = Instant::now();
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // A command that fails before its guest prints (a VMM refusing its
        // arguments) says why on stderr: let that reach the bench's output.
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot spawn {}: {e}", command[0]))?;
    let pid = child.id() as libc::pid_t;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    // Guard against a VMM that never exits: kill it after 120 s unless told
    // the run is over first (the message arrives before the child is reaped,
    // so the pid still names our child whenever the kill happens).
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let timed_out = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&timed_out);
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(RUN_TIMEOUT).is_err() {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            // SAFETY: `pid` is our child and has not been reaped yet (see above).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    // The last lines, to say where a run that hung stopped.
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut marker_at = None;
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).map_err(|e| e.to_string())? > 0 {
        let text = String::from_utf8_lossy(&line).into_owned();
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(text.trim_end().to_owned());
        if marker_at.is_none() && text.contains(marker) {
            marker_at = Some(start.elapsed());
            if kill_at_marker {
                // SAFETY: `pid` is our unreaped child, so it cannot have been reused.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                break;
            }
        }
        line.clear();
    }
    // Wait until the child has exited (without reaping it), then stop the watchdog.
    let mut info: libc::siginfo_t = unsafe_zeroed_siginfo();
    // SAFETY: `info` is a valid out-pointer; WNOWAIT leaves the child unreaped.
    unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
    let _ = done_tx.send(());
    let _ = watchdog.join();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `usage` are valid out-pointers; `pid` is our child.
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let exited_at = start.elapsed();
    if got != pid {
        return Err(format!("wait4 failed: {}", std::io::Error::last_os_error()));
    }
    let last = tail.iter().map(|l| format!("\n  | {l}")).collect::<String>();
    let marker_at = match marker_at {
        Some(m) => m,
        None if timed_out.load(std::sync::atomic::Ordering::SeqCst) => {
            return Err(format!(
                "no {marker:?} within {} s: killed {}; its last output:{last}",
                RUN_TIMEOUT.as_secs(),
                command.join(" ")
            ));
        }
        None => return Err(format!("{} ended (status {status:#x}) without printing {marker:?}; its last output:{last}", command[0])),
    };
    Ok((marker_at.as_secs_f64() * 1e3, exited_at.as_secs_f64() * 1e3, usage.ru_maxrss as f64))
}

fn unsafe_zeroed_siginfo() -> libc::siginfo_t {
    // SAFETY: siginfo_t is a plain C struct for which all-zero bytes are valid.
    unsafe { std::mem::zeroed() }
}
