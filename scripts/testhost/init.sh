#!/bin/sh
# /init of the test host's base initramfs (busybox sh; installed by build.sh).
#
# 1. mounts the pseudo file systems;
# 2. insmods the host modules (KVM) listed in /lib/modules/host/load-order and
#    checks that /dev/kvm exists;
# 3. runs /run-script.sh (supplied per run by run.sh in a second cpio) with its
#    stdout+stderr on the results channel /dev/ttyS1, framed by
#    "TESTHOST-BEGIN" and "TESTHOST-END rc=<exit code>", then powers off;
# 4. without /run-script.sh, starts an interactive shell on the console.
#
# The kernel console stays on ttyS0.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
export TERM="${TERM:-linux}"
umask 022
cd /

RESULTS=/dev/ttyS1
CONSOLE=/dev/console

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null || true
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null || true
ip link set lo up 2>/dev/null || true
hostname testhost 2>/dev/null || true

# Error lines go to the console and, once it is known, to the results channel
# too (run.sh forwards every TESTHOST-ERROR line to its stderr).
errors=""
err() {
	echo "TESTHOST-ERROR $*" >"$CONSOLE"
	errors="${errors}TESTHOST-ERROR $*
"
}

uptime_s() { cut -d' ' -f1 /proc/uptime; }

echo "testhost: init started at uptime $(uptime_s)s, kernel $(uname -r)" >"$CONSOLE"

# Host modules, in dependency order (computed by build.sh from modinfo).
if [ -f /lib/modules/host/load-order ]; then
	while read -r m; do
		[ -n "$m" ] || continue
		out=$(insmod "/lib/modules/host/$m" 2>&1) ||
			err "insmod $m failed: $out"
	done </lib/modules/host/load-order
fi
if [ ! -c /dev/kvm ]; then
	err "/dev/kvm missing after loading the KVM modules (no SVM in the test host CPU? see dmesg)"
fi
[ -c /dev/tpmrm0 ] || err "/dev/tpmrm0 missing (no tpm-crb device or swtpm not connected?)"

poweroff_now() {
	sync
	poweroff -f
	# Only reached if the power-off request failed.
	echo o >/proc/sysrq-trigger 2>/dev/null
	while :; do sleep 3600; done
}

# unkillable: the threads that have a SIGKILL pending and are still alive,
# checked twice 5 s apart (a process killed just now is not counted). Such a
# thread is stuck in the test host's kernel (the nested-KVM hang): no bounded
# wait of a script can end it.
pending_kill() {
	for st in /proc/[0-9]*/task/[0-9]*/status; do
		m=$(sed -n 's/^SigPnd:[[:space:]]*//p; s/^ShdPnd:[[:space:]]*//p' "$st" 2>/dev/null | tr '\n' ' ')
		for v in $m; do
			# SIGKILL is signal 9: bit 8 of the mask.
			if [ $((0x$v & 0x100)) -ne 0 ]; then
				t=${st%/status}
				echo "${t#/proc/}"
				break
			fi
		done
	done
}
unkillable() {
	first=" $(pending_kill | tr '\n' ' ') "
	[ "$first" != "  " ] || return 0
	sleep 5
	for t in $(pending_kill); do
		case $first in
		*" $t "*) echo "testhost-watchdog: unkillable ${t%%/*} ($(cat "/proc/${t%%/*}/comm" 2>/dev/null)), thread ${t##*/} ($(cat "/proc/$t/comm" 2>/dev/null)) state=$(cut -d' ' -f3 "/proc/$t/stat" 2>/dev/null): SIGKILL pending for 5 s or more" ;;
		esac
	done
}
# What every zone process is doing, on the console: started by the watchdog
# (testhost.watchdog=SECONDS on the kernel command line, set by run.sh a
# little before its own timeout) so that a run that hangs says what hung.
dump_state() {
	echo "testhost-watchdog: begin at uptime $(uptime_s)s (load $(cut -d' ' -f1-3 /proc/loadavg))"
	unkillable
	# User processes only (kernel threads are in brackets; busybox has no pgrep -a).
	# shellcheck disable=SC2009
	ps | grep -v ' \['
	for p in /proc/[0-9]*; do
		comm=$(cat "$p/comm" 2>/dev/null) || continue
		case $comm in
		zone-vmm | hypervisor-agen* | zonectl | qemu-system-x86) ;;
		*) continue ;;
		esac
		echo "== ${p#/proc/} $comm: $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null | cut -c1-200)"
		for t in "$p"/task/*; do
			echo "-- task ${t##*/} $(cat "$t/comm" 2>/dev/null) state=$(cut -d' ' -f3 "$t/stat" 2>/dev/null) wchan=$(cat "$t/wchan" 2>/dev/null) syscall=$(cut -d' ' -f1 "$t/syscall" 2>/dev/null)"
			sed 's/^/     /' "$t/stack" 2>/dev/null | head -n 12
		done
	done
	for d in /var/lib/*/zones/* /tmp/*/zones/* /run/*/zones/*; do
		[ -d "$d" ] || continue
		for f in console.log vmm.log; do
			[ -s "$d/$f" ] || continue
			echo "== $d/$f (last 25 lines)"
			tail -n 25 "$d/$f" | tr -d '\r' | cut -c1-300
		done
	done
	if [ -s /tmp/daemon.log ]; then
		echo "== /tmp/daemon.log (last 30 lines)"
		tail -n 30 /tmp/daemon.log | cut -c1-300
	fi
	echo w >/proc/sysrq-trigger 2>/dev/null
	echo "== dmesg (last 60 lines)"
	dmesg | tail -n 60
	echo "testhost-watchdog: end"
}
watchdog=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^testhost\.watchdog=//p')

if [ -f /run-script.sh ]; then
	case $watchdog in
	'' | *[!0-9]*) ;;
	*) (sleep "$watchdog" && dump_state >"$CONSOLE" 2>&1) </dev/null >/dev/null 2>&1 & ;;
	esac
	if [ ! -c "$RESULTS" ]; then
		err "$RESULTS missing: results go to the console instead"
		RESULTS=$CONSOLE
	fi
	# Raw mode: no \n -> \r\n translation, no echo.
	stty -F "$RESULTS" raw -echo 2>/dev/null || true
	exec 3>"$RESULTS"
	printf '%s' "$errors" >&3
	echo "testhost: running /run-script.sh at uptime $(uptime_s)s" >"$CONSOLE"
	echo "TESTHOST-BEGIN" >&3
	[ -x /run-script.sh ] || chmod 0755 /run-script.sh
	(cd / && exec /run-script.sh) </dev/null >&3 2>&3
	rc=$?
	echo "TESTHOST-END rc=$rc" >&3
	exec 3>&-
	# busybox stty applies settings with TCSADRAIN: this waits until the
	# UART has sent everything before we power off.
	stty -F "$RESULTS" raw -echo 2>/dev/null || true
	echo "testhost: /run-script.sh exited rc=$rc at uptime $(uptime_s)s; powering off" >"$CONSOLE"
	poweroff_now
fi

echo "testhost: no /run-script.sh; interactive shell on the console ('poweroff -f' to quit)" >"$CONSOLE"
setsid cttyhack sh -l
poweroff_now
