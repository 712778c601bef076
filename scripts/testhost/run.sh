#!/usr/bin/env bash
# Run a script inside the test host (QEMU TCG with emulated AMD SVM: real
# /dev/kvm via kvm_amd, real /dev/tpmrm0 via tpm-crb + swtpm). See README.md.
#
#   run.sh SCRIPT [PAYLOAD_DIR...]      run SCRIPT as /run-script.sh; each
#                                       PAYLOAD_DIR's contents appear at /
#   run.sh --interactive [PAYLOAD_DIR...]   shell on the test host console
#                                       (Ctrl-A X quits QEMU)
#
# stdout: what the script wrote (stdout+stderr) between the framing lines.
# stderr: progress, timings, and on failure the tail of the console log.
# Exit code: the script's, or 124 on timeout, or 125 when the framing is
# missing (the test host never started the script or died during it), or 126
# on a timeout where the test host's watchdog found a process that outlived a
# SIGKILL (stuck in the test host's kernel, which no script can bound) or
# whose watchdog never ran (the test host froze).
# On a timeout, stderr also says where the test host's vCPUs were
# (hang-snapshot.py, through QEMU's monitor).
#
# Environment:
#   TESTHOST_TIMEOUT   seconds for the whole QEMU run (default 600)
#   TESTHOST_BOOT_TIMEOUT  seconds for the test host kernel to reach /init
#                      (default 120; it takes ~5). A boot that does not is
#                      killed and tried once more, said on stderr with the
#                      console of the first attempt; a second one fails (124).
#   TESTHOST_MEM_MB    test host memory (default 3072)
#   TESTHOST_SMP       test host vCPUs (default 2)
#   TESTHOST_CPU       QEMU -cpu (default EPYC,+svm minus what TCG lacks)
#   TESTHOST_APPEND    extra kernel command line arguments
#   TESTHOST_SYSTEM_MAP  a real System.map of the test host's kernel, with
#                      which a timeout's snapshot names the vCPUs' RIPs; by
#                      default system-map.sh fetches it at the first timeout
#                      (Debian's -dbg package; the image package's is a
#                      placeholder) and keeps it in the test host cache
#   TESTHOST_KEEP=1    keep the run directory (logs, initrd) and print its path
#   TESTHOST_CONSOLE=1 copy the test host console log to stderr afterwards
#   TESTHOST_KVM_HOLD=0  do not keep a KVM VM for the whole run. By default,
#                      before SCRIPT, the test host starts `vsock-probe
#                      kvm-hold` (from the payload): one VM with an irqchip
#                      and a vCPU that never runs, so that the test host
#                      kernel's KVM static keys (preempt notifiers, APIC state)
#                      stay on instead of being patched into its text (int3
#                      breakpoints and cross-CPU syncs) at every first VM and
#                      out at every last: hung two-vCPU test hosts were found
#                      with one vCPU looping on an int3 in __schedule and the
#                      other spinning on a lock (README, "Why one test-host vCPU")
#   ZONE_CACHE_DIR, TESTHOST_*: passed on to build.sh
set -euo pipefail

SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TIMEOUT=${TESTHOST_TIMEOUT:-600}
BOOT_TIMEOUT=${TESTHOST_BOOT_TIMEOUT:-120}
MEM_MB=${TESTHOST_MEM_MB:-3072}
SMP=${TESTHOST_SMP:-2}
# EPYC with SVM, minus the features TCG cannot emulate (QEMU would drop them
# anyway, with a warning each).
CPU=${TESTHOST_CPU:-EPYC,+svm,-rdseed,-sha-ni,-fxsr-opt,-misalignsse,-3dnowprefetch,-osvw,-topoext,-nrip-save,-xsavec}
RC_TIMEOUT=124
RC_NOFRAME=125
RC_STUCK=126

log() { printf 'testhost: %s\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 2
}
need() { # need COMMAND APT_PACKAGE
	command -v "$1" >/dev/null 2>&1 || die "'$1' not found: install it with 'apt-get install $2'"
}
usage() {
	sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2
	exit 2
}

interactive=0
case ${1:-} in
-h | --help | "") usage ;;
--interactive) interactive=1 && shift ;;
esac
script=""
if ((!interactive)); then
	script=$1
	shift
	[[ -f $script ]] || die "script $script not found"
fi
for p in "$@"; do
	[[ -d $p ]] || die "payload $p is not a directory"
done
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "TESTHOST_TIMEOUT must be a number of seconds"
[[ $BOOT_TIMEOUT =~ ^[0-9]+$ ]] || die "TESTHOST_BOOT_TIMEOUT must be a number of seconds"

