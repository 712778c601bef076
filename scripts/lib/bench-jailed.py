#!/usr/bin/env python3
"""Benchmark of jailed launches on this machine (used by scripts/bench-boot).

Starts a hypervisor-agent (temporary state directory, embedded swtpm on a free
port, the stub guest as default kernel) and:
- launches the stub guest (`o0`: marker, then power-off) --runs times after one
  warm-up, timing the API call (zonectl launch returns once the zone ended) and
  reading the jail's phases from the daemon's and the VMM's logs;
- launches it once more hanging (`h`) and reads the VMM's memory from
  /proc/PID/status and /proc/PID/smaps: its overhead is VmRSS minus the guest
  memory it has resident (the anonymous mapping of the guest's size).
Prints one JSON object (min / median / max per phase, in ms; MiB for memory).
"""
import argparse, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

p = argparse.ArgumentParser()
for a in ("--stub", "--daemon", "--zonectl", "--vmm"):
    p.add_argument(a, required=True)
p.add_argument("--runs", type=int, default=10)
args = p.parse_args()
MEM_MIB = 32


def free_pair():
    for _ in range(200):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port >= 65000:
            continue
        try:
            t = socket.socket()
            t.bind(("127.0.0.1", port + 1))
            t.close()
            return port
        except OSError:
            continue
    sys.exit("bench-jailed: no free pair of loopback ports")


def summary(values):
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


tmp = tempfile.mkdtemp(prefix="bench-jailed-")
state, sock = os.path.join(tmp, "state"), os.path.join(tmp, "control.sock")
config = os.path.join(tmp, "agent.toml")
with open(config, "w") as f:
    f.write(f'state_dir = "{state}"\nsocket = "{sock}"\nhost_id = "bench"\n[defaults]\nkernel = "{args.stub}"\n'
            f'cmdline = "o0"\nmemory_mib = {MEM_MIB}\n[tpm]\ndevice = "/nonexistent/tpm"\nswtpm_port = {free_pair()}\n'
            f'[jail]\nvmm = "{args.vmm}"\ncgroup_parent = "bench-jailed-{os.getpid()}"\n')
log = open(os.path.join(tmp, "daemon.log"), "w")
daemon = subprocess.Popen([args.daemon, "daemon", "--config", config], stdout=log, stderr=log)


def zonectl(*a):
    return subprocess.run([args.zonectl, "--socket", sock, *a], capture_output=True, text=True)


def cleanup():
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(10)
    pid_file = os.path.join(state, "swtpm", "swtpm.pid")
    if os.path.exists(pid_file):
        try:
            os.kill(int(open(pid_file).read().strip()), signal.SIGTERM)
        except (ValueError, ProcessLookupError):
            pass
    shutil.rmtree(tmp, ignore_errors=True)


try:
    t = time.monotonic()
    while zonectl("list").returncode != 0:
        if time.monotonic() - t > 30:
            sys.exit("bench-jailed: the daemon did not start: " + open(log.name).read())
        time.sleep(0.05)
    phases = {k: [] for k in ("api_ms", "prepare_ms", "spawn_ms", "clone_ms", "place_ms", "exec_ms", "jail_ms", "start_ms")}
    for i in range(args.runs + 1):
        name = f"s{i}"
        t0 = time.monotonic()
        out = zonectl("launch", name, "-o", "json")
        api_ms = (time.monotonic() - t0) * 1000
        if '"state": "stopped"' not in out.stdout:
            sys.exit(f"bench-jailed: {name} did not end as stopped: {out.stdout} {out.stderr}")
        daemon_log = re.sub(r"\x1b\[[0-9;]*m", "", open(log.name).read())
        m = re.findall(rf"VMM started in its jail zone={name} .*?prepare_us=(\d+) spawn_us=(\d+) clone_us=(\d+) place_us=(\d+) exec_us=(\d+)", daemon_log)
        vmm_log = open(os.path.join(state, "zones", name, "vmm.log")).read()
        jail = re.search(r"jail_us=(\d+)", vmm_log)
        start = re.search(r"start_us=(\d+)", vmm_log)
        if not (m and jail and start):
            sys.exit(f"bench-jailed: no timings for {name}:\n{daemon_log[-2000:]}\n{vmm_log}")
        if i == 0:
            zonectl("destroy", name)
            continue  # warm-up
        phases["api_ms"].append(api_ms)
        phases["prepare_ms"].append(int(m[-1][0]) / 1000)
        phases["spawn_ms"].append(int(m[-1][1]) / 1000)
        for k, v in zip(("clone_ms", "place_ms", "exec_ms"), m[-1][2:]):
            phases[k].append(int(v) / 1000)
        phases["jail_ms"].append(int(jail.group(1)) / 1000)
        phases["start_ms"].append(int(start.group(1)) / 1000)
        zonectl("destroy", name)
    setup = [a + b + c for a, b, c in zip(phases["prepare_ms"], phases["spawn_ms"], phases["jail_ms"])]
    to_marker = [a + b for a, b in zip(phases["spawn_ms"], phases["start_ms"])]

    # Memory of a running VMM (the stub hangs with `h`).
    out = zonectl("launch", "mem", "--no-wait", "--cmdline", "h", "-o", "json")
    pid = json.loads(out.stdout)["vmm_pid"]
    time.sleep(1.0)
    status = open(f"/proc/{pid}/status").read()
    kib = lambda field: int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1))
    guest_kib, size = 0, None
    for line in open(f"/proc/{pid}/smaps"):
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            size = None
        elif line.startswith("Size:"):
            size = int(line.split()[1])
        elif line.startswith("Rss:") and size == MEM_MIB * 1024:
            guest_kib += int(line.split()[1])
    rss, hwm = kib("VmRSS"), kib("VmHWM")
    zonectl("destroy", "mem")
    print(json.dumps({
        "runs": args.runs,
        **{k: summary(v) for k, v in phases.items()},
        "setup_ms": summary(setup),
        "vmm_to_marker_ms": summary(to_marker),
        "overhead_steady_mib": (rss - guest_kib) / 1024,
        "overhead_peak_mib": (hwm - guest_kib) / 1024,
        "vmhwm_mib": hwm / 1024,
        "guest_resident_mib": guest_kib / 1024,
        "binary_mib": os.path.getsize(args.vmm) / (1 << 20),
    }))
finally:
    cleanup()
