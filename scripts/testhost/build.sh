#!/usr/bin/env bash
# Build the test host's base assets, cached (see README.md in this directory):
#   <cache>/vmlinuz          Debian cloud kernel (bzImage) of the test host
#   <cache>/base.cpio        uncompressed newc initramfs: busybox, KVM, TUN and
#                            netfilter, bridge and traffic-control modules,
#                            qemu-system-x86_64, nft, iproute2's ip and tc, the
#                            CNI plugins + their libraries, microvm firmware, /init
#   <cache>/config           that kernel's config
#   <cache>/kernel-release   its `uname -r`
#   <cache>/modules.txt      the host modules in load order
#   <cache>/stamp            cache key of the current build
# with <cache> = ${ZONE_CACHE_DIR:-/var/cache/zone-attestor}/testhost.
#
# Progress goes to stderr; the last line of stdout is the cache directory.
# Re-running when nothing changed only recomputes the key (well under a second).
#
# Environment:
#   ZONE_CACHE_DIR           cache root (default /var/cache/zone-attestor)
#   TESTHOST_KERNEL_PKG      pin the kernel package (default: what
#                            linux-image-cloud-amd64 depends on)
#   TESTHOST_EXTRA_MODULES   extra module names to load at boot (space-separated,
#                            e.g. "vhost_vsock tun"); dependencies are added
#   TESTHOST_FORCE=1         rebuild even if the cache key matches
set -euo pipefail

SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_ROOT=${ZONE_CACHE_DIR:-/var/cache/zone-attestor}
C=$CACHE_ROOT/testhost
QEMU=/usr/bin/qemu-system-x86_64
# The zone network's tools: nft (the daemon's policy) and iproute2's ip
# (network namespaces and veth pairs for the tests; busybox's ip has neither).
NFT=/usr/sbin/nft
# The CNI mode's: the plugins the tests' networks use, and tc (the daemon
# joins a zone's TAP to the plugins' interface with redirects).
CNI_DIR=/usr/lib/cni
CNI_PLUGINS=(bridge host-local ptp loopback)
QEMU_DATA=/usr/share/qemu
BUSYBOX=/bin/busybox
META_PKG=linux-image-cloud-amd64
# Firmware that `-M microvm` loads (checked with strace): bios-microvm.bin
# (a symlink to qboot.rom). The two 1.5 KB option ROMs are for -kernel on
# pc/q35 and for microvm with option ROMs on.
FIRMWARE_REQUIRED=(bios-microvm.bin)
FIRMWARE_OPTIONAL=(linuxboot_dma.bin pvh.bin)
BASE_MODULES=(irqbypass kvm kvm_amd)
# shellcheck disable=SC2206 # word splitting intended
EXTRA_MODULES=(${TESTHOST_EXTRA_MODULES:-})

