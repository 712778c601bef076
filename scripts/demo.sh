#!/usr/bin/env bash
# The main job, from a fresh machine: set everything up, start the daemon,
# launch the default zone (zone kernel + the SPIRE agent image) and show it
# running with its readiness time and its verified identity, then a real
# spire-server with the zone attestor issuing the zone's workload its
# X.509-SVID, and denying a zone with another image.
#
# On a host with hardware KVM this happens right here. On a host whose
# /dev/kvm cannot run a Linux userspace (PVM, as on the project's machines) it
# happens inside the test host, where KVM is real.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

"$ZONE_ROOT/scripts/setup.sh"
payload="$("$ZONE_ROOT/scripts/testhost/payload.sh" | tail -n 1)"

hardware_kvm() {
  [ -c /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo
}

# The demo script: start the daemon unless one answers, launch the default
# zone (spire-agent and a workload), show it running and its verified
# identity, then start spire-server with the zone attestor's plugin: the
# default zone's workload gets its X.509-SVID, and a zone with another image
# is denied with the verifier's reason. $1 holds bin/, kernel/ and images/;
# $2 holds SPIRE's bin/.
demo_script() {
  cat <<SCRIPT
set -e
root=$1
spire=$2
image=\$spire/../../zone/images/spire-agent.cpio
have() { command -v "\$1" > /dev/null 2>&1; }
sha() { if have sha256sum; then sha256sum "\$1"; else busybox sha256sum "\$1"; fi | cut -d' ' -f1; }
newc() { if have cpio; then cpio -o -H newc; else busybox cpio -o -H newc; fi; }
export PATH=\$root/bin:\$PATH ZONE_SOCKET=/run/zone-attestor-demo/control.sock
if ! zonectl list > /dev/null 2>&1; then
  mkdir -p /etc/zone-attestor-demo
  cat > /etc/zone-attestor-demo/agent.toml <<CFG
state_dir = "/var/lib/zone-attestor-demo"
socket = "/run/zone-attestor-demo/control.sock"
[defaults]
kernel = "\$root/kernel/vmlinux"
initrd = "\$image"
cmdline = "console=ttyS0 reboot=k panic=-1 quiet"
memory_mib = 384
# The zones' spire-agents reach spire-server through their host channel.
[[forward]]
port = 8081
to = "127.0.0.1:8081"
CFG
  hypervisor-agent daemon --config /etc/zone-attestor-demo/agent.toml > /tmp/zone-attestor-demo.log 2>&1 &
  for i in \$(seq 100); do zonectl list > /dev/null 2>&1 && break; sleep 0.1; done
  echo "started hypervisor-agent (log: /tmp/zone-attestor-demo.log)"
fi
zonectl destroy default > /dev/null 2>&1 || true
zonectl destroy other > /dev/null 2>&1 || true
zonectl launch default --wait-timeout 600 -- /bin/sh /opt/spire/start.sh
echo
zonectl logs default --console | grep ZONE-GUEST-READY
echo
# Its verified identity: fresh evidence for a random nonce, checked offline
# against the host's attestation key and a policy admitting the zone.
ak=\$(zonectl eventlog -o json | sed -n 's/.*"trust_entry": "\\([^"]*\\)".*/\\1/p')
nonce=\$(od -An -tx1 -N16 /dev/urandom | tr -d ' \\n')
zonectl evidence default --nonce "\$nonce" --out /tmp/default.evidence > /dev/null
zonectl policy suggest default > /tmp/default.policy
zonectl verify /tmp/default.evidence --policy /tmp/default.policy --nonce "\$nonce" --trust-ak "\$ak"
echo

# SPIRE: spire-server with the zone attestor's plugin, trusting this host's
# AK and a policy computed offline from the artifacts (any zone name, this
# kernel, image, command line and command); a node alias for zones named
# default with this image.
mkdir -p /tmp/spire-demo/server
zonectl measure --kernel "\$root/kernel/vmlinux" --initrd "\$image" --cmdline "console=ttyS0 reboot=k panic=-1 quiet" \
  --policy '*' -- /bin/sh /opt/spire/start.sh > /tmp/spire-demo/policy.toml
cat > /tmp/spire-demo/server.conf <<CONF
server {
  bind_address = "127.0.0.1"
  bind_port = "8081"
  socket_path = "/tmp/spire-demo/server.sock"
  trust_domain = "example.org"
  data_dir = "/tmp/spire-demo/server"
  log_level = "INFO"
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = "/tmp/spire-demo/server/datastore.sqlite3"
    }
  }
  KeyManager "memory" {
    plugin_data {}
  }
  UpstreamAuthority "disk" {
    plugin_data {
      cert_file_path = "\$spire/../ca/ca.pem"
      key_file_path = "\$spire/../ca/ca.key"
    }
  }
  NodeAttestor "zone" {
    plugin_cmd = "\$spire/zone-attestor-server"
    plugin_data {
      trusted_hosts = ["\$ak"]
      policy_path = "/tmp/spire-demo/policy.toml"
    }
  }
}
CONF
\$spire/spire-server run -config /tmp/spire-demo/server.conf > /tmp/spire-demo/server.log 2>&1 &
for i in \$(seq 600); do \$spire/spire-server healthcheck -socketPath /tmp/spire-demo/server.sock > /dev/null 2>&1 && break; sleep 0.5; done
sp() { \$spire/spire-server "\$@" -socketPath /tmp/spire-demo/server.sock; }
host=\${ak%%=*}
sp entry create -node -spiffeID spiffe://example.org/zones/default -selector zone:host:\$host -selector zone:name:default \\
  -selector zone:initrd:sha256:\$(sha "\$image") > /dev/null
