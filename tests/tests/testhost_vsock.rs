//! The zone vsock end to end, in the test host: our VMM's virtio-vsock with
//! its hybrid Unix-socket host side, the real zone kernel's virtio_vsock
//! driver, and `vsock-probe` on both ends.
//!
//! One zone runs, in order: a guest → host echo round trip (host listener on
//! `U_1100`; port 1024 is zone-guest's host channel, left alone here), a
//! connect to a host port nobody listens on (RST), a guest
//! listener that a host process reaches with `CONNECT 5000` on `U`, and a
//! 64 MiB send to a host listener that never reads while the VMM's RSS is
//! sampled. Meanwhile the host also tries `CONNECT` to a guest port nobody
//! listens on.
//!
//! Needs QEMU, swtpm and the payload (`scripts/test.sh` builds it); fails,
//! never skips, when any of that is missing.

use zone_tests::testhost::{self, KERNEL, VSOCK_IMAGE, VSOCK_PROBE, ZONECTL};

/// Most the VMM's RSS may grow while the guest floods a host side that never reads.
const MAX_RSS_GROWTH_KIB: u64 = 16 * 1024;

#[test]
fn vsock_connects_zone_and_host_both_ways_with_bounded_buffering() {
    let run = testhost::run(&format!(
        r#"
P={VSOCK_PROBE}
U=/tmp/vsock/v.sock
mkdir -p /tmp/vsock
echo "probe=$(test -x $P && echo yes || echo no)"
echo "image=$(test -f {VSOCK_IMAGE} && echo yes || echo no)"
$P uds-echo ${{U}}_1100 > /tmp/echo.log 2>&1 &
ECHO=$!
{ZONECTL} run --kernel {KERNEL} --initrd {VSOCK_IMAGE} --memory 128 --timeout 300 \
    --vsock-uds $U --vsock-cid 3 --cmdline "console=ttyS0 reboot=k panic=-1 quiet" \
    -- /bin/sh -c '/bin/vsock-probe connect 1100 ping-from-guest; /bin/vsock-probe connect 1101 nobody-home; /bin/vsock-probe listen 5000 1; /bin/vsock-probe flood 1102 64 5' \
    > /tmp/zone.out 2>&1 &
ZPID=$!
$P uds-hold ${{U}}_1102 $ZPID 240 > /tmp/hold.out 2>&1 &
HOLD=$!
$P uds-connect $U 5000 hello-from-host 240 > /tmp/connect.out 2>&1
# A guest port nobody listens on: the host stream is closed without an OK.
$P uds-connect $U 5999 nobody 0 > /tmp/refused.out 2>&1
wait $ZPID
echo "zone_rc=$?"
wait $HOLD
kill $ECHO 2>/dev/null
echo "socket_removed=$(test -e $U && echo no || echo yes)"
sed -n 's/^VSOCK-PROBE //p' /tmp/zone.out
cat /tmp/hold.out /tmp/connect.out /tmp/refused.out
echo "--- zone output"
tail -n 40 /tmp/zone.out
"#
    ));
    let v = |k: &str| {
        run.value(k)
            .unwrap_or_else(|| panic!("no {k} in the test host's output:\n{}\n{}", run.output, run.diagnostics))
            .to_owned()
    };
    let n = |k: &str| v(k).parse::<u64>().unwrap_or_else(|e| panic!("{k}: {e}\n{}", run.output));
    assert_eq!(
        v("probe"),
        "yes",
        "the payload lacks vsock-probe: run scripts/build.sh and scripts/testhost/payload.sh"
    );
    assert_eq!(v("image"), "yes", "the payload lacks the vsock-test image: run scripts/testhost/payload.sh");
    assert_eq!(v("zone_rc"), "0", "{}", run.output);

    // Guest → host: echo round trip through U_1100.
    assert_eq!(v("connect_1100_reply"), "ping-from-guest", "{}", run.output);
    // Guest → host port nobody listens on: reset.
    let refused = v("connect_1101_error");
    assert!(refused == "ECONNRESET" || refused == "ECONNREFUSED", "connect to an unused host port gave {refused}");

    // Host → guest: CONNECT 5000 on U, OK <port>, echo.
    let ok = v("host_connect_5000_ok");
    assert!(ok.starts_with("OK ") && ok[3..].parse::<u32>().is_ok(), "unexpected answer to CONNECT: {ok:?}");
    assert_eq!(v("host_connect_5000_reply"), "hello-from-host");
    assert_eq!(v("listen_5000_echoed"), "16");
    // Host → guest port nobody listens on: closed without OK.
    assert_eq!(v("host_connect_5999_error"), "closed without OK");

    // A guest that sends far more than the host reads is throttled by its
    // credit, and the VMM does not buffer it.
    assert_eq!(v("flood_started"), "1");
    assert_eq!(v("flood_stalled"), "1", "the guest's send never stalled: nothing throttled it\n{}", run.output);
    let sent = n("flood_sent");
    assert!(sent < 8 << 20, "the guest got {sent} bytes accepted by a host side that never reads");
    let (start, max) = (n("hold_rss_start_kib"), n("hold_rss_max_kib"));
    eprintln!(
        "vsock flood: guest wrote {sent} bytes before stalling; host socket holds {} unread; VMM VmRSS {start} -> max {max} KiB (VmHWM {} KiB)",
        v("hold_unread_bytes"),
        v("hold_vm_hwm_kib")
    );
    assert!(start > 0, "could not sample the VMM's RSS");
    assert!(
        max.saturating_sub(start) < MAX_RSS_GROWTH_KIB,
        "the VMM's RSS grew from {start} to {max} KiB while the guest flooded a host that never reads"
    );
    assert_eq!(v("socket_removed"), "yes", "the VMM must remove its vsock socket when the zone ends");
}
