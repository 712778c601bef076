#!/usr/bin/env bash
# Reproduces the test host's own kernel crash with QEMU microvm alone (no
# daemon, none of our VMM): one microVM makes TCP round trips to the test host
# over a virtio-net TAP while a second one boots and floods UDP. The test
# host's kernel (KVM on QEMU TCG's emulated AMD SVM) then often dies with
# "BUG: TASK stack guard page was hit" in a vCPU thread (recursive page faults
# on a per-CPU access right after VMRUN): the crash seen with many zones, and
# with our VMM under the same load. Prints each attempt's outcome.
# Usage: scripts/testhost/nested-crash.sh [ATTEMPTS]   (needs scripts/setup.sh's payload)
# Environment: TESTHOST_SMP (test-host vCPUs), NESTED_CRASH_TIMEOUT (seconds per attempt, default 600)
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
attempts=${1:-3}
payload="$ZONE_CACHE_DIR/payload"
[ -x "$payload/opt/zone/bin/vsock-probe" ] || die "no test-host payload: run scripts/setup.sh"
script=$(mktemp)
trap 'rm -f "$script"' EXIT
cat > "$script" <<'SCRIPT'
K=/opt/zone/kernel/vmlinux
I=/opt/zone/images/vsock-test.cpio
P=/opt/zone/bin/vsock-probe
$P tcp-echo 5002 > /dev/null 2>&1 &
Q="qemu-system-x86_64 -M microvm,x-option-roms=off,isa-serial=on,rtc=off,acpi=off,auto-kernel-cmdline=off -bios bios-microvm.bin -accel kvm -cpu host -m 128 -nodefaults -no-user-config -display none -monitor none -serial stdio -no-reboot -device isa-debug-exit,iobase=0x501,iosize=1 -kernel $K -initrd $I"
base="console=ttyS0 reboot=k panic=-1 quiet virtio_mmio.device=512@0xfeb00e00:12"
link() { for i in $(seq 300); do [ -e /sys/class/net/$1 ] && break; sleep 0.1; done; ip addr add $2 dev $1 && ip link set $1 up; }
link qt1 10.214.0.2/31 &
timeout -s KILL 120 $Q -netdev tap,id=n0,ifname=qt1,script=no,downscript=no -device virtio-net-device,netdev=n0 \
  -append "$base zone.net=10.214.0.3/31,10.214.0.2 -- /bin/busybox sh -c \"while true; do /bin/vsock-probe tcp-rr 10.214.0.2:5002 200; done\"" > /tmp/calm.out 2>&1 &
for i in $(seq 600); do [ "$(grep -c tcp_rr_us_p50 /tmp/calm.out)" -ge 3 ] && break; sleep 0.2; done
echo "round trips before: $(grep -c tcp_rr_us_p50 /tmp/calm.out) rounds"
link qt0 10.214.0.0/31 &
timeout -s KILL 60 $Q -netdev tap,id=n1,ifname=qt0,script=no,downscript=no -device virtio-net-device,netdev=n1 \
  -append "$base zone.net=10.214.0.1/31,10.214.0.0 -- /bin/vsock-probe udp-flood 10.214.0.0:9999 20" > /tmp/flood.out 2>&1
echo "flood: $(tr -d '\r' < /tmp/flood.out | grep VSOCK-PROBE | tr '\n' ' ')"
echo "round trips after: $(grep -c tcp_rr_us_p50 /tmp/calm.out) rounds"
SCRIPT
for a in $(seq "$attempts"); do
  err=$(mktemp)
  rc=0
  TESTHOST_TIMEOUT=${NESTED_CRASH_TIMEOUT:-600} "$ZONE_ROOT/scripts/testhost/run.sh" "$script" "$payload" 2> "$err" | sed "s/^/attempt $a: /" || rc=$?
  if [ "$rc" -eq 125 ]; then
    # run.sh shows the console's last lines: the panic, and whose thread it hit.
    echo "attempt $a: the test host's kernel died: $(grep -m1 -o -E 'BUG: .*|Kernel panic.*' "$err" | head -n 1); in $(grep -m1 -o 'Comm: [^ ]*' "$err" || echo 'an unnamed thread')"
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 126 ]; then
    # A script that outlives its own bounded waits: run.sh says whether the
    # test host froze or a process outlived its SIGKILL, and where the
    # test host's vCPUs were.
    echo "attempt $a: rc $rc, the script hung:"
    { grep -E 'ERROR|qemu thread|  vCPU |unkillable' "$err" || true; } | head -n 40 | sed "s/^/attempt $a:   /"
  else
    echo "attempt $a: rc $rc, the test host survived"
  fi
  rm -f "$err"
done