need qemu-system-x86_64 qemu-system-x86
need swtpm swtpm
need cpio cpio
need flock util-linux

cache=$("$SELF_DIR/build.sh" | tail -n 1)
[[ -f $cache/base.cpio && -f $cache/vmlinuz ]] || die "build.sh did not produce $cache/{base.cpio,vmlinuz}"

run=$(mktemp -d "${TMPDIR:-/tmp}/testhost.XXXXXX")
[[ $run != *,* ]] || die "run directory $run contains a comma (QEMU option syntax); set TMPDIR"
qpid=""
stop_swtpm() {
	if [[ -f $run/swtpm.pid ]]; then
		kill "$(<"$run/swtpm.pid")" 2>/dev/null || true
	fi
}
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
	local rc=$?
	if [[ -n $qpid ]] && kill -0 "$qpid" 2>/dev/null; then
		kill "$qpid" 2>/dev/null || true
	fi
	stop_swtpm
	if [[ ${TESTHOST_KEEP:-0} == 1 ]]; then
		log "kept run directory $run"
	else
		rm -rf "$run"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now_us() { echo "${EPOCHREALTIME/./}"; }
secs() { # secs MICROSECONDS -> "S.SS"
	printf '%d.%02d' $(($1 / 1000000)) $((($1 % 1000000) / 10000))
}

# --- initrd: base.cpio + payload archives + the run script archive -------------------
# Concatenated newc archives are unpacked in order; later files replace earlier ones.
append_cpio() { # append_cpio DIR
	(cd "$1" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
		cpio --quiet -o -H newc -R 0:0) >>"$run/initrd"
}
{
	flock -s 9
	cp "$cache/vmlinuz" "$run/vmlinuz"
	cp "$cache/base.cpio" "$run/initrd"
} 9<"$cache/.lock"
for p in "$@"; do
	append_cpio "$p"
done
if ((!interactive)); then
	mkdir "$run/runroot"
	{
		# A first line "#!..." stays first.
		if head -n 1 "$script" | grep -q '^#!'; then head -n 1 "$script"; fi
		if [[ ${TESTHOST_KVM_HOLD:-1} != 0 ]]; then
			# Not a job of SCRIPT's shell (a bare `wait` there must not wait for it).
			# shellcheck disable=SC2016 # expanded in the test host
			printf '%s\n' 'if [ -c /dev/kvm ] && [ -x /opt/zone/bin/vsock-probe ]; then (/opt/zone/bin/vsock-probe kvm-hold > /tmp/kvm-hold.out 2>&1 < /dev/null &); for i in $(seq 50); do grep -q kvm_hold /tmp/kvm-hold.out 2> /dev/null && break; sleep 0.1; done; fi'
		fi
		if head -n 1 "$script" | grep -q '^#!'; then tail -n +2 "$script"; else cat "$script"; fi
	} >"$run/runroot/run-script.sh"
	chmod 0755 "$run/runroot/run-script.sh"
	append_cpio "$run/runroot"
fi

# --- swtpm ----------------------------------------------------------------------
# A TPM with an EK certificate, as a manufactured TPM has: swtpm_setup with a
# local CA kept beside the test host cache (the test host TPM's "manufacturer",
# made once). Its root and issuing certificates go into the test host at
# /opt/testhost/ek-ca.pem, for verifiers that trust hosts by their EK.
mkdir "$run/tpm"
need swtpm_setup swtpm-tools
ekca="$(dirname "$cache")/ek-ca"
mkdir -p "$ekca/localca"
printf 'statedir = %s\nsigningkey = %s/signkey.pem\nissuercert = %s/issuercert.pem\ncertserial = %s/certserial\n' \
	"$ekca/localca" "$ekca/localca" "$ekca/localca" "$ekca/localca" >"$ekca/swtpm-localca.conf"
printf 'create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = /etc/swtpm-localca.options\nactive_pcr_banks = sha256\n' \
	"$ekca/swtpm-localca.conf" >"$ekca/swtpm_setup.conf"
swtpm_setup --tpm2 --tpmstate "$run/tpm" --create-ek-cert --pcr-banks sha256 --config "$ekca/swtpm_setup.conf" \
	>"$run/swtpm_setup.log" 2>&1 || die "swtpm_setup failed: $(tail -n 5 "$run/swtpm_setup.log")"
