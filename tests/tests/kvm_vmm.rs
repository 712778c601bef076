//! VMM tests on this machine's own `/dev/kvm` with the stub guest
//! (`tests/stub/stub.S`): memory, vCPUs, serial console, every way a zone
//! ends, and the error paths. Each zone runs in a child `zonectl` process.
//!
//! These need `/dev/kvm`; without it they fail (they are never skipped).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ZONECTL: &str = env!("CARGO_BIN_EXE_zonectl-under-test");
const STUB: &str = concat!(env!("OUT_DIR"), "/stub.elf");

fn require_kvm() {
    let kvm = Path::new("/dev/kvm");
    assert!(
        kvm.exists(),
        "/dev/kvm is missing: the KVM tests need it and refuse to pass without it (load kvm_intel/kvm_amd)"
    );
}

fn zonectl(args: &[&str]) -> Output {
    require_kvm();
    Command::new(ZONECTL).args(args).output().expect("spawn zonectl")
}

fn stub(cmdline: &str, extra: &[&str]) -> Output {
    let mut args = vec!["run", "--kernel", STUB, "--memory", "32", "--timeout", "20", "--cmdline", cmdline];
    args.extend_from_slice(extra);
    zonectl(&args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn power_off_reports_the_guest_status() {
    let out = stub("o7", &[]);
    assert_eq!(out.status.code(), Some(7), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "STUB-READY\n", "console must hold exactly the guest's bytes");
    assert!(text(&out.stderr).contains("powered off (status 7)"));
}

#[test]
fn console_is_the_guest_output_and_sees_the_command_line() {
    let out = stub("e_console_check marker", &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "STUB-READY\ne_console_check marker\n");
}

#[test]
fn console_log_file_gets_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    let out = stub("o0", &["--console-log", log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "STUB-READY\n");
}

#[test]
fn i8042_reset_ends_the_zone() {
    let out = stub("r", &["-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reason"], "reset");
}

#[test]
fn kernel_panic_is_reported_as_a_panic() {
    let out = stub("p", &["-o", "json"]);
    assert_eq!(out.status.code(), Some(101));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reason"], "panic");
    assert!(v["message"].as_str().unwrap().contains("stub requested a panic"));
}

#[test]
fn triple_fault_is_reported() {
    let out = stub("t", &["-o", "json"]);
    assert_eq!(out.status.code(), Some(102));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reason"], "triple_fault");
}

#[test]
fn a_hung_guest_is_stopped_at_the_deadline() {
    let out = zonectl(&["run", "--kernel", STUB, "--memory", "32", "--timeout", "1", "--cmdline", "h", "-o", "json"]);
    assert_eq!(out.status.code(), Some(124));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reason"], "timeout");
}

#[test]
fn several_vcpus_and_memory_sizes_boot() {
    for (vcpus, mem) in [("1", "16"), ("2", "64"), ("4", "256"), ("32", "128"), ("1", "3584")] {
        let out = zonectl(&["run", "--kernel", STUB, "--vcpus", vcpus, "--memory", mem, "--timeout", "20", "--cmdline", "o5"]);
        assert_eq!(out.status.code(), Some(5), "vcpus={vcpus} mem={mem}: {}", text(&out.stderr));
    }
}

fn assert_fails_with(args: &[&str], needle: &str) {
    let out = zonectl(args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expected failure for {args:?}, stderr: {err}");
    assert!(err.contains(needle), "stderr for {args:?} lacks {needle:?}: {err}");
    assert!(!err.contains("panicked"), "zonectl panicked: {err}");
}

#[test]
fn bad_counts_are_refused_with_what_to_do() {
    assert_fails_with(&["run", "--kernel", STUB, "--vcpus", "0"], "--vcpus");
    assert_fails_with(&["run", "--kernel", STUB, "--vcpus", "33"], "--vcpus");
    assert_fails_with(&["run", "--kernel", STUB, "--memory", "0"], "--memory");
    assert_fails_with(&["run", "--kernel", STUB, "--memory", "99999999"], "--memory");
}

#[test]
fn bad_kernels_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str, bytes: &[u8]| -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let text_file = p("notes.txt", b"this is not a kernel\n");
    assert_fails_with(&["run", "--kernel", text_file.to_str().unwrap()], "not an ELF vmlinux");
    let stub = std::fs::read(STUB).unwrap();
    let truncated = p("truncated.elf", &stub[..stub.len() / 2]);
    assert_fails_with(&["run", "--kernel", truncated.to_str().unwrap()], "truncated or corrupt");
    let header_only = p("header.elf", &stub[..40]);
    assert_fails_with(&["run", "--kernel", header_only.to_str().unwrap()], "truncated or corrupt");
    assert_fails_with(&["run", "--kernel", "/nonexistent/vmlinux"], "/nonexistent/vmlinux");
    assert_fails_with(&["run", "--kernel", dir.path().to_str().unwrap()], "not a regular file");
}

#[test]
fn an_initramfs_larger_than_memory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.cpio");
    std::fs::write(&big, vec![0u8; 40 << 20]).unwrap();
    assert_fails_with(
        &["run", "--kernel", STUB, "--initrd", big.to_str().unwrap(), "--memory", "32"],
        "does not fit in 32 MiB",
    );
}

#[test]
fn an_unreadable_initramfs_is_named() {
    assert_fails_with(&["run", "--kernel", STUB, "--initrd", "/nonexistent/initrd.cpio"], "initramfs");
}

#[test]
fn a_missing_kvm_device_says_what_to_do() {
    let out = Command::new(ZONECTL)
        .args(["run", "--kernel", STUB, "--kvm", "/nonexistent/kvm"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("has no KVM"), "{}", text(&out.stderr));
}

#[test]
fn vsock_options_are_checked_and_the_socket_is_removed_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("vsock.sock");
    let uds = uds.to_str().unwrap();
    assert_fails_with(&["run", "--kernel", STUB, "--vsock-uds", uds, "--vsock-cid", "2"], "--vsock-cid 3");
    assert_fails_with(&["run", "--kernel", STUB, "--vsock-uds", "/nonexistent/dir/v.sock"], "directory exists");
    // A zone with a vsock device (irqfd, ioeventfds, the vsock thread) boots and
    // ends as usual, and its socket goes with it.
    let out = stub("o3", &["--vsock-uds", uds, "--vsock-cid", "7"]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert!(!Path::new(uds).exists(), "the VMM left {uds} behind");
}
