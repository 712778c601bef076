#!/usr/bin/env bash
# The main job, from a fresh machine: set everything up, start the daemon,
# launch the default zone (zone kernel + base image) and show it running with
# its readiness time.
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

# The demo script: start the daemon unless one answers, launch, show. $1 is the
# directory holding bin/, kernel/ and images/.
demo_script() {
  cat <<SCRIPT
set -e
root=$1
export PATH=\$root/bin:\$PATH ZONE_SOCKET=/run/zone-attestor-demo/control.sock
if ! zonectl list > /dev/null 2>&1; then
  mkdir -p /etc/zone-attestor-demo
  cat > /etc/zone-attestor-demo/agent.toml <<CFG
state_dir = "/var/lib/zone-attestor-demo"
socket = "/run/zone-attestor-demo/control.sock"
[defaults]
kernel = "\$root/kernel/vmlinux"
initrd = "\$root/images/base.cpio"
CFG
  hypervisor-agent daemon --config /etc/zone-attestor-demo/agent.toml > /tmp/zone-attestor-demo.log 2>&1 &
  for i in \$(seq 100); do zonectl list > /dev/null 2>&1 && break; sleep 0.1; done
  echo "started hypervisor-agent (log: /tmp/zone-attestor-demo.log)"
fi
zonectl destroy default > /dev/null 2>&1 || true
zonectl launch default
echo
zonectl list
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
SCRIPT
}

if hardware_kvm; then
  log "demo: hardware KVM found: running the daemon and the default zone here"
  bash -c "$(demo_script "$payload/opt/zone")"
else
  log "demo: /dev/kvm here cannot run a Linux userspace: running the daemon and the default zone inside the test host"
  script="$(mktemp)"
  trap 'rm -f "$script"' EXIT
  {
    # shellcheck disable=SC2016 # expanded inside the test host
    printf '%s\n' 'echo "test host: $(uname -r), $(ls /dev/kvm /dev/tpmrm0 | tr "\n" " ")"'
    demo_script /opt/zone
  } > "$script"
  "$ZONE_ROOT/scripts/testhost/run.sh" "$script" "$payload"
fi