mkdir -p "$run/ekca-root/opt/testhost"
cat "$ekca/localca/swtpm-localca-rootca-cert.pem" "$ekca/localca/issuercert.pem" >"$run/ekca-root/opt/testhost/ek-ca.pem"
append_cpio "$run/ekca-root"
# Started per boot attempt (a TPM that has seen a boot is not a fresh one).
start_swtpm() {
	rm -rf "$run/tpm" "$run/swtpm.sock" "$run/swtpm.pid"
	cp -a "$run/tpm.init" "$run/tpm"
	swtpm socket --tpm2 --tpmstate "dir=$run/tpm" \
		--ctrl "type=unixio,path=$run/swtpm.sock" \
		--flags startup-clear --pid "file=$run/swtpm.pid" \
		--log "file=$run/swtpm.log" --daemon ||
		die "swtpm failed to start (see $run/swtpm.log)"
	for _ in $(seq 100); do
		[[ -S $run/swtpm.sock ]] && break
		sleep 0.05
	done
	[[ -S $run/swtpm.sock ]] || die "swtpm did not create its socket"
}
mv "$run/tpm" "$run/tpm.init"

# --- QEMU -----------------------------------------------------------------------
# Not quiet: a kernel that stops before /init says where.
# nokaslr: a hung vCPU's RIP can be looked up in the kernel's System.map
# (TESTHOST_SYSTEM_MAP).
append="console=ttyS0 panic=-1 cryptomgr.notests mitigations=off nokaslr ${TESTHOST_APPEND:-}"
# The test host dumps what its zone processes are doing this long before the
# timeout (init.sh's watchdog), so that a run that hangs says what hung.
if ((TIMEOUT > 90)); then
	append+=" testhost.watchdog=$((TIMEOUT - 45))"
fi
qemu=(qemu-system-x86_64
	-M q35 -name "testhost,debug-threads=on" -accel "tcg,thread=multi" -cpu "$CPU" -smp "$SMP" -m "$MEM_MB"
	-nodefaults -no-reboot -display none
	-kernel "$run/vmlinuz" -initrd "$run/initrd" -append "$append"
	-chardev "socket,id=chrtpm,path=$run/swtpm.sock"
	-tpmdev "emulator,id=tpm0,chardev=chrtpm" -device "tpm-crb,tpmdev=tpm0")

if ((interactive)); then
	log "interactive test host (Ctrl-A X quits; results channel in $run/results.log)"
	"${qemu[@]}" -serial mon:stdio -serial "file:$run/results.log" || true
	exit 0
fi

qemu+=(-serial "file:$run/console.log" -serial "file:$run/results.log"
	-monitor "unix:$run/monitor.sock,server=on,wait=off")
# snapshot_hang: where the test host's vCPUs are, before a timed-out QEMU is killed.
snapshot_hang() {
	log "---- the test host at the timeout: its QEMU's threads and vCPUs ----"
	local map=${TESTHOST_SYSTEM_MAP:-}
	if [[ -z $map ]]; then
		map=$("$SELF_DIR/system-map.sh") || map=""
	fi
	HANG_SNAPSHOT_RAW="$run/registers.txt" python3 "$SELF_DIR/hang-snapshot.py" "$qpid" "$run/monitor.sock" ${map:+"$map"} >&2 ||
		log "(hang-snapshot.py failed)"
}
t0=$(now_us)
deadline=$((t0 + TIMEOUT * 1000000))
t_begin="" timed_out=0 boot_hung=0
# boot_once: one QEMU run until it exits, the deadline passes (timed_out=1)
# or its kernel has not reached /init after BOOT_TIMEOUT (boot_hung=1).
boot_once() {
	local t_start boot_deadline booted=0
	start_swtpm
	: >"$run/results.log"
	: >"$run/console.log"
	t_start=$(now_us)
	boot_deadline=$((t_start + BOOT_TIMEOUT * 1000000))
	"${qemu[@]}" </dev/null >"$run/qemu.log" 2>&1 &
	qpid=$!
	boot_hung=0
	while kill -0 "$qpid" 2>/dev/null; do
		if ((!booted)) && grep -q '^testhost: init started' "$run/console.log"; then
			booted=1
		fi
		if [[ -z $t_begin ]] && grep -q '^TESTHOST-BEGIN' "$run/results.log"; then
			t_begin=$(now_us)
		fi
		local now
		now=$(now_us)
		if ((now > deadline)) || ((!booted && now > boot_deadline)); then
			if ((now > deadline)); then
				timed_out=1
				snapshot_hang
			else
				boot_hung=1
			fi
			kill "$qpid" 2>/dev/null || true
			for _ in $(seq 50); do
				kill -0 "$qpid" 2>/dev/null || break
				sleep 0.1
			done
			kill -9 "$qpid" 2>/dev/null || true
			break
		fi
		sleep 0.1
	done
	qemu_rc=0
	wait "$qpid" || qemu_rc=$?
	qpid=""
	stop_swtpm
}
boot_once
if ((boot_hung)); then
	log "WARNING: the test host kernel did not reach /init within ${BOOT_TIMEOUT}s; its console:"
	tail -n 30 "$run/console.log" | tr -d '\r' >&2 || true
	echo >&2
	log "WARNING: booting the test host once more"
	cp "$run/console.log" "$run/console.first.log"
	boot_once
	if ((boot_hung)); then
		timed_out=1
	fi