log() { printf 'testhost-build: %s\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}
need() { # need COMMAND APT_PACKAGE
	command -v "$1" >/dev/null 2>&1 || die "'$1' not found: install it with 'apt-get install $2'"
}

need apt-cache apt
need apt-get apt
need dpkg-deb dpkg
need modinfo kmod
need cpio cpio
need ldd libc-bin
need sha256sum coreutils
need flock util-linux
need find findutils
need awk mawk
[[ -x $QEMU ]] || die "$QEMU not found: install it with 'apt-get install qemu-system-x86'"
[[ -x $NFT ]] || die "$NFT not found: install it with 'apt-get install nftables'"
IPROUTE=$(readlink -f /usr/sbin/ip 2>/dev/null || true)
if [[ ! -x $IPROUTE ]] || ! "$IPROUTE" -V 2>/dev/null | grep -q iproute2; then
	die "iproute2's ip not found at /usr/sbin/ip: install it with 'apt-get install iproute2'"
fi
TC=$(readlink -f /usr/sbin/tc 2>/dev/null || true)
[[ -x $TC ]] || die "iproute2's tc not found at /usr/sbin/tc: install it with 'apt-get install iproute2'"
CNI_FILES=()
for p in "${CNI_PLUGINS[@]}"; do
	[[ -x $CNI_DIR/$p ]] || die "$CNI_DIR/$p not found: install it with 'apt-get install containernetworking-plugins'"
	CNI_FILES+=("$CNI_DIR/$p")
done
[[ -x $BUSYBOX ]] || die "$BUSYBOX not found: install it with 'apt-get install busybox-static'"
if ldd "$BUSYBOX" >/dev/null 2>&1; then
	die "$BUSYBOX is dynamically linked: install the static one with 'apt-get install busybox-static'"
fi
for f in "${FIRMWARE_REQUIRED[@]}"; do
	[[ -e $QEMU_DATA/$f ]] || die "$QEMU_DATA/$f not found: install it with 'apt-get install qemu-system-data'"
done

mkdir -p "$C" 2>/dev/null || die "cannot create $C (set ZONE_CACHE_DIR to a writable directory)"
[[ -w $C ]] || die "$C is not writable (set ZONE_CACHE_DIR to a writable directory)"

# --- resolve the kernel package ---------------------------------------------
# apt-cache is slow here (~2 s a call: this image disables apt's pkgcache.bin),
# so the answer is memoized in $C/resolved, keyed on the apt lists and sources.
apt_fingerprint() {
	local lists etc
	lists=$(apt-config shell X Dir::State::lists/d | sed -n "s/^X='\(.*\)'$/\1/p")
	etc=$(apt-config shell X Dir::Etc/d | sed -n "s/^X='\(.*\)'$/\1/p")
	echo "pin=${TESTHOST_KERNEL_PKG:-}"
	find "${lists:-/var/lib/apt/lists/}" "${etc:-/etc/apt/}" -maxdepth 2 \
		\( -name '*Packages*' -o -name '*.list' -o -name '*.sources' -o -name 'preferences*' -o -name '*.pref' \) \
		-printf '%p %s %T@\n' 2>/dev/null | LC_ALL=C sort
}
resolve_kernel() {
	local dep
	KPKG=${TESTHOST_KERNEL_PKG:-} KVER=""
	if [[ -z $KPKG ]]; then
		# "Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)"
		dep=$(apt-cache show --no-all-versions "$META_PKG" 2>/dev/null |
			awk '/^Depends:/ { for (i = 2; i <= NF; i++) { d = $i; sub(/,$/, "", d);
				if (d ~ /^linux-image-[0-9].*-cloud-amd64$/) {
					v = ""; if ($(i + 1) == "(=") { v = $(i + 2); sub(/\),?$/, "", v) }
					print d, v; exit } } }') || true
		read -r KPKG KVER <<<"$dep" || true
	fi
	if [[ -n $KPKG && -z $KVER ]]; then
		KVER=$(apt-cache show --no-all-versions "$KPKG" 2>/dev/null | awk '/^Version:/ { print $2; exit }') || true
	fi
	[[ -n $KPKG && -n $KVER ]]
}

FP=$(apt_fingerprint)
KPKG="" KVER=""
if [[ -f $C/resolved && $(sed '$d' "$C/resolved") == "$FP" ]]; then
	read -r KPKG KVER < <(tail -n 1 "$C/resolved") || true
fi
if [[ -z $KPKG || -z $KVER ]]; then
	if ! resolve_kernel; then
		if [[ -f $C/stamp && -f $C/base.cpio && -f $C/vmlinuz ]]; then
			log "WARNING: cannot resolve $META_PKG with apt-cache (run 'apt-get update'?); using the cached build"
			echo "$C"
			exit 0
		fi
		if [[ $EUID -eq 0 ]]; then
			log "apt-cache does not know $META_PKG; running 'apt-get update'"
			apt-get update -qq >&2 || die "apt-get update failed"
			FP=$(apt_fingerprint)
			resolve_kernel || die "cannot resolve the kernel package behind $META_PKG (set TESTHOST_KERNEL_PKG?)"
		else
			die "cannot resolve the kernel package behind $META_PKG: run 'apt-get update' as root (or set TESTHOST_KERNEL_PKG)"
		fi
	fi
	printf '%s\n%s %s\n' "$FP" "$KPKG" "$KVER" >"$C/resolved.tmp.$$"
	mv -f "$C/resolved.tmp.$$" "$C/resolved"
fi

