//! The daemon and zonectl inside the test host (real KVM): zones become
//! ready over their vsock host channel, the workload's output and exit
//! status come back over it, a zone writing garbage or flooding its channel
//! cannot hurt the daemon, and a daemon restart re-adopts a running zone
//! whose zone-guest reconnects.

use zone_tests::testhost::{self, SHELL_IMAGE, daemon_prelude as setup};

#[test]
fn zones_report_ready_output_and_exit_over_the_host_channel() {
    let run = testhost::run(&format!(
        r#"{setup}
# A service zone: ready over vsock, then running.
zonectl launch web --wait-timeout 600 > /tmp/launch.out 2>&1
echo "launch_rc=$?"
echo "web_state=$(field web state)"
echo "web_ready_ms=$(field web launch_to_ready_ms)"
echo "web_uptime_ms=$(field web ready_uptime_ms)"

# A job zone: output and exit status over the channel.
zonectl launch job --initrd {SHELL_IMAGE} --wait-timeout 600 -- /bin/sh -c 'echo to-stdout; echo to-stderr >&2; exit 4' > /dev/null 2>&1
wait_state job stopped
echo "job_state=$(field job state)"
echo "job_exit=$(field job exit_status)"
zonectl logs job > /tmp/job.log
echo "job_stdout=$(grep -c to-stdout /tmp/job.log)"
echo "job_stderr=$(grep -c to-stderr /tmp/job.log)"
echo "job_console_clean=$(zonectl logs job --console | grep -c to-stdout)"

# An interactive shell on the serial console, driven through zonectl console.
zonectl launch shell1 --initrd {SHELL_IMAGE} --wait-timeout 600 -- /bin/sh > /dev/null 2>&1
printf 'echo console-works-$((40+2))\nexit 7\n' | timeout 120 zonectl console shell1 > /tmp/console.out 2>&1
echo "console_rc=$?"
wait_state shell1 stopped
echo "shell1_exit=$(field shell1 exit_status)"
echo "shell1_said=$(zonectl logs shell1 | grep -c console-works-42)"
echo "console_echo=$(grep -c 'echo console-works' /tmp/console.out)"
zonectl destroy shell1 > /dev/null 2>&1

# Restart the daemon (kill -9): web keeps running, is re-adopted, zone-guest reconnects.
web_pid=$(field web vmm_pid)
kill -9 $(cat /tmp/daemon.pid)
sleep 1
echo "vmm_survived=$(test -d /proc/$web_pid && echo yes || echo no)"
start_daemon
echo "web_after_restart=$(field web state)"
echo "web_pid_after=$(test "$(field web vmm_pid)" = "$web_pid" && echo same || echo different)"

zonectl stop web > /dev/null 2>&1
echo "web_stopped=$(field web state)"
echo "vmm_gone=$(test -d /proc/$web_pid && echo no || echo yes)"
zonectl destroy web > /dev/null 2>&1
zonectl destroy job > /dev/null 2>&1
echo "zones_left=$(zonectl list -o json | grep -c '"name"')"
"#,
        setup = setup()
    ));
    let v = |k: &str| run.value(k).unwrap_or_else(|| panic!("no {k}:\n{}\n{}", run.output, run.diagnostics)).to_owned();
    assert_eq!(v("launch_rc"), "0", "{}", run.output);
    assert_eq!(v("web_state"), "running");
    assert!(v("web_ready_ms").parse::<u64>().unwrap() > 0);
    assert!(v("web_uptime_ms").parse::<u64>().unwrap() > 0);
    assert_eq!(v("job_state"), "stopped", "{}", run.output);
    assert_eq!(v("job_exit"), "4");
    assert_eq!(v("job_stdout"), "1");
    assert_eq!(v("job_stderr"), "1");
    assert_eq!(v("job_console_clean"), "0", "workload output goes over the channel, not the console");
    assert_eq!(v("console_rc"), "0", "{}", run.output);
    assert_eq!(v("shell1_exit"), "7", "the shell read `exit 7` from the console");
    assert_eq!(v("shell1_said"), "1", "the shell ran the command typed on the console");
    assert!(v("console_echo").parse::<u32>().unwrap() >= 1, "the console stream shows the typed line");
    assert_eq!(v("vmm_survived"), "yes");
    assert_eq!(v("web_after_restart"), "running");
    assert_eq!(v("web_pid_after"), "same");
    assert_eq!(v("web_stopped"), "stopped");
    assert_eq!(v("vmm_gone"), "yes");
    assert_eq!(v("zones_left"), "0");
}

