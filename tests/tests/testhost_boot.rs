//! Zones with a real userspace, booted by our VMM inside the test host (real
//! KVM via kvm_amd under QEMU TCG with emulated SVM), and the same kernel and
//! image under QEMU microvm there as the reference VMM.
//!
//! Needs QEMU, swtpm and the payload (`scripts/test.sh` builds it). These
//! tests fail, never skip, when any of that is missing.

use zone_tests::testhost::{self, BASE_IMAGE, KERNEL, SHELL_IMAGE, ZONECTL};

#[test]
fn zones_boot_to_zone_guest_in_the_test_host() {
    let run = testhost::run(&format!(
        r#"
Q="console=ttyS0 reboot=k panic=-1 quiet"
# A zone run that outlives its own --timeout by half a minute is hung: show
# where its threads are (and the kernel's last words), then kill it, so the
# run fails with that instead of at the test host's timeout.
exec 3>&1
guard() {{
    "$@" &
    local pid=$! rc
    (
        sleep 330
        kill -0 "$pid" 2>/dev/null || exit 0
        echo "HUNG: $*" >&3
        for t in /proc/"$pid"/task/*; do
            echo "  task $(basename "$t") $(cat "$t"/comm) state=$(cut -d' ' -f3 "$t"/stat) wchan=$(cat "$t"/wchan)" >&3
            sed 's/^/    /' "$t"/stack >&3 2>/dev/null
        done
        dmesg | tail -n 30 | sed 's/^/  dmesg: /' >&3
        kill -9 "$pid"
    ) &
    local watchdog=$!
    wait "$pid"; rc=$?
    kill "$watchdog" 2>/dev/null
    return $rc
}}
echo "kvm=$(test -c /dev/kvm && echo yes || echo no)"
echo "tpmrm=$(test -c /dev/tpmrm0 && echo yes || echo no)"

# 1. The default zone: base image, no command, powers off once ready.
guard {ZONECTL} run --kernel {KERNEL} --initrd {BASE_IMAGE} --memory 128 --timeout 300 \
    --cmdline "console=ttyS0 reboot=k panic=-1 quiet zone.oneshot" --console-log /tmp/base.log > /tmp/base.out 2>&1
echo "base_rc=$?"
echo "base_ready=$(grep -c '^ZONE-GUEST-READY uptime_ms=[0-9]*' /tmp/base.log)"
echo "base_exit=$(grep -o 'ZONE-GUEST-EXIT status=[0-9]*' /tmp/base.log)"

# 2. A command in the shell image: its output and exit status come back.
guard {ZONECTL} run --kernel {KERNEL} --initrd {SHELL_IMAGE} --memory 128 --timeout 300 --cmdline "$Q" \
    -- /bin/sh -c 'echo hello from $(uname -s) zone; exit 3' > /tmp/cmd.out 2>&1
echo "cmd_rc=$?"
echo "cmd_hello=$(grep -c 'hello from Linux zone' /tmp/cmd.out)"

# 3. Two vCPUs: the zone kernel brings both up (MP table).
guard {ZONECTL} run --kernel {KERNEL} --initrd {SHELL_IMAGE} --vcpus 2 --memory 256 --timeout 300 --cmdline "$Q" \
    -- /bin/nproc > /tmp/smp.out 2>&1
echo "smp_rc=$?"
# The console turns \n into \r\n.
echo "smp_nproc=$(tr -d '\r' < /tmp/smp.out | grep -x '[0-9]*' | tail -n 1)"

# 4. A command that does not exist: zone-guest reports 127.
guard {ZONECTL} run --kernel {KERNEL} --initrd {BASE_IMAGE} --memory 128 --timeout 300 --cmdline "$Q" -- /no/such/cmd > /tmp/missing.out 2>&1
echo "missing_rc=$?"

# 5. PID 1 exits (rdinit=/bin/false) -> the kernel panics -> the VMM reports a panic.
guard {ZONECTL} run --kernel {KERNEL} --initrd {SHELL_IMAGE} --memory 128 --timeout 300 \
    --cmdline "$Q rdinit=/bin/false" -o json > /tmp/panic.json 2>/dev/null
echo "panic_rc=$?"
echo "panic_reason=$(grep -o '"reason": "[a-z_]*"' /tmp/panic.json)"
"#
    ));
    let v = |k: &str| run.value(k).unwrap_or_else(|| panic!("no {k} in output:\n{}\n{}", run.output, run.diagnostics)).to_owned();
    assert_eq!(v("kvm"), "yes", "the test host must have a real /dev/kvm");
    assert_eq!(v("tpmrm"), "yes", "the test host must have a real /dev/tpmrm0");
    assert_eq!(v("base_rc"), "0", "{}", run.output);
    assert_eq!(v("base_ready"), "1");
    assert_eq!(v("base_exit"), "ZONE-GUEST-EXIT status=0");
    assert_eq!(v("cmd_rc"), "3");
    assert_eq!(v("cmd_hello"), "1");
    assert_eq!(v("smp_rc"), "0");
    assert_eq!(v("smp_nproc"), "2");
    assert_eq!(v("missing_rc"), "127");
    assert_eq!(v("panic_rc"), "101");
    assert_eq!(v("panic_reason"), r#""reason": "panic""#);
}

#[test]
fn qemu_microvm_boots_the_same_kernel_and_image() {
    let run = testhost::run(&format!(
        r#"
# The test host's nested KVM (QEMU TCG's emulated SVM) has been seen to
# soft-lock a QEMU vCPU for good: such a run is killed after 180 s, named
# (qemu_hung_attempt=N) and tried once more, never counted as a boot.
for attempt in 1 2; do
  timeout -s KILL 180 qemu-system-x86_64 -M microvm,x-option-roms=off,isa-serial=on,rtc=off -accel kvm -cpu host -m 128 \
    -nodefaults -no-user-config -display none -monitor none -serial stdio -no-reboot \
    -device isa-debug-exit,iobase=0x501,iosize=1 \
    -kernel {KERNEL} -initrd {BASE_IMAGE} -append "console=ttyS0 reboot=k panic=-1 quiet zone.oneshot" > /tmp/qemu.out 2>&1
  rc=$?
  [ $rc -eq 137 ] || break
  echo "qemu_hung_attempt=$attempt"
done
# isa-debug-exit makes QEMU exit with (status << 1) | 1: zone-guest powers off with 0.
echo "qemu_rc=$rc"
echo "qemu_ready=$(grep -c '^ZONE-GUEST-READY uptime_ms=' /tmp/qemu.out)"
"#
    ));
    assert_eq!(run.value("qemu_ready"), Some("1"), "{}\n{}", run.output, run.diagnostics);
    assert_eq!(run.value("qemu_rc"), Some("1"), "{}", run.output);
}
