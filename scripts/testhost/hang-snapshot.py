#!/usr/bin/env python3
"""Where a hung test host's vCPUs are, taken before run.sh kills its QEMU.

Usage: hang-snapshot.py QEMU_PID MONITOR_SOCKET [SYSTEM_MAP]

Prints, for the outer QEMU process, how much CPU each of its threads used
over one second (a TCG vCPU thread at ~100% is executing guest code, one at
~0% is waiting), then each test-host vCPU's registers from QEMU's monitor
(`info registers -a`): RIP, CS (its low two bits are the privilege level),
CR3 and EFER (SVME set: the vCPU can be running a nested guest). Given a real
System.map of the test host's kernel (run.sh passes TESTHOST_SYSTEM_MAP; the
test host boots with nokaslr) a kernel RIP is named.
Then four more samples of the RIPs, 0.25 s apart: whether each vCPU moved.
Everything is best effort: a part that cannot be read says so.
"""

import bisect
import os
import re
import socket
import sys
import time


def thread_ticks(pid):
    ticks = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # utime and stime are fields 14 and 15 of stat (1-based).
        ticks[tid] = (comm, int(fields[11]) + int(fields[12]))
    return ticks


def cpu_use(pid):
    hz = os.sysconf("SC_CLK_TCK")
    before = thread_ticks(pid)
    time.sleep(1.0)
    after = thread_ticks(pid)
    for tid, (comm, t) in sorted(after.items()):
        if tid in before:
            pct = 100.0 * (t - before[tid][1]) / hz
            if pct >= 1.0 or "CPU" in comm:
                print(f"  qemu thread {tid} {comm}: {pct:.0f}% CPU")


def monitor(path, command):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5.0)
    s.connect(path)

    def read_until_prompt():
        buf = b""
        while not buf.rstrip().endswith(b"(qemu)"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return buf

    read_until_prompt()
    s.sendall(command.encode() + b"\n")
    out = read_until_prompt()
    s.close()
    # The monitor echoes with terminal escapes; keep the printable text.
    text = re.sub(rb"\x1b\[[0-9;]*[A-Za-z]", b"", out).decode(errors="replace")
    return text.replace("\r", "")


def load_symbols(path):
    addrs, names = [], []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1] in "tTwW":
                    addrs.append(int(parts[0], 16))
                    names.append(parts[2])
    except OSError:
        return None
    if len(addrs) < 1000:
        # Not a real map (Debian's linux-image ships a one-line placeholder).
        return None
    order = sorted(range(len(addrs)), key=addrs.__getitem__)
    return [addrs[i] for i in order], [names[i] for i in order]


# Loadable modules (kvm, kvm_amd, ...) live above the kernel image; their
# symbols are not in System.map.
MODULES_START = 0xFFFFFFFFC0000000


def name(symbols, rip):
    """The kernel symbol at `rip`. QEMU shows the registers of whatever the
    vCPU runs, so a RIP may be a zone's (nested) kernel, whose addresses look
    alike: hence "if it was running it"."""
    if not symbols or rip < 0xFFFF800000000000:
        return ""
    if rip >= MODULES_START:
        return " (in a module of the test host's kernel, if it was running it)"
    addrs, names = symbols
    i = bisect.bisect_right(addrs, rip) - 1
    if i < 0 or rip - addrs[i] > 0x10000:
        return ""
    return f" ({names[i]}+{rip - addrs[i]:#x} in the test host's kernel, if it was running it)"


SAMPLES = 5
SAMPLE_GAP_S = 0.25


def vcpu_rips(text):
    """{vCPU: RIP} from one `info registers -a`."""
    rips, cpu = {}, None
    for line in text.splitlines():
        m = re.match(r"CPU#(\d+)", line)
        if m:
            cpu = m.group(1)
        m = re.search(r"[RE]IP=([0-9a-f]+) ", line)
        if m and cpu is not None:
            rips[cpu] = int(m.group(1), 16)
    return rips


def main():
    pid, sock = sys.argv[1], sys.argv[2]
    symbols = load_symbols(sys.argv[3]) if len(sys.argv) > 3 else None
    try:
        cpu_use(pid)
    except OSError as e:
        print(f"  qemu threads unreadable: {e}")
    try:
        text = monitor(sock, "info registers -a")
    except OSError as e:
        print(f"  QEMU monitor unreadable: {e}")
        return
    cpu = None
    for line in text.splitlines():
        m = re.match(r"CPU#(\d+)", line)
        if m:
            cpu = m.group(1)
        m = re.search(r"[RE]IP=([0-9a-f]+) [RE]FL=([0-9a-f]+).*CPL=(\d).*HLT=(\d)", line)
        if m:
            rip = int(m.group(1), 16)
            print(f"  vCPU {cpu}: RIP={rip:#x}{name(symbols, rip)} RFL={m.group(2)} CPL={m.group(3)} HLT={m.group(4)}")
        if line.startswith(("CR0=", "EFER=", "CS =")):
            print(f"  vCPU {cpu}: {line.strip()}")
    # More samples: a vCPU whose RIP never moves while its thread burns CPU is
    # stuck on one instruction (or in the emulator), not looping in code.
    seen = {c: [r] for c, r in vcpu_rips(text).items()}
    for _ in range(SAMPLES - 1):
        time.sleep(SAMPLE_GAP_S)
        try:
            more = monitor(sock, "info registers -a")
        except OSError:
            break
        text += "\n" + more
        for c, r in vcpu_rips(more).items():
            seen.setdefault(c, []).append(r)
    for c, rips in sorted(seen.items()):
        if len(rips) < 2:
            continue
        span = f"{len(rips)} samples over {SAMPLE_GAP_S * (len(rips) - 1):.2f} s"
        if len(set(rips)) == 1:
            print(f"  vCPU {c}: RIP unchanged in {span}")
        else:
            named = ", ".join(f"{r:#x}{name(symbols, r)}" for r in dict.fromkeys(rips))
            print(f"  vCPU {c}: RIPs in {span}: {named}")
    raw = os.environ.get("HANG_SNAPSHOT_RAW")
    if raw:
        with open(raw, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
