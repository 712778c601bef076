//! The jail of every VMM the daemon starts, on this machine's `/dev/kvm`
//! with stub zones (they hang, so the VMM stays up to be inspected): the
//! VMM's credentials, namespaces, descriptors, cgroup and seccomp filters,
//! what it can reach from inside, a forbidden system call, and what is left
//! after `kill -9`. Each test runs its own daemon.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn status_field(pid: i64, task: Option<&str>, field: &str) -> String {
    let path = match task {
        Some(t) => format!("/proc/{pid}/task/{t}/status"),
        None => format!("/proc/{pid}/status"),
    };
    let status = std::fs::read_to_string(path).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in the status"))
        .trim()
        .to_owned()
}

/// The VMM's threads as (name, seccomp mode), without the kernel workers
/// KVM attaches to the VM.
fn vmm_threads(pid: i64) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for task in tasks.flatten() {
        let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else { continue };
        let name = name.trim().to_owned();
        if name.starts_with("kvm-") {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        let seccomp = status.lines().find_map(|l| l.strip_prefix("Seccomp:")).unwrap_or("?").trim().to_owned();
        out.push((name, seccomp));
    }
    out
}

fn fd_targets(pid: i64) -> Vec<(i32, String)> {
    let mut out: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            let fd = e.file_name().to_string_lossy().parse().unwrap();
            (fd, std::fs::read_link(e.path()).map(|p| p.display().to_string()).unwrap_or_default())
        })
        .collect();
    out.sort();
    out
}

/// The zone's cgroup memory limit file (v2 `memory.max`, or v1 `memory.limit_in_bytes`).
fn memory_limit_of(pid: i64) -> (PathBuf, u64) {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in cgroups.lines() {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        let file = if controllers.split(',').any(|c| c == "memory") {
            Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/')).join("memory.limit_in_bytes")
        } else if controllers.is_empty() {
            Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')).join("memory.max")
        } else {
            continue;
        };
        if let Ok(v) = std::fs::read_to_string(&file) {
            if let Ok(n) = v.trim().parse() {
                return (file, n);
            }
        }
    }
    panic!("the VMM is in no cgroup with a memory limit: {cgroups}");
}

