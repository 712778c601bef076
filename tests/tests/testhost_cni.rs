//! CNI mode in the test host (`[cni]`): the real `bridge` and `host-local`
//! plugins of Debian's containernetworking-plugins give each zone's network
//! namespace its `eth0` on the bridge `cni0`; the daemon joins the zone's
//! TAP to it. A zone serves TCP that the test host reaches at the address
//! the plugins' IPAM gave it, and through a published port; another zone
//! reaches a server on the test host through the bridge's gateway; what a
//! zone sends from another address goes nowhere; the address, MAC and
//! network are in the measured launch record and `zonectl inspect`. When the
//! IPAM range is exhausted the launch fails naming the plugin's error and
//! leaves no namespace, veth or zone behind; a stopped zone's address is
//! released (DEL) and its namespace removed, also after a daemon restart.

use zone_tests::testhost::{self, SHELL_IMAGE, VSOCK_IMAGE, VSOCK_PROBE, daemon_prelude_with};

#[test]
fn cni_plugins_connect_zones_and_everything_is_released_with_them() {
    let setup = daemon_prelude_with("[cni]\nconflist = \"/etc/cni/net.d/10-zones.conflist\"\nnameservers = [\"10.88.0.1\"]\n");
    let run = testhost::run(&format!(
        r#"mkdir -p /etc/cni/net.d
# A /30: the gateway .1 and one address for zones, .2.
cat > /etc/cni/net.d/10-zones.conflist <<'EOF'
{{"cniVersion": "1.0.0", "name": "zones", "plugins": [
  {{"type": "bridge", "bridge": "cni0", "isGateway": true,
   "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "10.88.0.0/30"}}]], "dataDir": "/run/cni-ipam"}}}}]}}
EOF
{setup}
P={VSOCK_PROBE}
# iproute2's (busybox sh runs its own applet for a bare `ip`).
IP=/usr/sbin/ip
$P tcp-serve 9000 from-the-host > /dev/null 2>&1 &
zonectl launch web --net --publish 8081:8080 --initrd {VSOCK_IMAGE} --wait-timeout 300 -- /bin/busybox sh -c 'b=/bin/busybox; echo mac=$($b cat /sys/class/net/eth0/address); echo resolv=$($b cat /etc/resolv.conf); exec /bin/vsock-probe tcp-serve 8080 from-the-zone' > /tmp/web.out 2>&1
echo "web_rc=$?"
sed 's/^/web launch: /' /tmp/web.out
addr=$(field web address); echo "web_address=$addr"
echo "web_cni=$(field web cni_network)"
echo "web_netns=$(field web netns)"
echo "web_mac=$(field web mac)"
echo "ns_eth0_mac=$($IP -n za-web -o link show eth0 | sed 's/.*link\/ether \([^ ]*\).*/\1/')"
echo "ns_has_tap=$($IP -n za-web -o link show tap0 > /tmp/nstap 2>&1 && echo yes || echo no)"; sed "s/^/ns: /" /tmp/nstap; $IP -n za-web -o link | sed "s/^/ns link: /"
echo "lease_held=$(test -e /run/cni-ipam/zones/10.88.0.2 && echo yes || echo no)"
echo "fetched_from_zone=$(timeout -s KILL 120 $P tcp-get 10.88.0.2:8080 | sed -n 's/^VSOCK-PROBE tcp_got=//p')"
echo "fetched_published=$(timeout -s KILL 120 $P tcp-get 127.0.0.1:8081 | sed -n 's/^VSOCK-PROBE tcp_got=//p')"
zonectl inspect web -o json > /tmp/web.json
echo "measured=$(grep -c "virtio-net:cni=zones:mac=$(field web mac):ip=10.88.0.2/30:gw=10.88.0.1:mtu=1500:publish=0.0.0.0:8081->8080" /tmp/web.json)"
echo "cmdline_has_net=$(grep -c 'zone.net=10.88.0.2/30,10.88.0.1,10.88.0.1' /tmp/web.json)"
zonectl logs web > /tmp/web.log 2>&1
echo "web_guest_mac=$(grep '^mac=' /tmp/web.log | head -n 1 | cut -d= -f2)"
echo "web_resolv=$(grep '^resolv=' /tmp/web.log | head -n 1 | cut -d= -f2)"

# The range is exhausted: the launch fails with the plugin's error, and
# leaves no zone, namespace or veth behind.
zonectl launch extra --net --initrd {SHELL_IMAGE} -- /bin/busybox true > /tmp/extra.out 2>&1
echo "extra_rc=$?"
sed 's/^/extra: /' /tmp/extra.out
echo "extra_says=$(grep -c 'CNI plugin bridge (ADD) failed: .*no IP addresses available' /tmp/extra.out)"
echo "extra_exists=$(zonectl inspect extra > /dev/null 2>&1 && echo yes || echo no)"
echo "extra_netns=$($IP netns list | grep -c za-extra)"
echo "bridge_ports=$(ls /sys/class/net/cni0/brif | wc -l)"

# Destroying the zone releases its address and removes its namespace and veth.
zonectl destroy web > /dev/null 2>&1
echo "web_netns_after=$($IP netns list | grep -c za-web)"
echo "lease_after=$(test -e /run/cni-ipam/zones/10.88.0.2 && echo held || echo released)"
echo "bridge_ports_after=$(ls /sys/class/net/cni0/brif | wc -l)"

# The next zone gets the address again; it reaches the test host through
# the gateway, and what it sends from another address goes nowhere. It
# stays up, serving, across a daemon restart.
zonectl launch client --net --initrd {VSOCK_IMAGE} --wait-timeout 300 -- /bin/busybox sh -c 'b=/bin/busybox; set -- $($b ip route show default); echo gw=$3; echo fetched=$(/bin/vsock-probe tcp-get $3:9000); $b ping -c 1 -W 3 $3 > /dev/null 2>&1; echo ping_gw=$?; $b ip addr add 10.88.0.3/32 dev eth0; echo spoof_addr=$?; out=$($b ping -c 2 -W 3 -I 10.88.0.3 $3 2>&1); echo ping_spoofed=$?; echo spoof_sent=$(echo $out | $b grep -c packets.transmitted); $b ip addr del 10.88.0.3/32 dev eth0; echo checks-done; exec /bin/vsock-probe tcp-serve 8080 still-here' > /dev/null 2>&1
echo "client_rc=$?"
for i in $(seq 240); do zonectl logs client 2>/dev/null | grep -q '^checks-done' && break; sleep 0.5; done
zonectl logs client > /tmp/client.log 2>&1
sed 's/^/client: /' /tmp/client.log
echo "client_address=$(field client address)"
for k in gw ping_gw spoof_addr ping_spoofed spoof_sent; do echo "client_$k=$(grep "^$k=" /tmp/client.log | head -n 1 | cut -d= -f2)"; done
echo "client_fetched=$(grep '^fetched=' /tmp/client.log | head -n 1 | sed 's/.*tcp_got=//')"
kill $(cat /tmp/daemon.pid); sleep 1; start_daemon
echo "after_restart_state=$(field client state)"
echo "after_restart_fetch=$(timeout -s KILL 120 $P tcp-get 10.88.0.2:8080 | sed -n 's/^VSOCK-PROBE tcp_got=//p')"
zonectl destroy client > /dev/null 2>&1
echo "client_netns_after=$($IP netns list | grep -c za-client)"
echo "client_lease_after=$(test -e /run/cni-ipam/zones/10.88.0.2 && echo held || echo released)"
grep -i 'cni' /tmp/daemon.log | sed 's/^/daemon: /' | tail -n 20
"#
    ));
    let v = |k: &str| run.value(k).unwrap_or_else(|| panic!("no {k}:\n{}\n{}", run.output, run.diagnostics)).to_owned();
    assert_eq!(v("web_rc"), "0", "{}\n{}", run.output, run.diagnostics);
    assert_eq!(v("web_address"), "10.88.0.2/30", "the address host-local gave\n{}", run.output);
    assert_eq!(v("web_cni"), "zones");
    assert_eq!(v("web_netns"), "/run/netns/za-web");
    assert_eq!(v("ns_has_tap"), "yes", "the zone's TAP is in its namespace\n{}\n{}", run.output, run.diagnostics);
    assert_eq!(v("lease_held"), "yes", "{}", run.output);
    assert_eq!(v("web_mac"), v("ns_eth0_mac"), "the zone takes the plugins' eth0's MAC");
    assert_eq!(v("web_guest_mac"), v("web_mac"), "the guest's eth0 has that MAC\n{}", run.output);
    assert_eq!(v("web_resolv"), "nameserver 10.88.0.1", "{}", run.output);
    assert_eq!(v("fetched_from_zone"), "from-the-zone", "the test host reached the zone over the CNI bridge\n{}\n{}", run.output, run.diagnostics);
    assert_eq!(v("fetched_published"), "from-the-zone", "a published port reaches the zone\n{}", run.output);
    assert_eq!(v("measured"), "1", "the launch record names the CNI network, MAC, addresses and published port\n{}", run.output);
    assert_eq!(v("cmdline_has_net"), "1", "{}", run.output);
    assert_ne!(v("extra_rc"), "0");
    assert_eq!(v("extra_says"), "1", "the error is the IPAM plugin's, named\n{}", run.output);
    assert_eq!(v("extra_exists"), "no");
    assert_eq!(v("extra_netns"), "0", "a failed launch leaves no namespace");
    assert_eq!(v("bridge_ports"), "1", "a failed launch leaves no veth on the bridge (only web's)\n{}", run.output);
    assert_eq!(v("web_netns_after"), "0");
    assert_eq!(v("lease_after"), "released", "DEL released the address\n{}", run.output);
    assert_eq!(v("bridge_ports_after"), "0", "DEL removed the veth");
    assert_eq!(v("client_rc"), "0", "{}", run.output);
    assert_eq!(v("client_address"), "10.88.0.2/30", "the released address was given again");
    assert_eq!(v("client_gw"), "10.88.0.1", "{}", run.output);
    assert_eq!(v("client_fetched"), "from-the-host", "the zone reached the host through the bridge's gateway\n{}", run.output);
    assert_eq!(v("client_ping_gw"), "0", "{}", run.output);
    assert_eq!(v("client_spoof_addr"), "0", "the zone took the second address\n{}", run.output);
    assert_eq!(v("client_spoof_sent"), "1", "ping sent from the second address (and summed up)\n{}", run.output);
    assert_ne!(v("client_ping_spoofed"), "0", "what a zone sends from another address goes nowhere\n{}", run.output);
    assert_eq!(v("after_restart_state"), "running", "{}", run.output);
    assert_eq!(v("after_restart_fetch"), "still-here", "the zone's network survives a daemon restart\n{}", run.output);
    assert_eq!(v("client_netns_after"), "0", "{}", run.output);
    assert_eq!(v("client_lease_after"), "released", "DEL ran from the persisted result after a restart\n{}", run.output);
}
