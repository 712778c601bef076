//! A zone's writable scratch disk (virtio-blk) inside the test host (real
//! KVM): the guest finds it by its serial, what it writes reaches the file
//! the daemon created for it and survives the guest's page cache, it cannot
//! write past the end, the file never grows, another zone's scratch disk
//! starts empty, the disk is in the measured launch record, and it is removed
//! with its zone.

use zone_tests::testhost::{self, SHELL_IMAGE, daemon_prelude as setup};

#[test]
fn a_scratch_disk_keeps_what_its_zone_writes_and_only_that_zone_sees_it() {
    let run = testhost::run(&format!(
        r#"{setup}
img=/var/lib/za/zones/writer/scratch.img
# The writer: 64 random 4 KiB blocks at block 100, flushed, read back after
# dropping the guest's caches; then a write past the end.
zonectl launch writer --initrd {SHELL_IMAGE} --scratch-mib 8 --wait-timeout 600 -- /bin/busybox sh -c 'b=/bin/busybox; echo serial=$(cat /sys/block/vda/serial); echo sectors=$(cat /sys/block/vda/size); echo ro=$(cat /sys/block/vda/ro); $b dd if=/dev/urandom of=/pat bs=4096 count=64 2>/dev/null; $b dd if=/pat of=/dev/vda bs=4096 seek=100 conv=fsync 2>/dev/null; echo write_rc=$?; $b sync; echo 3 > /proc/sys/vm/drop_caches; $b dd if=/dev/vda of=/back bs=4096 skip=100 count=64 2>/dev/null; $b cmp -s /pat /back && echo same=1 || echo same=0; echo pat_sum=$($b sha256sum /pat | $b cut -c1-64); $b dd if=/pat of=/dev/vda bs=4096 seek=2048 count=1 conv=fsync 2>/dev/null; echo past_end_rc=$?' > /tmp/writer.out 2>&1
echo "writer_launch_rc=$?"
sed 's/^/writer launch: /' /tmp/writer.out
wait_state writer stopped
echo "writer_state=$(field writer state)"
zonectl logs writer > /tmp/writer.log
cat /tmp/writer.log | sed 's/^/writer: /'
for k in serial sectors ro write_rc same pat_sum past_end_rc; do
  echo "$k=$(grep "^$k=" /tmp/writer.log | head -n 1 | cut -d= -f2)"
done
echo "host_size=$(stat -c %s $img)"
echo "host_sum=$(dd if=$img bs=4096 skip=100 count=64 2>/dev/null | sha256sum | cut -c1-64)"
echo "devices_measured=$(zonectl inspect writer -o json | grep -c 'virtio-blk:scratch:rw:8MiB')"
zonectl eventlog -o json > /tmp/eventlog.out 2>&1
echo "in_eventlog=$(grep -c 'virtio-blk:scratch:rw:8MiB' /tmp/eventlog.out)"

# Another zone's scratch disk starts empty: the same blocks read as zeros.
zonectl launch reader --initrd {SHELL_IMAGE} --scratch-mib 8 --wait-timeout 600 -- /bin/busybox sh -c 'echo reader_sum=$(/bin/busybox dd if=/dev/vda bs=4096 skip=100 count=64 2>/dev/null | /bin/busybox sha256sum | /bin/busybox cut -c1-64)' > /dev/null 2>&1
wait_state reader stopped
echo "reader_sum=$(zonectl logs reader | grep '^reader_sum=' | cut -d= -f2)"
echo "zero_sum=$(head -c 262144 /dev/zero | sha256sum | cut -c1-64)"

# Without --scratch-mib a zone has no disk.
zonectl launch nodisk --initrd {SHELL_IMAGE} --wait-timeout 600 -- /bin/busybox sh -c 'echo nodisk_blocks=$(/bin/busybox ls /sys/block | /bin/busybox grep -c vd)' > /dev/null 2>&1
wait_state nodisk stopped
echo "nodisk_blocks=$(zonectl logs nodisk | grep '^nodisk_blocks=' | cut -d= -f2)"

# More than limits.max_scratch_mib: refused, saying which limit.
zonectl launch huge --initrd {SHELL_IMAGE} --scratch-mib 1000000 > /tmp/huge.out 2>&1
echo "huge_rc=$?"
echo "huge_says_limit=$(grep -c max_scratch_mib /tmp/huge.out)"
echo "huge_exists=$(zonectl inspect huge > /dev/null 2>&1 && echo yes || echo no)"

zonectl destroy writer > /dev/null 2>&1
echo "img_after_destroy=$(test -e $img && echo present || echo gone)"
"#,
        setup = setup()
    ));
    let v = |k: &str| run.value(k).unwrap_or_else(|| panic!("no {k}:\n{}\n{}", run.output, run.diagnostics)).to_owned();
    assert_eq!(v("writer_launch_rc"), "0", "{}", run.output);
    assert_eq!(v("writer_state"), "stopped", "{}", run.output);
    assert_eq!(v("serial"), "scratch", "{}", run.output);
    assert_eq!(v("sectors"), "16384", "8 MiB in 512-byte sectors");
    assert_eq!(v("ro"), "0");
    assert_eq!(v("write_rc"), "0", "{}", run.output);
    assert_eq!(v("same"), "1", "what the zone wrote reads back after its caches were dropped");
    assert_eq!(v("pat_sum").len(), 64, "{}", run.output);
    assert_eq!(v("host_sum"), v("pat_sum"), "the blocks reached the host file at the right offset");
    assert_ne!(v("past_end_rc"), "0", "a write past the end fails");
    assert_eq!(v("host_size"), (8u64 << 20).to_string(), "the file never grows");
    assert_eq!(v("devices_measured"), "1", "the disk is in the launch record");
    assert!(v("in_eventlog").parse::<u32>().unwrap() >= 1, "the launch event names the disk");
    assert_eq!(v("reader_sum"), v("zero_sum"), "another zone's scratch disk starts empty");
    assert_eq!(v("nodisk_blocks"), "0");
    assert_ne!(v("huge_rc"), "0");
    assert_eq!(v("huge_says_limit"), "1", "{}", run.output);
    assert_eq!(v("huge_exists"), "no");
    assert_eq!(v("img_after_destroy"), "gone");
}
