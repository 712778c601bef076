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
//!
//! The policy (the daemon's nftables table): a zone reaches only the host
//! ports `[network] host_ports` lists; what it sends from another address is
//! dropped and counted; with `nat` it reaches a server in an outside network
//! namespace (which has no route back to the pool) from the uplink's address;
//! zone to zone works only for the pair and port `[[network.allow]]` names,
//! in that direction; the launch records say so. A daemon whose `nat`
//! interface does not exist, or whose pool holds a host address, does not
//! start and says why.
//! Without `/dev/net/tun` a `--net` launch fails naming it and leaves no
//! zone, TAP or assigned link behind. A zone flooding UDP is held to its
//! rate and another zone's round trips go on (in a one-vCPU test host;
//! ignored: an open bug, see the test).

use zone_tests::testhost::{self, SHELL_IMAGE, VSOCK_IMAGE, VSOCK_PROBE, daemon_prelude_with};

#[test]
fn zones_reach_the_host_and_are_reached_over_their_own_links() {
    // Two links: 10.213.0.0/31 and 10.213.0.2/31; each zone may send 8 Mbit/s (1 MB/s).
    let setup = daemon_prelude_with(
        "[network]\npool = \"10.213.0.0/30\"\nnameservers = [\"10.213.0.0\"]\nhost_ports = [\"tcp/9000\", \"tcp/5001\"]\n[network.limits]\ntx_mbit = 8\n",
    );
    let run = testhost::run(&format!(
        r#"{setup}
P={VSOCK_PROBE}
# Servers on the test host, on every address (the gateways appear with the
# TAPs): 9000 is a host port zones may reach, 9001 is not.
$P tcp-serve 9000 from-the-host > /dev/null 2>&1 &
$P tcp-serve 9001 not-for-zones > /dev/null 2>&1 &
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

# The daemon's counts of what its policy refused.
counter() {{ nft list counter inet zone_attestor $1 | sed -n 's/.*packets \([0-9]*\).*/\1/p'; }}
echo "spoofed_before=$(counter spoofed)"
echo "to_host_before=$(counter to_host_refused)"
timeout -s KILL 240 $P tcp-sink 5001 1 > /tmp/sink.out 2>&1 &
SINK=$!
# The client zone: the next link; fetches the host's file through its gateway,
# pings it, pings the other zone, then pings its gateway from the other zone's address.
zonectl launch client --net --initrd {VSOCK_IMAGE} --wait-timeout 300 -- /bin/busybox sh -c 'b=/bin/busybox; set -- $($b ip route show default); echo gw=$3; echo fetched=$(/bin/vsock-probe tcp-get $3:9000); $b ping -c 1 -W 3 $3 > /dev/null 2>&1; echo ping_gw=$?; /bin/vsock-probe tcp-try $3:9001; $b ping -c 1 -W 3 10.213.0.1 > /dev/null 2>&1; echo ping_other_zone=$?; $b ip addr add 10.213.0.1/32 dev eth0; $b ping -c 2 -W 3 -I 10.213.0.1 $3 > /dev/null 2>&1; echo ping_spoofed=$?; $b ip addr del 10.213.0.1/32 dev eth0; /bin/vsock-probe tcp-send $3:5001 3' > /dev/null 2>&1
wait_state client stopped
echo "client_address=$(field client address)"
zonectl logs client > /tmp/client.log 2>&1
sed 's/^/client: /' /tmp/client.log
echo "client_gw=$(grep '^gw=' /tmp/client.log | head -n 1 | cut -d= -f2)"
echo "client_fetched=$(grep '^fetched=' /tmp/client.log | head -n 1 | sed 's/.*tcp_got=//')"
for k in ping_gw ping_other_zone ping_spoofed; do echo "$k=$(grep "^$k=" /tmp/client.log | head -n 1 | cut -d= -f2)"; done
echo "client_unlisted_port=$(grep -c '^VSOCK-PROBE tcp_refused=1' /tmp/client.log)"
echo "spoofed_after=$(counter spoofed)"
echo "to_host_after=$(counter to_host_refused)"
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
    // 3 MiB at 1 MB/s (a 100 kB burst): over 3 s; 2 s leaves room for timer slack.
    assert_eq!(n("tcp_bytes"), 3 << 20, "{}", run.output);
    assert!(n("tcp_ms") >= 2000, "a zone limited to 8 Mbit/s sent 3 MiB in {} ms\n{}", n("tcp_ms"), run.output);
    assert!(n("spoofed_after") >= n("spoofed_before") + 2, "the spoofed pings were dropped and counted\n{}", run.output);
    assert_eq!(v("client_unlisted_port"), "1", "a host port not in host_ports is refused to zones\n{}", run.output);
    assert!(n("to_host_after") > n("to_host_before"), "the refusal was counted\n{}", run.output);
    assert_ne!(v("third_rc"), "0");
    assert_eq!(v("third_says_exhausted"), "1", "{}", run.output);
    assert_eq!(v("third_exists"), "no");
    assert_eq!(v("tap_after_destroy"), "gone", "no host configuration outlives its zone");
    assert_eq!(v("again_address"), "10.213.0.1/31", "the destroyed zone's link was released");
    assert_eq!(v("client_address_after_restart"), "10.213.0.3/31", "assignments survive a daemon restart");
}

/// Dual stack: with `pool6`, each link also gets a /127 of the IPv6 pool;
/// the test host reaches a zone's server over IPv6, a zone reaches the
/// host's listed port over IPv6 and is refused an unlisted one, zones do not
/// reach each other, what a zone sends from another zone's IPv6 address is
/// dropped and counted, the IPv6 link is measured (launch record, command
/// line, `zonectl inspect`) and released on destroy, and survives a daemon
/// restart.
#[test]
fn with_an_ipv6_pool_zones_are_dual_stack_and_held_to_their_own_ipv6_address() {
    let setup = daemon_prelude_with(
        "[network]\npool = \"10.213.0.0/30\"\npool6 = \"fd5a:0:0:1::/126\"\nhost_ports = [\"tcp/9000\"]\n",
    );
    let run = testhost::run(&format!(
        r#"{setup}
P={VSOCK_PROBE}
$P tcp-serve 9000 from-the-host > /dev/null 2>&1 &
$P tcp-serve 9001 not-for-zones > /dev/null 2>&1 &
counter() {{ nft list counter inet zone_attestor $1 | sed -n 's/.*packets \([0-9]*\).*/\1/p'; }}
zonectl launch web --net --initrd {VSOCK_IMAGE} --wait-timeout 300 -- /bin/vsock-probe tcp-serve 8080 from-the-zone > /tmp/web.out 2>&1
echo "web_rc=$?"
sed 's/^/web launch: /' /tmp/web.out
echo "web_address6=$(field web address6)"
echo "web_gateway6=$(field web gateway6)"
echo "web_tap_addr6=$(/usr/sbin/ip -6 addr show dev zn0 scope global | sed -n 's/.*inet6 \([^ ]*\).*/\1/p')"
echo "fetched6=$(timeout -s KILL 120 $P tcp-get [fd5a:0:0:1::1]:8080 | sed -n 's/^VSOCK-PROBE tcp_got=//p')"
echo "fetched4=$(timeout -s KILL 120 $P tcp-get 10.213.0.1:8080 | sed -n 's/^VSOCK-PROBE tcp_got=//p')"
zonectl inspect web -o json > /tmp/web.json
echo "measured6=$(grep -c 'virtio-net:mac=02:5a:0a:d5:00:01:ip=10.213.0.1/31:gw=10.213.0.0:ip6=\[fd5a:0:0:1::1\]/127:gw6=\[fd5a:0:0:1::\]:mtu=1500' /tmp/web.json)"
echo "cmdline6=$(grep -c 'zone.net=10.213.0.1/31,10.213.0.0,fd5a:0:0:1::1/127,fd5a:0:0:1::' /tmp/web.json)"
echo "spoofed_before=$(counter spoofed)"
echo "to_host_before=$(counter to_host_refused)"
# The client zone (link 1: fd5a:0:0:1::3, gateway ::2): the host's listed
# port, an unlisted one, a ping to its gateway, one to the other zone, then
# pings from the other zone's address.
zonectl launch client --net --initrd {VSOCK_IMAGE} --wait-timeout 300 -- /bin/busybox sh -c 'b=/bin/busybox; gw=fd5a:0:0:1::2; echo fetched=$(/bin/vsock-probe tcp-get [$gw]:9000); echo unlisted; /bin/vsock-probe tcp-try [$gw]:9001; $b ping6 -c 1 -W 3 $gw > /dev/null 2>&1; echo ping_gw=$?; $b ping6 -c 1 -W 3 fd5a:0:0:1::1 > /dev/null 2>&1; echo ping_other_zone=$?; $b ip addr add fd5a:0:0:1::1/128 dev eth0; $b ping6 -c 2 -W 3 -I fd5a:0:0:1::1 $gw > /dev/null 2>&1; echo ping_spoofed=$?' > /dev/null 2>&1
wait_state client stopped
zonectl logs client > /tmp/client.log 2>&1
sed 's/^/client: /' /tmp/client.log
echo "client_address6=$(field client address6)"
echo "client_fetched=$(grep '^fetched=' /tmp/client.log | head -n 1 | sed 's/.*tcp_got=//')"
echo "client_unlisted=$(grep -A1 '^unlisted$' /tmp/client.log | sed -n 's/^VSOCK-PROBE //p' | head -n 1)"
for k in ping_gw ping_other_zone ping_spoofed; do echo "$k=$(grep "^$k=" /tmp/client.log | head -n 1 | cut -d= -f2)"; done
echo "spoofed_after=$(counter spoofed)"
echo "to_host_after=$(counter to_host_refused)"
# Destroyed: the IPv6 link goes with the rest, and the next zone gets it.
zonectl destroy web > /dev/null 2>&1
for i in $(seq 50); do [ -e /sys/class/net/zn0 ] || break; sleep 0.2; done
echo "tap_after_destroy=$(test -e /sys/class/net/zn0 && echo present || echo gone)"
zonectl launch again --net --initrd {SHELL_IMAGE} -- /bin/busybox true > /dev/null 2>&1
wait_state again stopped
echo "again_address6=$(field again address6)"
kill $(cat /tmp/daemon.pid); sleep 1; start_daemon
echo "client_address6_after_restart=$(field client address6)"
"#
    ));
    let v = |k: &str| run.value(k).unwrap_or_else(|| panic!("no {k}:\n{}\n{}", run.output, run.diagnostics)).to_owned();
    assert_eq!(v("web_rc"), "0", "{}", run.output);
    assert_eq!(v("web_address6"), "fd5a:0:0:1::1/127", "link 0's zone side\n{}", run.output);
    assert_eq!(v("web_gateway6"), "fd5a:0:0:1::", "{}", run.output);
    assert_eq!(v("web_tap_addr6"), "fd5a:0:0:1::/127", "the host side of the link is on the TAP\n{}", run.output);
    assert_eq!(v("fetched6"), "from-the-zone", "the test host reached the zone over IPv6\n{}\n{}", run.output, run.diagnostics);
    assert_eq!(v("fetched4"), "from-the-zone", "and over IPv4\n{}", run.output);
    assert_eq!(v("measured6"), "1", "the launch record names the IPv6 link\n{}", run.output);
    assert_eq!(v("cmdline6"), "1", "the measured command line carries it\n{}", run.output);
    assert_eq!(v("client_address6"), "fd5a:0:0:1::3/127", "{}", run.output);
    assert_eq!(v("client_fetched"), "from-the-host", "the zone reached the host's listed port over IPv6\n{}", run.output);
    assert_eq!(v("client_unlisted"), "tcp_refused=1", "an unlisted host port is refused over IPv6 too\n{}", run.output);
    assert_eq!(v("ping_gw"), "0", "the zone pings its IPv6 gateway\n{}", run.output);
    assert_ne!(v("ping_other_zone"), "0", "zones do not reach each other over IPv6\n{}", run.output);
    assert_ne!(v("ping_spoofed"), "0", "pings from another zone's IPv6 address get no answer\n{}", run.output);
    let n = |k: &str| v(k).parse::<u64>().unwrap_or_else(|e| panic!("{k}: {e}\n{}", run.output));
    assert!(n("spoofed_after") >= n("spoofed_before") + 2, "the spoofed IPv6 pings were dropped and counted\n{}", run.output);
    assert!(n("to_host_after") > n("to_host_before"), "the refusal was counted\n{}", run.output);
    assert_eq!(v("tap_after_destroy"), "gone", "{}", run.output);
    assert_eq!(v("again_address6"), "fd5a:0:0:1::1/127", "the destroyed zone's IPv6 link was released\n{}", run.output);
    assert_eq!(v("client_address6_after_restart"), "fd5a:0:0:1::3/127", "the IPv6 link survives a daemon restart\n{}", run.output);
}

#[test]
fn nat_reaches_an_outside_network_and_only_allowed_zone_pairs_connect() {
    // Four links; NAT out through up0; app may connect to db's 7000 only.
    let setup = daemon_prelude_with(
        "[network]\npool = \"10.213.0.0/29\"\nnat = \"up0\"\n[[network.allow]]\nfrom = \"app\"\nto = \"db\"\nports = [\"tcp/7000\"]\n",
    );
    let run = testhost::run(&format!(
        r#"
IP=/usr/sbin/ip
P={VSOCK_PROBE}
# The outside: a network namespace behind a veth pair, with no route to the pool.
$IP netns add outside
$IP link add up0 type veth peer name out0 netns outside
$IP addr add 192.168.77.1/24 dev up0
$IP link set up0 up
$IP -n outside addr add 192.168.77.2/24 dev out0
$IP -n outside link set out0 up
$IP -n outside link set lo up
$IP netns exec outside $P tcp-serve 9100 @peer > /dev/null 2>&1 &
echo "outside_routes=$($IP -n outside route show | grep -c 10.213)"
{setup}
counter() {{ nft list counter inet zone_attestor $1 | sed -n 's/.*packets \([0-9]*\).*/\1/p'; }}
# db serves 7000 (app may connect) and 7001 (it may not).
zonectl launch db --net --initrd {VSOCK_IMAGE} --wait-timeout 300 -- /bin/busybox sh -c '/bin/vsock-probe tcp-serve 7001 db-other & exec /bin/vsock-probe tcp-serve 7000 from-db' > /tmp/db.out 2>&1
echo "db_rc=$?"
cat /tmp/db.out | sed 's/^/db launch: /'
db=$(field db address); db=${{db%/*}}
echo "db_address=$db"
# Both db servers answer the host (the host is not a zone).
echo "host_db_7000=$(timeout -s KILL 120 $P tcp-get $db:7000 | sed -n 's/^VSOCK-PROBE tcp_got=//p')"
echo "host_db_7001=$(timeout -s KILL 120 $P tcp-get $db:7001 | sed -n 's/^VSOCK-PROBE tcp_got=//p')"
echo "forward_before=$(counter forward_refused)"
zonectl launch app --net --initrd {VSOCK_IMAGE} --wait-timeout 300 -- /bin/busybox sh -c "echo outside; /bin/vsock-probe tcp-try 192.168.77.2:9100; echo db7000; /bin/vsock-probe tcp-try $db:7000; echo db7001; /bin/vsock-probe tcp-try $db:7001" > /tmp/app.out 2>&1
echo "app_rc=$?"
wait_state app stopped
zonectl logs app > /tmp/app.log 2>&1
sed 's/^/app: /' /tmp/app.log
after() {{ grep -A1 "^$1\$" /tmp/app.log | sed -n 's/^VSOCK-PROBE //p' | head -n 1; }}
echo "app_outside=$(after outside)"
echo "app_db7000=$(after db7000)"
echo "app_db7001=$(after db7001)"
# A zone the policy does not name reaches the outside, but not db.
zonectl launch lone --net --initrd {VSOCK_IMAGE} --wait-timeout 300 -- /bin/busybox sh -c "echo db7000; /bin/vsock-probe tcp-try $db:7000" > /dev/null 2>&1
wait_state lone stopped
zonectl logs lone > /tmp/lone.log 2>&1
echo "lone_db7000=$(grep -A1 '^db7000$' /tmp/lone.log | sed -n 's/^VSOCK-PROBE //p' | head -n 1)"
echo "forward_after=$(counter forward_refused)"
# The policy each zone was launched with is in its launch record.
echo "app_measured=$(zonectl inspect app -o json | grep -c ':nat=up0:to=db(tcp/7000)')"
echo "db_measured=$(zonectl inspect db -o json | grep -c ':nat=up0:from=app(tcp/7000)')"
echo "lone_measured=$(zonectl inspect lone -o json | grep 'virtio-net' | grep -c ':mtu=1500:nat=up0"')"
"#
    ));
    let v = |k: &str| run.value(k).unwrap_or_else(|| panic!("no {k}:\n{}\n{}", run.output, run.diagnostics)).to_owned();
    assert_eq!(v("outside_routes"), "0", "the outside has no route to the pool: only NAT brings replies back");
    assert_eq!(v("db_rc"), "0", "{}", run.output);
    assert_eq!(v("host_db_7000"), "from-db", "{}", run.output);
    assert_eq!(v("host_db_7001"), "db-other", "db serves 7001 too\n{}", run.output);
    assert_eq!(v("app_rc"), "0", "{}", run.output);
    assert_eq!(v("app_outside"), "tcp_got=192.168.77.1", "the zone reached the outside, from the uplink's address\n{}", run.output);
    assert_eq!(v("app_db7000"), "tcp_got=from-db", "the allowed pair and port connect\n{}", run.output);
    assert_eq!(v("app_db7001"), "tcp_refused=1", "a port the pair does not name is refused\n{}", run.output);
    assert_eq!(v("lone_db7000"), "tcp_refused=1", "a zone the policy does not name cannot reach db\n{}", run.output);
    let n = |k: &str| v(k).parse::<u64>().unwrap_or_else(|e| panic!("{k}: {e}\n{}", run.output));
    assert!(n("forward_after") >= n("forward_before") + 2, "both refusals were counted\n{}", run.output);
    assert_eq!(v("app_measured"), "1", "{}", run.output);
    assert_eq!(v("db_measured"), "1", "{}", run.output);
    assert_eq!(v("lone_measured"), "1", "{}", run.output);
}

/// A zone flooding UDP as fast as it can is held to its `[network.limits]`
/// rate (what the host receives from its TAP), and another zone's TCP round
/// trips to the host go on meanwhile, within a bound of their latency before
/// the flood (both measured in the same run). With one test-host vCPU: with
/// two, QEMU TCG's emulated nested SVM crashes the test host's own kernel
/// under this load in about half the runs, with QEMU microvm alone too
/// (`scripts/testhost/nested-crash.sh`; README, "Why one test-host vCPU").
#[test]
#[ignore = "open bug in the test host: under the flood a one-vCPU test host sometimes livelocks in its emulated nested SVM (about 1 in 8 attempts; as it does with QEMU microvm guests alone, scripts/testhost/nested-crash.sh); with two vCPUs its own kernel crashes; run it with --ignored"]
fn a_flooding_zone_is_held_to_its_rate_and_another_zones_round_trips_go_on() {
    // Two links; each zone may send 2 Mbit/s (250 kB/s): less than a zone
    // can send even in a one-vCPU test host (~400 kB/s), so the flood meets the limit.
    let setup = daemon_prelude_with("[network]\npool = \"10.213.0.0/30\"\nhost_ports = [\"tcp/5002\"]\n[network.limits]\ntx_mbit = 2\n");
    let run = testhost::run_with(&format!(
        r#"{setup}
P={VSOCK_PROBE}
$P tcp-echo 5002 > /dev/null 2>&1 &
# centiseconds since boot
now() {{ cut -d' ' -f1 /proc/uptime | tr -d .; }}
# The calm zone: rounds of 200 one-byte round trips to the host, until destroyed.
zonectl launch calm --net --initrd {VSOCK_IMAGE} --wait-timeout 300 -- /bin/busybox sh -c 'while true; do /bin/vsock-probe tcp-rr 10.213.0.0:5002 200; done' > /tmp/calm.out 2>&1 || cat /tmp/calm.out
rr() {{ zonectl logs calm 2>/dev/null | sed -n 's/^VSOCK-PROBE tcp_rr_us_p50=//p'; }}
# wait_rr N: until the calm zone has finished N rounds (5 minutes at most).
wait_rr() {{
  for i in $(seq 600); do [ "$(rr | wc -l)" -ge "$1" ] && return 0; sleep 0.5; done
  echo "wait_rr: the calm zone finished $(rr | wc -l) rounds in 5 minutes, not $1"; zonectl logs calm | tail -n 5
}}
wait_rr 3
echo "solo=$(rr | head -n 3 | tr '\n' ' ')"
# The flooding zone: 1400-byte datagrams to a host port no one may reach, for 60 s.
zonectl launch flood --net --initrd {VSOCK_IMAGE} --wait-timeout 300 -- /bin/vsock-probe udp-flood 10.213.0.2:9999 60 > /tmp/flood.out 2>&1 || cat /tmp/flood.out
for i in $(seq 200); do zonectl logs flood 2>/dev/null | grep -q 'udp_flood=started' && break; sleep 0.1; done
before=$(rr | wc -l)
rx0=$(cat /sys/class/net/zn1/statistics/rx_bytes); t0=$(now)
# Four rounds during the flood (the first may have begun before it), and at least 10 s.
wait_rr $((before + 4))
while [ $(( $(now) - t0 )) -lt 1000 ]; do sleep 0.2; done
rx1=$(cat /sys/class/net/zn1/statistics/rx_bytes); t1=$(now)
echo "during=$(rr | sed -n "$((before + 2)),$((before + 4))p" | tr '\n' ' ')"
echo "flood_still_running=$(zonectl logs flood 2>/dev/null | grep -c udp_sent)"
echo "flood_host_bytes=$((rx1 - rx0))"
echo "flood_window_ms=$(( (t1 - t0) * 10 ))"
echo "calm_errors=$(zonectl logs calm 2>/dev/null | grep -c tcp_rr_error)"
wait_state flood stopped
echo "udp_sent=$(zonectl logs flood | sed -n 's/^VSOCK-PROBE udp_sent=//p')"
"#
    ), &[("TESTHOST_SMP", "1")], false);
    let v = |k: &str| run.value(k).unwrap_or_else(|| panic!("no {k}:\n{}\n{}", run.output, run.diagnostics)).to_owned();
    let n = |k: &str| v(k).parse::<u64>().unwrap_or_else(|e| panic!("{k}={}: {e}\n{}", v(k), run.output));
    let median = |k: &str| {
        let mut xs: Vec<u64> = v(k).split_whitespace().map(|x| x.parse().unwrap_or_else(|e| panic!("{k}: {e}\n{}", run.output))).collect();
        assert_eq!(xs.len(), 3, "three rounds for {k}:\n{}", run.output);
        xs.sort_unstable();
        xs[1]
    };
    assert_eq!(n("flood_still_running"), 0, "the window must lie inside the flood:\n{}", run.output);
    let rate = n("flood_host_bytes") * 1000 / n("flood_window_ms").max(1);
    let offered = n("udp_sent") * 1400 / 60;
    println!("flood: offered {offered} B/s, reached the host {rate} B/s; calm p50 solo {} us, during {} us", median("solo"), median("during"));
    // 2 Mbit/s is 250,000 B/s of frames; a 100 ms burst on top, and some slack.
    assert!(rate <= 300_000, "the flooding zone reached the host at {rate} B/s, over its 2 Mbit/s:\n{}", run.output);
    // The zone sends as fast as its socket lets it: held to the bucket, it
    // sends at the limit (the guest's queue pushes back on its sends).
    assert!(rate >= 175_000, "the flooding zone sent only {rate} B/s (offered {offered} B/s): it did not use its 2 Mbit/s\n{}", run.output);
    assert_eq!(n("calm_errors"), 0, "the calm zone lost a connection during the flood:\n{}", run.output);
    let (solo, during) = (median("solo"), median("during"));
    assert!(
        during <= (solo * 4).max(solo + 5_000),
        "the calm zone's round trips went from {solo} us to {during} us during the flood:\n{}",
        run.output
    );
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
kill $(cat /tmp/daemon.pid); sleep 1
# A nat interface that does not exist, or a pool that holds a host address
# (the loopback's): the daemon does not start, and says why.
# refused NAME NETWORK: a daemon with the [network] table NETWORK; NAME_rc and its output in /tmp/NAME.out.
refused() {{
  cp /etc/za/agent.toml /tmp/$1.toml
  echo "$2" >> /tmp/$1.toml
  timeout -s KILL 60 hypervisor-agent daemon --config /tmp/$1.toml > /tmp/$1.out 2>&1
  echo "$1_rc=$?"
  sed "s/^/$1 daemon: /" /tmp/$1.out
}}
refused nat '[network]
pool = "10.213.0.0/30"
nat = "nosuch0"'
echo "nat_says=$(grep -c 'nat = .nosuch0. an interface of this host' /tmp/nat.out)"
refused overlap '[network]
pool = "127.0.0.0/8"'
echo "overlap_says=$(grep -c 'holds 127.0.0.1, an address of the host.s interface lo' /tmp/overlap.out)"
# No TUN device: a launch with --net fails naming it, and leaves nothing:
# no zone, no TAP, its link free for the next zone.
printf '[network]\npool = "10.213.0.0/30"\n' >> /etc/za/agent.toml
start_daemon
mv /dev/net/tun /dev/net/tun.away
zonectl launch notun --net --initrd {SHELL_IMAGE} -- /bin/busybox true > /tmp/notun.out 2>&1
echo "notun_rc=$?"
sed 's/^/notun: /' /tmp/notun.out
echo "notun_says=$(grep -c '/dev/net/tun' /tmp/notun.out)"
echo "notun_exists=$(zonectl inspect notun > /dev/null 2>&1 && echo yes || echo no)"
echo "notun_tap=$(test -e /sys/class/net/zn0 && echo present || echo gone)"
mv /dev/net/tun.away /dev/net/tun
zonectl launch withtun --net --initrd {SHELL_IMAGE} -- /bin/busybox true > /dev/null 2>&1
wait_state withtun stopped
echo "withtun_address=$(field withtun address)"
"#,
        setup = testhost::daemon_prelude()
    ));
    let v = |k: &str| run.value(k).unwrap_or_else(|| panic!("no {k}:\n{}\n{}", run.output, run.diagnostics)).to_owned();
    assert_ne!(v("rc"), "0");
    assert_eq!(v("says"), "1", "{}", run.output);
    assert_eq!(v("exists"), "no");
    for k in ["nat", "overlap"] {
        assert_ne!(v(&format!("{k}_rc")), "0", "{}", run.output);
        assert_ne!(v(&format!("{k}_rc")), "137", "the daemon exited rather than hang\n{}", run.output);
        assert_eq!(v(&format!("{k}_says")), "1", "{}", run.output);
    }
    assert_ne!(v("notun_rc"), "0", "a launch without a TUN device failed\n{}", run.output);
    assert_ne!(v("notun_says"), "0", "the error names /dev/net/tun\n{}", run.output);
    assert_eq!(v("notun_exists"), "no", "{}", run.output);
    assert_eq!(v("notun_tap"), "gone", "{}", run.output);
    assert_eq!(v("withtun_address"), "10.213.0.1/31", "the failed launch released its link\n{}", run.output);
}