# --- cache key -----------------------------------------------------------------
# Shared libraries of QEMU, nft and ip, as ldd lists them (including the
# dynamic loader).
LIBS=()
for bin in "$QEMU" "$NFT" "$IPROUTE" "$TC" "${CNI_FILES[@]}"; do
	while read -r lib; do
		[[ $lib != MISSING:* ]] || die "ldd $bin: ${lib#MISSING:} not found"
		LIBS+=("$lib")
	done < <(ldd "$bin" | awk '
		/not found/ { print "MISSING:" $1; next }
		$2 == "=>" && $3 ~ /^\// { print $3; next }
		$1 ~ /^\// { print $1 }')
done
mapfile -t LIBS < <(printf '%s\n' "${LIBS[@]}" | LC_ALL=C sort -u)

FW_FILES=()
for f in "${FIRMWARE_REQUIRED[@]}" "${FIRMWARE_OPTIONAL[@]}"; do
	[[ -e $QEMU_DATA/$f ]] && FW_FILES+=("$QEMU_DATA/$f")
done

KEY=$(
	echo "format=1"
	echo "kernel=$KPKG=$KVER"
	echo "modules=${BASE_MODULES[*]} ${EXTRA_MODULES[*]}"
	echo "build.sh=$(sha256sum <"$SELF_DIR/build.sh" | cut -d' ' -f1)"
	echo "init.sh=$(sha256sum <"$SELF_DIR/init.sh" | cut -d' ' -f1)"
	# Inputs copied from the system: name, size, mtime (after symlinks).
	stat -L -c '%n %s %Y' "$QEMU" "$NFT" "$IPROUTE" "$TC" "${CNI_FILES[@]}" "$BUSYBOX" "${FW_FILES[@]}" "${LIBS[@]}"
)

# One build at a time; run.sh takes this lock shared while it reads the outputs.
exec 9>>"$C/.lock"
flock 9

if [[ ${TESTHOST_FORCE:-0} != 1 && -f $C/stamp && -f $C/base.cpio && -f $C/vmlinuz ]] &&
	[[ $(<"$C/stamp") == "$KEY" ]]; then
	log "up to date ($KPKG $KVER)"
	echo "$C"
	exit 0
fi

log "building test host assets for $KPKG $KVER in $C"
rm -rf "$C"/.build.* # leftovers of killed builds (we hold the lock)
WORK=$(mktemp -d "$C/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- kernel package -------------------------------------------------------------
mkdir -p "$C/debs"
DEB=$C/debs/${KPKG}_${KVER}_amd64.deb
if [[ ! -s $DEB ]]; then
	log "downloading $KPKG=$KVER"
	mkdir "$WORK/dl"
	if ! (cd "$WORK/dl" && apt-get download "$KPKG=$KVER") >"$WORK/dl.log" 2>&1; then
		cat "$WORK/dl.log" >&2
		die "apt-get download $KPKG=$KVER failed"
	fi
	dl=("$WORK"/dl/*.deb)
	[[ ${#dl[@]} -eq 1 && -f ${dl[0]} ]] || die "apt-get download produced no single .deb"
	mv "${dl[0]}" "$DEB.tmp"
	mv "$DEB.tmp" "$DEB"
fi
[[ $(dpkg-deb -f "$DEB" Package) == "$KPKG" && $(dpkg-deb -f "$DEB" Version) == "$KVER" ]] ||
	die "$DEB is not $KPKG $KVER (delete it and retry)"
# Keep only the current package.
for old in "$C"/debs/*.deb; do
	[[ $old == "$DEB" ]] || rm -f "$old"
done

log "extracting $(basename "$DEB")"
dpkg-deb -x "$DEB" "$WORK/deb"
kdirs=("$WORK"/deb/lib/modules/*)
[[ ${#kdirs[@]} -eq 1 && -d ${kdirs[0]} ]] || die "expected one lib/modules/<release> in $DEB"
MODDIR=${kdirs[0]}
KREL=${MODDIR##*/}
VMLINUZ=$WORK/deb/boot/vmlinuz-$KREL
KCONFIG=$WORK/deb/boot/config-$KREL
[[ -f $VMLINUZ && -f $KCONFIG ]] || die "vmlinuz-$KREL or config-$KREL missing in $DEB"

# --- kernel config checks ----------------------------------------------------
cfg() { sed -n "s/^CONFIG_$1=//p" "$KCONFIG"; }
for opt in BLK_DEV_INITRD DEVTMPFS TMPFS PROC_FS SYSFS BINFMT_SCRIPT BINFMT_ELF \
	SERIAL_8250 SERIAL_8250_CONSOLE ACPI VIRTUALIZATION; do
	[[ $(cfg "$opt") == y ]] || die "$KREL: CONFIG_$opt is not built in (=$(cfg "$opt"))"
done
[[ $(cfg MODULE_COMPRESS_NONE) == y ]] || log "note: $KREL compresses its modules; they are decompressed for busybox insmod"
# Options that may also be modules: config option -> module name.
WANT_MODULES=()
# TUN: the zones' network interfaces (TAPs the daemon creates). NF_TABLES ..
# NFT_OBJREF: what the daemon's zone network policy uses (ct state, NAT,
# masquerade, reject, named counters); VETH: the tests' outside networks;
# BRIDGE (the CNI bridge plugin) and the ingress qdisc, u32 classifier and
# mirred action: a CNI zone's redirects (sandbox.rs).
for pair in TCG_TPM:tpm TCG_CRB:tpm_crb KVM:kvm KVM_AMD:kvm_amd TUN:tun \
	NF_TABLES:nf_tables NFT_CT:nft_ct NFT_NAT:nft_chain_nat NFT_MASQ:nft_masq \
	NFT_REJECT_INET:nft_reject_inet NFT_OBJREF:nft_objref VETH:veth BRIDGE:bridge \
	NET_SCH_INGRESS:sch_ingress NET_CLS_U32:cls_u32 NET_ACT_MIRRED:act_mirred; do
	opt=${pair%%:*} mod=${pair#*:}
	case $(cfg "$opt") in
	y) log "CONFIG_$opt=y (built in)" ;;
	m) WANT_MODULES+=("$mod") ;;
	*) die "$KREL: CONFIG_$opt is not set" ;;
	esac
