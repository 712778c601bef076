//! Zone networking in the test host (real KVM, the zone kernel's virtio_net
//! driver, our VMM's virtio-net on a TAP the daemon created): a zone serves
//! TCP that the test host reaches over the zone's routed /31, another zone
//! reaches a server on the test host through its gateway (both ends
//! `vsock-probe tcp-serve` / `tcp-get`), the
//! addresses come from the daemon's pool lowest-first, are in the measured
//! launch record and `zonectl inspect`, and are released (and the TAP gone)
//! when the zone is destroyed; a zone cannot reach another zone, and what it
//! sends from another zone's address is dropped; what it sends is held to
//! `[network.limits]`; a published host port reaches the zone, and one already
//! in use is refused; a full pool and a daemon
//! without a zone network are refused with errors that say so.

use zone_tests::testhost::{self, SHELL_IMAGE, VSOCK_IMAGE, VSOCK_PROBE, daemon_prelude_with};

#[test]
fn zones_reach_the_host_and_are_reached_over_their_own_links() {
    // Two links: 10.213.0.0/31 and 10.213.0.2/31; each zone may send 8 Mbit/s (1 MB/s).
    let setup = daemon_prelude_with(
        "[network]\npool = \"10.213.0.0/30\"\nnameservers = [\"10.213.0.0\"]\n[network.limits]\ntx_mbit = 8\n",
    );
    let run = testhost::run(&format!(
        r#"{setup}
P={VSOCK_PROBE}
# A server on the test host, on every address (the gateways appear with the TAPs).
$P tcp-serve 9000 from-the-host > /dev/null 2>&1 &
# The server zone: answers on 8080, until destroyed.
zonectl launch web --net --publish 8081:8080 --initrd {VSOCK_IMAGE} --wait-timeout 300 -- /bin/busybox sh -c 'b=/bin/busybox; echo mac=$($b cat /sys/class/net/eth0/address); echo resolv=$($b cat /etc/resolv.conf); exec /bin/vsock-probe tcp-serve 8080 from-the-zone' > /tmp/web.out 2>&1
echo "web_rc=$?"
cat /tmp/web.out | sed 's/^/web launch: /'
addr=$(field web address); echo "web_address=$addr"
echo "web_tap=$(field web tap)"
echo "web_mac=$(field web mac)"
ip=${{addr%/*}}
echo "fetched_from_zone=$(timeout -s KILL 120 $P tcp-get $ip:8080 | sed -n 's/^VSOCK-PROBE tcp_got=//p')"
# The published port: the test host's 8081 reaches the zone's 8080.
echo "fetched_published=$(timeout -s KILL 120 $P tcp-get 127.0.0.1:8081 | sed -n 's/^VSOCK-PROBE tcp_got=//p')"
echo "publish_measured=$(zonectl inspect web -o json | grep -c 'publish=0.0.0.0:8081->8080')"
# A second zone asking for the same host port is refused, naming it, and nothing of it is left.
zonectl launch clash --publish 8081:80 --initrd {SHELL_IMAGE} -- /bin/busybox true > /tmp/clash.out 2>&1
echo "clash_rc=$?"
echo "clash_says_port=$(grep -q 'host port 0.0.0.0:8081' /tmp/clash.out && echo 1 || echo 0)"
echo "clash_exists=$(zonectl inspect clash > /dev/null 2>&1 && echo yes || echo no)"
echo "clash_tap=$(test -e /sys/class/net/zn1 && echo present || echo gone)"
echo "measured=$(zonectl inspect web -o json | grep -c 'virtio-net:mac=02:5a:0a:d5:00:01:ip=10.213.0.1/31:gw=10.213.0.0')"
echo "cmdline_has_net=$(zonectl inspect web -o json | grep -c 'zone.net=10.213.0.1/31,10.213.0.0,10.213.0.0')"
zonectl logs web > /tmp/web.log 2>&1
echo "web_guest_mac=$(grep '^mac=' /tmp/web.log | head -n 1 | cut -d= -f2)"
echo "web_resolv=$(grep '^resolv=' /tmp/web.log | head -n 1 | cut -d= -f2)"

# The kernel's count of packets its reverse-path filter dropped.
rpf() {{ awk '/^TcpExt:/ {{ if (!h) {{ for (i = 1; i <= NF; i++) if ($i == "IPReversePathFilter") c = i; h = 1 }} else print $c }}' /proc/net/netstat; }}
echo "rpf_before=$(rpf)"
timeout -s KILL 240 $P tcp-sink 5001 1 > /tmp/sink.out 2>&1 &
SINK=$!
# The client zone: the next link; fetches the host's file through its gateway,
# pings it, pings the other zone, then pings its gateway from the other zone's address.
zonectl launch client --net --initrd {VSOCK_IMAGE} --wait-timeout 300 -- /bin/busybox sh -c 'b=/bin/busybox; set -- $($b ip route show default); echo gw=$3; echo fetched=$(/bin/vsock-probe tcp-get $3:9000); $b ping -c 1 -W 3 $3 > /dev/null 2>&1; echo ping_gw=$?; $b ping -c 1 -W 3 10.213.0.1 > /dev/null 2>&1; echo ping_other_zone=$?; $b ip addr add 10.213.0.1/32 dev eth0; $b ping -c 2 -W 3 -I 10.213.0.1 $3 > /dev/null 2>&1; echo ping_spoofed=$?; $b ip addr del 10.213.0.1/32 dev eth0; /bin/vsock-probe tcp-send $3:5001 3' > /dev/null 2>&1
wait_state client stopped
echo "client_address=$(field client address)"
zonectl logs client > /tmp/client.log 2>&1
sed 's/^/client: /' /tmp/client.log
echo "client_gw=$(grep '^gw=' /tmp/client.log | head -n 1 | cut -d= -f2)"
echo "client_fetched=$(grep '^fetched=' /tmp/client.log | head -n 1 | sed 's/.*tcp_got=//')"
for k in ping_gw ping_other_zone ping_spoofed; do echo "$k=$(grep "^$k=" /tmp/client.log | head -n 1 | cut -d= -f2)"; done
echo "rpf_after=$(rpf)"
wait $SINK
sed -n 's/^VSOCK-PROBE //p' /tmp/sink.out

# The pool is full: a third zone is refused, and nothing of it is left.
zonectl launch third --net --initrd {SHELL_IMAGE} -- /bin/busybox true > /tmp/third.out 2>&1
echo "third_rc=$?"
echo "third_says_exhausted=$(grep -c 'exhausted' /tmp/third.out)"
echo "third_exists=$(zonectl inspect third > /dev/null 2>&1 && echo yes || echo no)"

# Destroying the server zone removes its TAP and frees its link for the next zone.
zonectl destroy web > /dev/null 2>&1
for i in $(seq 50); do [ -e /sys/class/net/zn0 ] || break; sleep 0.2; done
echo "tap_after_destroy=$(test -e /sys/class/net/zn0 && echo present || echo gone)"
zonectl launch again --net --initrd {SHELL_IMAGE} -- /bin/busybox true > /dev/null 2>&1
wait_state again stopped
echo "again_address=$(field again address)"

# A zone stopped keeps its link until destroyed; a daemon restart keeps it too.
kill $(cat /tmp/daemon.pid); sleep 1; start_daemon
echo "client_address_after_restart=$(field client address)"
"#
    ));
    let v = |k: &str| run.value(k).unwrap_or_else(|| panic!("no {k}:\n{}\n{}", run.output, run.diagnostics)).to_owned();
    assert_eq!(v("web_rc"), "0", "{}", run.output);
    assert_eq!(v("web_address"), "10.213.0.1/31", "the first link's zone side");
    assert_eq!(v("web_tap"), "zn0");
    assert_eq!(v("web_mac"), "02:5a:0a:d5:00:01");
    assert_eq!(v("web_guest_mac"), v("web_mac"), "the guest's eth0 has the MAC the daemon assigned\n{}", run.output);
    assert_eq!(v("web_resolv"), "nameserver 10.213.0.0", "{}", run.output);
    assert_eq!(v("fetched_from_zone"), "from-the-zone", "the test host reached the zone's server\n{}\n{}", run.output, run.diagnostics);
    assert_eq!(v("fetched_published"), "from-the-zone", "a published port reaches the zone\n{}", run.output);
    assert_eq!(v("publish_measured"), "1", "the published port is in the launch record\n{}", run.output);
    assert_ne!(v("clash_rc"), "0");
    assert_eq!(v("clash_says_port"), "1", "{}", run.output);
    assert_eq!(v("clash_exists"), "no");
    assert_eq!(v("clash_tap"), "gone", "a refused launch leaves no TAP behind");
    assert_eq!(v("measured"), "1", "the launch record names the interface and its addresses\n{}", run.output);
    assert_eq!(v("cmdline_has_net"), "1", "{}", run.output);
    assert_eq!(v("client_address"), "10.213.0.3/31", "the second link");
    assert_eq!(v("client_gw"), "10.213.0.2", "{}", run.output);
    assert_eq!(v("client_fetched"), "from-the-host", "the zone reached the host's server\n{}", run.output);
    assert_eq!(v("ping_gw"), "0", "the zone reaches its gateway\n{}", run.output);
    assert_ne!(v("ping_other_zone"), "0", "zones do not reach each other: the host does not forward between links");
    assert_ne!(v("ping_spoofed"), "0", "a zone sending from another zone's address gets no answer");
    let n = |k: &str| v(k).parse::<u64>().unwrap_or_else(|e| panic!("{k}: {e}\n{}", run.output));
    let rpf = n;
    // 3 MiB at 1 MB/s (a 100 kB burst): over 3 s; 2 s leaves room for timer slack.
    assert_eq!(n("tcp_bytes"), 3 << 20, "{}", run.output);
    assert!(n("tcp_ms") >= 2000, "a zone limited to 8 Mbit/s sent 3 MiB in {} ms\n{}", n("tcp_ms"), run.output);
    assert!(rpf("rpf_after") >= rpf("rpf_before") + 2, "the spoofed pings were dropped by the reverse-path filter\n{}", run.output);
    assert_ne!(v("third_rc"), "0");
    assert_eq!(v("third_says_exhausted"), "1", "{}", run.output);
    assert_eq!(v("third_exists"), "no");
    assert_eq!(v("tap_after_destroy"), "gone", "no host configuration outlives its zone");
    assert_eq!(v("again_address"), "10.213.0.1/31", "the destroyed zone's link was released");
    assert_eq!(v("client_address_after_restart"), "10.213.0.3/31", "assignments survive a daemon restart");
}

#[test]
fn a_daemon_without_a_zone_network_refuses_net_and_says_how_to_add_one() {
    let run = testhost::run(&format!(
        r#"{setup}
zonectl launch lonely --net --initrd {SHELL_IMAGE} -- /bin/busybox true > /tmp/out 2>&1
echo "rc=$?"
echo "says=$(grep -c '\[network\]' /tmp/out)"
echo "exists=$(zonectl inspect lonely > /dev/null 2>&1 && echo yes || echo no)"
cat /tmp/out
"#,
        setup = testhost::daemon_prelude()
    ));
    let v = |k: &str| run.value(k).unwrap_or_else(|| panic!("no {k}:\n{}\n{}", run.output, run.diagnostics)).to_owned();
    assert_ne!(v("rc"), "0");
    assert_eq!(v("says"), "1", "{}", run.output);
    assert_eq!(v("exists"), "no");
}