#[test]
fn the_vmm_runs_unprivileged_in_its_own_namespaces_with_only_its_descriptors() {
    let d = Daemon::new("").start();
    let z = d.launch("web");
    let pid = z["vmm_pid"].as_i64().unwrap();
    // Wait until the VMM has entered its jail and every thread it started
    // has run its prologue (a thread just cloned still carries its creator's
    // name and filter until it names itself and installs its own).
    let t = Instant::now();
    let expected = ["vcpu0", "vsock", "signals", "console-input"];
    loop {
        let entered =
            std::fs::read_to_string(d.state().join("zones/web/vmm.log")).unwrap_or_default().contains("entered the jail");
        let threads = vmm_threads(pid);
        let settled = entered
            && expected.iter().all(|e| threads.iter().any(|(n, _)| n == e))
            && threads.iter().all(|(_, seccomp)| seccomp == "2");
        if settled {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the VMM never had every thread filtered in its jail: threads {threads:?}; {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Credentials: the zone's own uid/gid, no capabilities, no new privileges, seccomp filtering.
    let uid: u32 = status_field(pid, None, "Uid").split_whitespace().next().unwrap().parse().unwrap();
    let gid: u32 = status_field(pid, None, "Gid").split_whitespace().next().unwrap().parse().unwrap();
    assert!(uid >= 3_000_000 && gid == uid, "uid {uid} gid {gid}");
    for field in ["Uid", "Gid"] {
        let ids: BTreeSet<String> = status_field(pid, None, field).split_whitespace().map(str::to_owned).collect();
        assert_eq!(ids.len(), 1, "real, effective, saved and fs {field} all equal: {ids:?}");
    }
    assert_eq!(status_field(pid, None, "Groups"), "", "no supplementary groups");
    for field in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(pid, None, field), "0000000000000000", "{field}");
    }
    assert_eq!(status_field(pid, None, "NoNewPrivs"), "1");
    // Every thread of the VMM (main, vCPU, vsock, signals, console input)
    // has a filter, and keeps it.
    let threads = vmm_threads(pid);
    for (name, seccomp) in &threads {
        assert_eq!(seccomp, "2", "thread {name} runs without a filter");
    }
    for expected in expected {
        assert!(threads.iter().any(|(n, _)| n == expected), "no {expected} thread in {threads:?}");
    }

    // Namespaces: all its own.
    let daemon_pid = d.pid();
    for ns in ["mnt", "pid", "net", "ipc", "uts"] {
        let ours = std::fs::read_link(format!("/proc/{daemon_pid}/ns/{ns}")).unwrap();
        let its = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_ne!(ours, its, "the VMM shares the daemon's {ns} namespace");
    }
    // Its root is the jail: nothing of the host's file system.
    let root = std::fs::read_dir(format!("/proc/{pid}/root")).unwrap();
    let mut entries: Vec<String> = root.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    entries.sort();
    assert_eq!(entries, ["dev", "sock"], "the jail's root holds only dev/ and sock/");

    // Descriptors: the contract's and what KVM and the devices made, none of the daemon's.
    let vmm_fds = fd_targets(pid);
    let zone_dir = d.state().join("zones/web");
    for (fd, target) in &vmm_fds {
        let allowed = match *fd {
            0 => target == "/dev/null",
            1 | 2 => Path::new(target) == zone_dir.join("vmm.log"),
            _ => {
                target.starts_with("anon_inode:")
                    || target.starts_with("socket:")
                    || Path::new(target) == zone_dir.join("console.log")
                    || Path::new(target) == zone_dir.join("outcome.json")
            }
        };
        assert!(allowed, "unexpected descriptor {fd} -> {target} in the VMM: {vmm_fds:?}");
    }
    assert!(vmm_fds.iter().any(|(_, t)| t == "anon_inode:kvm-vm"), "{vmm_fds:?}");
    assert!(vmm_fds.iter().any(|(_, t)| t.starts_with("anon_inode:kvm-vcpu")), "{vmm_fds:?}");
    let daemon_sockets: BTreeSet<String> =
        fd_targets(daemon_pid).into_iter().map(|(_, t)| t).filter(|t| t.starts_with("socket:") || t.starts_with('/')).collect();
    for (fd, target) in &vmm_fds {
        assert!(
            target == "/dev/null" || !daemon_sockets.contains(target),
            "the VMM holds the daemon's descriptor {target} (fd {fd})"
        );
    }
    let sockets = vmm_fds.iter().filter(|(_, t)| t.starts_with("socket:")).count();
    assert_eq!(sockets, 2, "only its vsock and console listeners: {vmm_fds:?}");

    // Its cgroup bounds memory: guest memory (32 MiB) + the default overhead (64 MiB).
    let (file, limit) = memory_limit_of(pid);
    assert_eq!(limit, (32 + 64) << 20, "{}", file.display());

    // SIGTERM stops it cleanly: the VMM (PID 1 of its namespace) waits for it.
    let stopped = d.json(&["stop", "web"]);
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    let outcome = std::fs::read_to_string(zone_dir.join("outcome.json")).unwrap();
    assert!(outcome.contains("\"reason\":\"stopped\""), "{outcome}");
}

#[test]
fn from_inside_its_jail_the_vmm_reaches_neither_host_files_nor_the_daemons_state() {
    let mut d = Daemon::new("");
    let ak_auth = d.state().join("tpm/ak.auth");
    let probes = [PathBuf::from("/etc/shadow"), ak_auth.clone(), d.state().join("zones/web/zone.json"), d.socket()];
    let list: Vec<String> = probes.iter().map(|p| p.display().to_string()).collect();
    d.set_env("HYPERVISOR_AGENT_VMM_PROBE", &list.join(","));
    let d = d.start();
    assert!(ak_auth.exists(), "the daemon's AK auth value exists on the host");
    d.launch("web");
    let log_path = d.state().join("zones/web/vmm.log");
    let t = Instant::now();
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.matches("test hook: open").count() == probes.len() {
            break log;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "the probe did not run: {log}\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    for p in &probes {
        let line = log.lines().find(|l| l.contains(&format!("test hook: open {}:", p.display()))).unwrap();
        assert!(line.contains("denied"), "the VMM could open {}: {line}", p.display());
    }
    assert!(!log.contains(": opened"), "{log}");
}

#[test]
fn a_forbidden_system_call_on_a_vcpu_thread_ends_the_zone_naming_it() {
    let mut d = Daemon::new("");
    d.set_env("HYPERVISOR_AGENT_VMM_FORBIDDEN_SYSCALL", "1");
    let d = d.start();
    let pid = d.launch("bad")["vmm_pid"].as_i64().unwrap();
    let z = d.wait_state("bad", "failed");
    assert_eq!(z["failure"], "seccomp violation: syscall 41 (socket)", "{z}");
    assert!(!alive(pid), "the VMM is gone");
    assert!(!d.state().join("zones/bad/sock").exists(), "its sockets are released");
}

#[test]
fn kill_9_leaves_no_cgroup_jail_directory_or_socket_behind() {
    let d = Daemon::new("").start();
    let pid = d.launch("victim")["vmm_pid"].as_i64().unwrap();
    let t = Instant::now();
    while status_field(pid, None, "Seccomp") != "2" {
        assert!(t.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(20));
    }
    let (limit_file, _) = memory_limit_of(pid);
    let group = limit_file.parent().unwrap().to_owned();
    let jail = d.state().join("jail/victim");
    assert!(group.is_dir() && jail.is_dir());
    Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    let z = d.wait_state("victim", "failed");
    assert!(z["failure"].as_str().unwrap().contains("killed by signal 9"), "{z}");
    assert!(!group.exists(), "the cgroup {} is left behind", group.display());
    assert!(!jail.exists(), "the jail directory is left behind");
    assert!(!d.state().join("zones/victim/sock").exists(), "sockets are left behind");
}

#[test]
fn unusable_jail_settings_are_one_clear_error_at_start() {
    let cases: [(&str, &str); 4] = [
        ("first_uid = 0\nuid_count = 100\n", "jail.first_uid"),
        ("first_uid = 1000000000\nuid_count = 10\n", "limits.max_zones"),
        ("vmm = \"/nonexistent/zone-vmm\"\n", "jail.vmm"),
        ("root = \"/etc/hostname\"\n", "jail.root"),
    ];
    for (jail, needle) in cases {
        let d = Daemon::new("");
        let config = std::fs::read_to_string(d.config()).unwrap().replace("[jail]\n", &format!("[jail]\n{jail}"));
        // A later duplicate key would be a TOML error, not the check under test.
        let config: String = config
            .lines()
            .filter(|l| !(jail.contains("vmm =") && l.starts_with("vmm = ") && !l.contains("/nonexistent")))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(d.config(), config).unwrap();
        let out = Command::new(AGENT).args(["daemon", "--config"]).arg(d.config()).output().unwrap();
        let err = text(&out.stderr);
        assert!(!out.status.success(), "started with {jail:?}");
        assert!(err.contains(needle), "{jail:?}: {err}");
        assert!(!d.state().join("zones").join("x").exists());
    }
    // The same jail root for two daemons: the second is refused.
    let first = Daemon::new("").start();
    let second = Daemon::new("");
    let config = std::fs::read_to_string(second.config())
        .unwrap()
        .replace("[jail]\n", &format!("[jail]\nroot = {:?}\n", first.state().join("jail")));
    std::fs::write(second.config(), config).unwrap();
    let out = Command::new(AGENT).args(["daemon", "--config"]).arg(second.config()).output().unwrap();
    assert!(text(&out.stderr).contains("already in use by another hypervisor-agent"), "{}", text(&out.stderr));
}
