#!/usr/bin/env bash
# The main job, from a fresh machine: set everything up, then boot the default
# zone (zone kernel + base image) and show it reached zone-guest.
#
# On a host with hardware KVM the zone boots right here. On a host whose
# /dev/kvm cannot run a Linux userspace (PVM, as on the project's machines) it
# boots inside the test host, where KVM is real.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

"$ZONE_ROOT/scripts/setup.sh"
payload="$("$ZONE_ROOT/scripts/testhost/payload.sh" | tail -n 1)"
cmdline="console=ttyS0 reboot=k panic=-1 quiet zone.oneshot"

hardware_kvm() {
  [ -c /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo
}

if hardware_kvm; then
  log "demo: hardware KVM found: booting the default zone here"
  "$ZONE_BIN_DIR/zonectl" run --kernel "$payload/opt/zone/kernel/vmlinux" \
    --initrd "$payload/opt/zone/images/base.cpio" --cmdline "$cmdline"
else
  log "demo: /dev/kvm here cannot run a Linux userspace: booting the default zone inside the test host"
  script="$(mktemp)"
  trap 'rm -f "$script"' EXIT
  cat > "$script" <<SCRIPT
echo "test host: \$(uname -r), \$(ls /dev/kvm /dev/tpmrm0 | tr '\n' ' ')"
echo "--- zone console ---"
/opt/zone/bin/zonectl run --kernel /opt/zone/kernel/vmlinux --initrd /opt/zone/images/base.cpio \
  --cmdline "$cmdline" --timeout 300
rc=\$?
echo "--- zonectl exited with \$rc ---"
exit \$rc
SCRIPT
  "$ZONE_ROOT/scripts/testhost/run.sh" "$script" "$payload"
fi