fi
t_end=$(now_us)
if [[ -z $t_begin ]] && grep -q '^TESTHOST-BEGIN' "$run/results.log"; then
	t_begin=$t_end # the script finished within the last poll interval
fi

# --- results --------------------------------------------------------------------
# body -> $run/body; prints the rc from the END line, "none" without END,
# "nobegin" without BEGIN. The END line may follow output without a newline.
script_rc=$(awk -v body="$run/body" '
	{ sub(/\r$/, "") }
	!begun { if ($0 == "TESTHOST-BEGIN") begun = 1; next }
	match($0, /TESTHOST-END rc=[0-9]+$/) {
		if (RSTART > 1) print substr($0, 1, RSTART - 1) > body
		rc = substr($0, RSTART + 16); found = 1; exit
	}
	{ print > body }
	END { if (!begun) print "nobegin"; else if (!found) print "none"; else print rc }
' "$run/results.log")
[[ -f $run/body ]] && cat "$run/body"

grep -h '^TESTHOST-ERROR' "$run/results.log" "$run/console.log" 2>/dev/null | sort -u >&2 || true
if [[ ${TESTHOST_CONSOLE:-0} == 1 ]]; then
	log "---- console log ----"
	cat "$run/console.log" >&2
	log "---- end of console log ----"
fi

boot="n/a" scr="n/a"
if [[ -n $t_begin ]]; then
	boot="$(secs $((t_begin - t0)))s"
	scr="$(secs $((t_end - t_begin)))s"
fi
log "boot->script $boot, script $scr, total $(secs $((t_end - t0)))s wall (qemu rc=$qemu_rc)"

fail_tail() {
	log "---- last lines of the test host console ($run/console.log) ----"
	tail -n 40 "$run/console.log" >&2 || true
	echo >&2
	if [[ -s $run/qemu.log ]]; then
		log "---- QEMU stderr ----"
		grep -v "TCG doesn't support requested feature" "$run/qemu.log" | tail -n 20 >&2 || true
	fi
}
if ((timed_out)); then
	if ((boot_hung)); then
		log "ERROR: the test host kernel did not reach /init within ${BOOT_TIMEOUT}s (TESTHOST_BOOT_TIMEOUT), twice in a row"
	else
		log "ERROR: timed out after ${TIMEOUT}s (TESTHOST_TIMEOUT)"
	fi
	if grep -q '^testhost-watchdog: begin' "$run/console.log"; then
		log "---- what the test host was doing before the timeout (its watchdog) ----"
		sed -n '/^testhost-watchdog: begin/,/^testhost-watchdog: end/p' "$run/console.log" | tr -d '\r' | head -n 600 >&2
	fi
	fail_tail
	if ((TIMEOUT > 90 && !boot_hung)) && ! grep -q '^testhost-watchdog: begin' "$run/console.log"; then
		# Its watchdog was due 45 s before the timeout: the test host's own
		# userspace did not run for that long (a frozen test-host kernel).
		log "ERROR: the test host froze: its watchdog, due $((TIMEOUT - 45)) s in, never ran"
		exit "$RC_STUCK"
	fi
	if grep -q '^testhost-watchdog: unkillable' "$run/console.log"; then
		log "ERROR: $(grep -m1 '^testhost-watchdog: unkillable' "$run/console.log" | tr -d '\r' | sed 's/^testhost-watchdog: //') (stuck in the test host's kernel)"
		exit "$RC_STUCK"
	fi
	exit "$RC_TIMEOUT"
fi
case $script_rc in
nobegin)
	log "ERROR: the test host never started /run-script.sh (no TESTHOST-BEGIN; kernel panic or QEMU failure?)"
	fail_tail
	exit "$RC_NOFRAME"
	;;
none)
	log "ERROR: the test host stopped during /run-script.sh (no TESTHOST-END; kernel panic or power-off by the script?)"
	fail_tail
	exit "$RC_NOFRAME"
	;;
esac
exit "$script_rc"