#[test]
fn garbage_and_floods_on_the_host_channel_hurt_only_the_sender() {
    let run = testhost::run(&format!(
        r#"{setup}
zonectl launch calm --wait-timeout 600 > /dev/null 2>&1
daemon_pid=$(cat /tmp/daemon.pid)
rss_before=$(rss_kib $daemon_pid)

# A zone that sends garbage to the host channel port, then floods it with raw bytes.
zonectl launch noisy --initrd /opt/zone/images/vsock-test.cpio --wait-timeout 600 -- /bin/sh -c \
  'vsock-probe connect 1024 not-a-frame-at-all; vsock-probe flood 1024 64 5; exit 0' > /dev/null 2>&1
# Stopped, or failed (then at once, with the reason below).
for i in $(seq 600); do s=$(field noisy state); [ "$s" = stopped ] || [ "$s" = failed ] && break; sleep 0.5; done
echo "noisy_state=$(field noisy state)"
if [ "$(field noisy state)" != stopped ]; then
  zonectl inspect noisy 2>&1 | sed "s/^/  noisy: /"
  zonectl logs noisy --console 2>&1 | tail -n 15 | sed "s/^/  noisy console: /"
  tail -n 20 /var/lib/za/zones/noisy/workload.log 2>&1 | sed "s/^/  noisy workload: /"
  tail -n 20 /var/lib/za/zones/noisy/vmm.log 2>&1 | sed "s/^/  noisy vmm: /"
  grep noisy /tmp/daemon.log | tail -n 20 | sed "s/^/  daemon: /"
  # A seccomp kill is audited by the kernel with the thread's name (comm).
  dmesg | grep -i -E 'type=1326|seccomp' | tail -n 5 | sed "s/^/  kernel: /"
fi

# A zone whose workload floods stdout through the real protocol (8 MB at the 1 MiB/s throttle).
loud_start=$(date +%s)
zonectl launch loud --initrd {SHELL_IMAGE} --wait-timeout 600 -- /bin/sh -c '/bin/busybox yes 0123456789abcdef | /bin/busybox head -c 8000000; exit 0' > /tmp/loud.out 2>&1 || cat /tmp/loud.out
max_rss=0
for i in $(seq 1200); do
  r=$(rss_kib $daemon_pid); [ "$r" -gt "$max_rss" ] && max_rss=$r
  zonectl inspect loud > /dev/null 2>&1 || break
  [ "$(field loud state)" = stopped ] && break; sleep 0.5
done
echo "loud_state=$(field loud state)"
echo "loud_secs=$(( $(date +%s) - loud_start ))"
echo "loud_log_bytes=$(wc -c < /var/lib/za/zones/loud/workload.log)"
echo "loud_on_console=$(grep -c 0123456789abcdef /var/lib/za/zones/loud/console.log)"
echo "daemon_alive=$(test -d /proc/$daemon_pid && echo yes || echo no)"
echo "calm_state=$(field calm state)"
echo "rss_before_kib=$rss_before"
echo "rss_max_kib=$max_rss"
echo "bad_frame_logged=$(grep -c 'bad frame' /tmp/daemon.log)"
"#,
        setup = setup()
    ));
    let v = |k: &str| run.value(k).unwrap_or_else(|| panic!("no {k}:\n{}\n{}", run.output, run.diagnostics)).to_owned();
    assert_eq!(v("daemon_alive"), "yes");
    assert_eq!(v("calm_state"), "running", "another zone is unaffected: {}", run.output);
    assert_eq!(v("noisy_state"), "stopped", "{}", run.output);
    assert_eq!(v("loud_state"), "stopped", "{}", run.output);
    assert_eq!(v("loud_log_bytes"), "8000000", "throttled, not dropped (below the cap)");
    assert_eq!(v("loud_on_console"), "0", "the workload's output went to the host channel only, never to the console");
    // 8 MB at 1 MiB/s is ~8 s of output plus the boot: a stall would take minutes.
    let secs: u64 = v("loud_secs").parse().unwrap();
    assert!(secs < 240, "the flooding zone took {secs} s to finish: its output stalled\n{}", run.output);
    assert!(v("bad_frame_logged").parse::<u32>().unwrap() >= 1);
    let (before, max) = (v("rss_before_kib").parse::<u64>().unwrap(), v("rss_max_kib").parse::<u64>().unwrap());
    assert!(max < before + 32 * 1024, "daemon RSS grew from {before} KiB to {max} KiB under a flood");
}