done
WANT_MODULES+=("${BASE_MODULES[@]}" "${EXTRA_MODULES[@]}")

# --- modules: resolve dependencies with modinfo ------------------------------------
declare -A MODPATH=() BUILTIN=() SEEN=()
while IFS= read -r -d '' f; do
	n=${f##*/}
	n=${n%%.ko*}
	MODPATH[${n//-/_}]=$f
done < <(find "$MODDIR" -name '*.ko*' -print0)
if [[ -f $MODDIR/modules.builtin ]]; then
	while read -r f; do
		n=${f##*/}
		n=${n%%.ko*}
		BUILTIN[${n//-/_}]=1
	done <"$MODDIR/modules.builtin"
fi
ORDER=()
visit() {
	local n=${1//-/_} dep
	local -a deps
	[[ -z ${SEEN[$n]:-} ]] || return 0
	SEEN[$n]=1
	if [[ -z ${MODPATH[$n]:-} ]]; then
		[[ -n ${BUILTIN[$n]:-} ]] || die "module $n is neither in $KPKG nor built in"
		return 0
	fi
	IFS=, read -ra deps <<<"$(modinfo -F depends "${MODPATH[$n]}")"
	for dep in "${deps[@]}"; do
		[[ -z $dep ]] || visit "$dep"
	done
	ORDER+=("$n")
}
for m in "${WANT_MODULES[@]}"; do
	visit "$m"
done
log "host modules (load order): ${ORDER[*]}"

# --- stage the initramfs ---------------------------------------------------------
S=$WORK/root
mkdir -p "$S"/usr/{bin,sbin,lib,lib64}
# merged /usr, as on Debian 12
ln -s usr/bin "$S/bin"
ln -s usr/sbin "$S/sbin"
ln -s usr/lib "$S/lib"
ln -s usr/lib64 "$S/lib64"
mkdir -p "$S"/{dev,proc,sys,tmp,run,root,etc,mnt,var/tmp} "$S/usr/lib/modules/host" "$S$QEMU_DATA"
chmod 1777 "$S/tmp" "$S/var/tmp"
chmod 0700 "$S/root"
if [[ $EUID -eq 0 ]]; then
	mknod -m 600 "$S/dev/console" c 5 1
	mknod -m 666 "$S/dev/null" c 1 3
fi

# busybox + applet symlinks
cp "$BUSYBOX" "$S/usr/bin/busybox"
while read -r applet; do
	[[ $applet == */* ]] || continue # skips "linuxrc"
	[[ -e $S/$applet || -L $S/$applet ]] || ln -s /usr/bin/busybox "$S/$applet"
done < <("$BUSYBOX" --list-full)
for a in sh mount insmod mkdir cat echo poweroff sleep date ls grep sed head tail dmesg ps kill \
	cp rm mknod wc seq tr awk timeout sync uname free stty setsid cttyhack ip hostname cut; do
	[[ -L $S/bin/$a || -L $S/sbin/$a || -L $S/usr/bin/$a || -L $S/usr/sbin/$a ]] ||
		die "busybox lacks the '$a' applet"
done

# modules (decompressed: busybox insmod loads plain .ko files)
: >"$S/usr/lib/modules/host/load-order"
for n in "${ORDER[@]}"; do
	src=${MODPATH[$n]}
	file=${src##*/}
	file=${file%%.ko*}.ko
	dst=$S/usr/lib/modules/host/$file
	case $src in
	*.ko) cp "$src" "$dst" ;;
	*.ko.xz) need xz xz-utils && xz -dc "$src" >"$dst" ;;
	*.ko.zst) need zstd zstd && zstd -dcq "$src" >"$dst" ;;
	*.ko.gz) need gzip gzip && gzip -dc "$src" >"$dst" ;;
	*) die "unknown module format: $src" ;;
	esac
	echo "$file" >>"$S/usr/lib/modules/host/load-order"
done

# QEMU, nft, ip and tc (over busybox's), their libraries (at the paths ldd gives)
# and QEMU's firmware
cp "$QEMU" "$S/usr/bin/qemu-system-x86_64"
cp "$NFT" "$S/usr/sbin/nft"
rm -f "$S/usr/sbin/ip" "$S/usr/bin/ip"
cp "$IPROUTE" "$S/usr/sbin/ip"
# tc is a busybox applet too: its symlink points at /usr/bin/busybox, and
# cp would follow it (to this machine's busybox) if it were not removed first.
rm -f "$S/usr/sbin/tc" "$S/usr/bin/tc"
cp "$TC" "$S/usr/sbin/tc"
mkdir -p "$S$CNI_DIR"
cp "${CNI_FILES[@]}" "$S$CNI_DIR/"
for lib in "${LIBS[@]}"; do
	mkdir -p "$S$(dirname "$lib")"
	cp -L "$lib" "$S$lib"
done
for f in "${FW_FILES[@]}"; do
	cp -L "$f" "$S$f"
done
ldconfig -r "$S" 2>/dev/null || log "note: ldconfig -r failed; the loader searches its default paths"

# /etc and /init
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$S/etc/passwd"
printf 'root:x:0:\ntty:x:5:\n' >"$S/etc/group"
{
	echo "kernel_package=$KPKG"
	echo "kernel_version=$KVER"
	echo "kernel_release=$KREL"
	echo "key=$(sha256sum <<<"$KEY" | cut -d' ' -f1)"
} >"$S/etc/testhost-release"
install -m 0755 "$SELF_DIR/init.sh" "$S/init"

log "writing base.cpio"
(cd "$S" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
	cpio --quiet -o -H newc -R 0:0 --reproducible) >"$WORK/base.cpio"

# --- install into the cache (stamp last) ------------------------------------------
rm -f "$C/stamp"
cp "$VMLINUZ" "$WORK/vmlinuz"
cp "$KCONFIG" "$WORK/config"
for f in base.cpio vmlinuz config; do
	mv -f "$WORK/$f" "$C/$f"
done
echo "$KREL" >"$C/kernel-release"
cp "$S/usr/lib/modules/host/load-order" "$C/modules.txt"
printf '%s\n' "$KEY" >"$WORK/stamp"
mv -f "$WORK/stamp" "$C/stamp"

log "done: vmlinuz $(stat -c %s "$C/vmlinuz") bytes, base.cpio $(stat -c %s "$C/base.cpio") bytes, kernel $KREL"
echo "$C"