sp entry create -parentID spiffe://example.org/zones/default -spiffeID spiffe://example.org/workload/hello -selector unix:uid:0 > /dev/null
echo "spire-server is up, with the zone attestor trusting \$host"
for i in \$(seq 600); do zonectl logs default | grep -q -E 'WORKLOAD-SVID-OK|SPIRE-AGENT-FAILED' && break; sleep 0.5; done
echo "default: agent \$(grep -o "spiffe://example.org/spire/agent/zone/[^ \\"]*/default" /tmp/spire-demo/server.log | head -n 1)"
echo "default: workload \$(zonectl logs default | grep -o 'SPIFFE ID:.*' | head -n 1 | tr -s ' \t' ' ')"
zonectl logs default | grep -q WORKLOAD-SVID-OK
# Another image (the same one with a file added): denied, with the reason.
mkdir -p /tmp/other-root/etc && echo other > /tmp/other-root/etc/other
(cd /tmp/other-root && find . | newc 2>/dev/null) > /tmp/other-extra.cpio
cat "\$image" /tmp/other-extra.cpio > /tmp/other.cpio
zonectl launch other --initrd /tmp/other.cpio --wait-timeout 600 -- /bin/sh /opt/spire/start.sh > /dev/null
for i in \$(seq 600); do zonectl logs other | grep -q -E 'WORKLOAD-SVID-OK|SPIRE-AGENT-FAILED' && break; sleep 0.5; done
# (spire-server's log escapes the quotes around the zone's name.)
reason=\$(sed 's/\\\\"/'"'"'/g' /tmp/spire-demo/server.log | grep -o 'zone evidence rejected by check [^"]*' | head -n 1)
echo "other:   denied: \$reason"
zonectl logs other | grep -q SPIRE-AGENT-FAILED
SCRIPT
}

if hardware_kvm; then
  log "demo: hardware KVM found: running the daemon and the default zone here"
  bash -c "$(demo_script "$payload/opt/zone" "$payload-spire/opt/spire/bin")"
else
  log "demo: /dev/kvm here cannot run a Linux userspace: running the daemon and the default zone inside the test host"
  script="$(mktemp)"
  trap 'rm -f "$script"' EXIT
  {
    # shellcheck disable=SC2016 # expanded inside the test host
    printf '%s\n' 'echo "test host: $(uname -r), $(ls /dev/kvm /dev/tpmrm0 | tr "\n" " ")"'
    demo_script /opt/zone /opt/spire/bin
  } > "$script"
  TESTHOST_MEM_MB="${TESTHOST_MEM_MB:-4096}" TESTHOST_TIMEOUT="${TESTHOST_TIMEOUT:-1800}" \
    "$ZONE_ROOT/scripts/testhost/run.sh" "$script" "$payload" "$payload-spire"
fi
