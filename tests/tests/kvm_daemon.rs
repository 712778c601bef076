//! The daemon and `zonectl` on this machine's `/dev/kvm`, with the stub
//! guest as the zone (`h`: it hangs, so the zone stays `booting` with a live
//! VMM process; readiness over vsock is tested in the test host). Each test
//! runs its own daemon in a temporary state directory.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn lifecycle_launch_list_inspect_stop_destroy() {
    let d = Daemon::new("").start();
    let z = d.launch("web");
    assert_eq!(z["state"], "booting");
    let pid = z["vmm_pid"].as_i64().unwrap();
    assert!(alive(pid));
    assert_eq!(z["guest_cid"], 3);

    let list = d.json(&["list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "web");
    let table = text(&d.zonectl(&["list"]).stdout);
    assert!(table.starts_with("NAME") && table.contains("web") && table.contains("booting"), "{table}");

    let z2 = d.launch("db");
    assert_eq!(z2["guest_cid"], 4, "CIDs are unique per host");

    let stopped = d.json(&["stop", "web"]);
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert!(!alive(pid), "the VMM must be gone after stop");
    assert!(!d.state().join("zones/web/sock/vsock.sock_1024").exists(), "sockets are released");

    d.json(&["destroy", "web"]);
    assert!(!d.state().join("zones/web").exists());
    fails_with(&d.zonectl(&["inspect", "web"]), "no zone named \"web\"");
    d.json(&["destroy", "db"]);
    assert_eq!(d.json(&["list"]).as_array().unwrap().len(), 0);
}

#[test]
fn duplicate_names_and_bad_requests_are_refused() {
    let d = Daemon::new("").start();
    d.launch("a");
    fails_with(&d.zonectl(&["launch", "a", "--no-wait"]), "already exists");
    fails_with(&d.zonectl(&["launch", "Bad_Name", "--no-wait"]), "invalid zone name");
    fails_with(&d.zonectl(&["launch", &"x".repeat(49), "--no-wait"]), "invalid zone name");
    fails_with(&d.zonectl(&["launch", "k", "--no-wait", "--kernel", "/nonexistent/vmlinux"]), "cannot be read: No such file");
    fails_with(&d.zonectl(&["launch", "v", "--no-wait", "--vcpus", "99"]), "limits.max_vcpus");
    fails_with(&d.zonectl(&["launch", "m", "--no-wait", "--memory", "999999"]), "limits.max_memory_mib");
    fails_with(&d.zonectl(&["launch", "q", "--no-wait", "--", "echo", "a\"b"]), "double quote");
    // Nothing was left behind by the refused launches.
    assert_eq!(d.json(&["list"]).as_array().unwrap().len(), 1);
    // Garbage on the control socket does not hurt the daemon.
    {
        use std::io::Write;
        let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
        let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\x00garbage");
    }
    assert_eq!(d.json(&["list"]).as_array().unwrap().len(), 1);
}

#[test]
fn limits_are_enforced() {
    let d = Daemon::new("max_zones = 2\nmax_total_memory_mib = 80").start();
    d.launch("one");
    fails_with(&d.zonectl(&["launch", "big", "--no-wait", "--memory", "64"]), "max_total_memory_mib");
    d.launch("two");
    fails_with(&d.zonectl(&["launch", "three", "--no-wait"]), "limits.max_zones");
    d.json(&["stop", "one"]);
    d.launch("three");
}

#[test]
fn a_killed_vmm_fails_its_zone_and_releases_it() {
    let d = Daemon::new("").start();
    let pid = d.launch("victim")["vmm_pid"].as_i64().unwrap();
    Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    let z = d.wait_state("victim", "failed");
    assert!(z["failure"].as_str().unwrap().contains("killed by signal 9"), "{z}");
    assert!(z["vmm_pid"].is_null());
    assert!(!d.state().join("zones/victim/sock/vsock.sock_1024").exists());
    // Its name can be reused after destroy.
    d.json(&["destroy", "victim"]);
    d.launch("victim");
}

#[test]
fn a_daemon_restart_re_adopts_running_zones() {
    let mut d = Daemon::new("").start();
    let pid = d.launch("keep")["vmm_pid"].as_i64().unwrap();
    let gone = d.launch("gone")["vmm_pid"].as_i64().unwrap();
    d.kill9();
    assert!(alive(pid), "a daemon crash must not take the zone down");
    // While the daemon is down, one VMM dies.
    Command::new("kill").args(["-9", &gone.to_string()]).status().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    fails_with(&d.zonectl(&["list"]), "start the daemon");
    d.restart();
    let keep = d.json(&["inspect", "keep"]);
    assert_eq!(keep["state"], "booting");
    assert_eq!(keep["vmm_pid"].as_i64(), Some(pid), "re-adopted, not restarted");
    let gone = d.json(&["inspect", "gone"]);
    assert_eq!(gone["state"], "failed", "{gone}");
    // The re-adopted VMM is really supervised: stopping it works.
    assert_eq!(d.json(&["stop", "keep"])["state"], "stopped");
    assert!(!alive(pid));
}

#[test]
fn a_full_state_disk_is_a_clear_error_and_harms_no_zone() {
    let d = Daemon::new("");
    std::fs::create_dir_all(d.state()).unwrap();
    let st = Command::new("mount").args(["-t", "tmpfs", "-o", "size=2m", "zonetest"]).arg(d.state()).status().unwrap();
    assert!(st.success(), "mounting a small tmpfs needs root");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(d.state());
    let d = d.start();
    d.launch("first");
    // Fill the disk.
    let _ = std::fs::write(d.state().join("filler"), vec![0u8; 3 * 1024 * 1024]);
    let out = d.zonectl(&["launch", "second", "--no-wait"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("is full") && err.contains("free space"), "{err}");
    let first = d.json(&["inspect", "first"]);
    assert_eq!(first["state"], "booting", "the existing zone is unaffected: {first}\n{}", d.log());
    assert!(alive(first["vmm_pid"].as_i64().unwrap()));
    assert_eq!(d.json(&["list"]).as_array().unwrap().len(), 1, "no half-made zone remains");
}

/// The backtick-quoted `zonectl …` and `hypervisor-agent …` commands in a message.
fn suggestions(message: &str) -> Vec<String> {
    message
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("zonectl ") || s.starts_with("hypervisor-agent "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_command_zonectl_suggests_works_and_help_says_what_each_program_is() {
    let help = text(&Command::new(ZONECTL).arg("--help").output().unwrap().stdout);
    let first = help.lines().next().unwrap_or_default();
    assert!(first.starts_with("zonectl") && first.contains("zones"), "zonectl --help opens with: {first}");
    assert!(!help.contains("image builder and the zonectl CLI"), "{help}");
    let help = text(&Command::new(AGENT).arg("--help").output().unwrap().stdout);
    assert!(help.lines().next().unwrap_or_default().contains("host daemon"), "{help}");

    // No daemon yet: zonectl says how to start one; the suggested command starts it.
    let mut d = Daemon::new("");
    let out = d.zonectl(&["list"]);
    let hints = suggestions(&text(&out.stderr));
    assert_eq!(hints, ["hypervisor-agent daemon --config FILE"], "{}", text(&out.stderr));
    let args: Vec<String> = hints[0].replace("FILE", &d.config().display().to_string()).split(' ').skip(1).map(str::to_owned).collect();
    let mut child = Command::new(AGENT).args(&args).stderr(std::process::Stdio::null()).spawn().unwrap();
    let t = std::time::Instant::now();
    while !d.zonectl(&["list"]).status.success() {
        assert!(t.elapsed() < Duration::from_secs(20), "`{}` did not start the daemon", hints[0]);
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let d = {
        d.restart();
        d
    };

    // The hints of refused requests name commands that exist and do what they say.
    d.launch("a");
    let out = d.zonectl(&["launch", "a", "--no-wait"]);
    let hints = suggestions(&text(&out.stderr));
    assert_eq!(hints, ["zonectl destroy a"], "{}", text(&out.stderr));
    let out = d.zonectl(&hints[0].split(' ').skip(1).collect::<Vec<_>>());
    assert!(out.status.success(), "`{}`: {}", hints[0], text(&out.stderr));
    let out = d.zonectl(&["inspect", "a"]);
    let hints = suggestions(&text(&out.stderr));
    assert_eq!(hints, ["zonectl list"], "{}", text(&out.stderr));
    assert!(d.zonectl(&["list"]).status.success());
    // A zone that never becomes ready (the stub): the hint shows its console.
    let out = d.zonectl(&["launch", "slow", "--wait-timeout", "1"]);
    let hints = suggestions(&text(&out.stderr));
    assert_eq!(hints, ["zonectl logs slow --console"], "{}", text(&out.stderr));
    let out = d.zonectl(&hints[0].split(' ').skip(1).collect::<Vec<_>>());
    assert!(out.status.success(), "`{}`: {}", hints[0], text(&out.stderr));
}
