#!/usr/bin/env bash
# Build the zone kernel (an uncompressed ELF vmlinux with the PVH entry note)
# from Debian's linux-source-6.1 and kernel-config/zone-x86_64-6.1.config,
# and cache it.
#
# Usage: scripts/kernel/build.sh [--print-key | --check | --help]
#
#   (no option)   print the path of the cached vmlinux, building it first if
#                 it is not cached yet. The path is the last line of stdout;
#                 all progress goes to stderr.
#   --print-key   print the cache key and exit.
#   --check       exit 0 if the vmlinux for the current key is cached, else 1.
#
# Cache: ${ZONE_CACHE_DIR:-/var/cache/zone-attestor}/kernel/<key>/{vmlinux,.config}
# key = sha256 over (sha256 of the config fragment, the installed
# linux-source-6.1 package version, sha256 of this script). A cached vmlinux is
# never rebuilt; change one of the three inputs to get a new one.
#
# Work areas under the same root: kernel/src-<version>/ (the extracted source,
# extracted once and reused) and kernel/build-<key>/ (the out-of-tree build
# directory; kept after a failed build so that a rerun is incremental, removed
# after a successful one).
set -euo pipefail

readonly SOURCE_PKG=linux-source-6.1
readonly SOURCE_TARBALL=/usr/src/linux-source-6.1.tar.xz
readonly APT_PACKAGES="linux-source-6.1 flex bison bc libelf-dev gcc make binutils xz-utils util-linux"

script_path=$(readlink -f "${BASH_SOURCE[0]}")
repo_root=$(cd "$(dirname "$script_path")/../.." && pwd)
readonly script_path repo_root
readonly fragment="$repo_root/kernel-config/zone-x86_64-6.1.config"
readonly cache_root="${ZONE_CACHE_DIR:-/var/cache/zone-attestor}"
readonly kernel_cache="$cache_root/kernel"

# Fixed build metadata, so that the banner ("Linux version ... #1 ...") and
# therefore the vmlinux digest do not depend on who built it, where or when.
export KBUILD_BUILD_USER=zone
export KBUILD_BUILD_HOST=zone-attestor
export KBUILD_BUILD_VERSION=1
export KBUILD_BUILD_TIMESTAMP="Thu Jan  1 00:00:00 UTC 1970"
export LC_ALL=C

log() { printf 'kernel/build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
	sed -n '2,/^set -euo pipefail$/{/^#/s/^# \{0,1\}//p}' "$script_path"
}

prereq_hint() {
	printf 'run scripts/setup.sh, or: apt-get install -y %s' "$APT_PACKAGES"
}

source_version() {
	local version
	if ! version=$(dpkg-query -W -f='${Version}' "$SOURCE_PKG" 2>/dev/null) || [[ -z $version ]]; then
		die "$SOURCE_PKG is not installed; $(prereq_hint)"
	fi
	printf '%s\n' "$version"
}

cache_key() {
	local version=$1
	[[ -f $fragment ]] || die "config fragment not found: $fragment"
	{
		printf 'fragment %s\n' "$(sha256sum <"$fragment" | cut -d' ' -f1)"
		printf '%s %s\n' "$SOURCE_PKG" "$version"
		printf 'build.sh %s\n' "$(sha256sum <"$script_path" | cut -d' ' -f1)"
	} | sha256sum | cut -d' ' -f1
}

check_build_prereqs() {
	local missing=() cmd
	[[ -f $SOURCE_TARBALL ]] || missing+=("$SOURCE_TARBALL ($SOURCE_PKG)")
	for cmd in flex bison bc gcc make ld readelf xz flock sha256sum tar; do
		command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
	done
	# objtool (x86_64) links against libelf.
	if [[ $(dpkg-query -W -f='${Status}' libelf-dev 2>/dev/null) != "install ok installed" ]]; then
		missing+=("libelf-dev")
	fi
	if ((${#missing[@]} > 0)); then
		die "missing build prerequisites: ${missing[*]}; $(prereq_hint)"
	fi
}

# Extract the source tarball once into $kernel_cache/src-<version>; sets src_dir.
src_dir=
ensure_source() {
	local version=$1 tmp
	src_dir="$kernel_cache/src-${version//[^A-Za-z0-9.+_-]/_}"
	if [[ ! -f $src_dir/Makefile ]]; then
		log "extracting $SOURCE_TARBALL into $src_dir"
		tmp=$(mktemp -d "$kernel_cache/.src-tmp.XXXXXX")
		cleanup_paths+=("$tmp")
		tar -xJf "$SOURCE_TARBALL" -C "$tmp" --strip-components=1
		rm -rf "$src_dir"
		mv -T "$tmp" "$src_dir"
	fi
}

# Every "CONFIG_X=..." line of the fragment must appear verbatim in the
# .config, and every "# CONFIG_X is not set" symbol must not be set there.
verify_config() {
	local config=$1 line sym bad=()
	while IFS= read -r line; do
		if [[ $line =~ ^CONFIG_[A-Za-z0-9_]+= ]]; then
			grep -qxF -- "$line" "$config" || bad+=("$line (got: $(grep -E "^(# )?${line%%=*}[= ]" "$config" || echo 'absent'))")
		elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
			sym=${BASH_REMATCH[1]}
			if grep -qE "^${sym}=" "$config"; then
				bad+=("$line (got: $(grep -E "^${sym}=" "$config"))")
			fi
		fi
	done <"$fragment"
	if ((${#bad[@]} > 0)); then
		log "these fragment lines did not stick after allnoconfig (a dependency or menu parent is missing):"
		printf '  %s\n' "${bad[@]}" >&2
		die "config check failed for $config"
	fi
	log "config check passed: every symbol of the fragment is as requested"
}

# The PVH entry point is announced by an ELF note of owner "Xen" and type
# XEN_ELFNOTE_PHYS32_ENTRY (0x12).
verify_pvh_note() {
	local vmlinux=$1
	# binutils prints the type as "Unknown note type: (0x00000012)".
	if ! readelf -n -W "$vmlinux" | awk '$1 == "Xen" && /\(0x0*12\)|PHYS32_ENTRY/ { found = 1 } END { exit !found }'; then
		die "$vmlinux has no PVH note (Xen, XEN_ELFNOTE_PHYS32_ENTRY); is CONFIG_PVH set?"
	fi
	log "PVH note present (Xen XEN_ELFNOTE_PHYS32_ENTRY)"
}

cleanup_paths=()
cleanup() {
	local p
	for p in "${cleanup_paths[@]}"; do
		rm -rf -- "$p"
	done
}

build() {
	local version=$1 key=$2 out=$3 src build tmp start
	ensure_source "$version"
	src=$src_dir
	build="$kernel_cache/build-$key"
	mkdir -p "$build"
	start=$SECONDS

	log "configuring in $build (allnoconfig + $fragment)"
	make -C "$src" O="$build" ARCH=x86 KCONFIG_ALLCONFIG="$fragment" allnoconfig >&2
	verify_config "$build/.config"

	log "building vmlinux with $(nproc) jobs (a few minutes)"
	make -C "$src" O="$build" ARCH=x86 -j"$(nproc)" vmlinux >&2
	verify_pvh_note "$build/vmlinux"
	log "built in $((SECONDS - start)) s"

	tmp=$(mktemp -d "$kernel_cache/.out-tmp.XXXXXX")
	cleanup_paths+=("$tmp")
	cp "$build/vmlinux" "$tmp/vmlinux"
	cp "$build/.config" "$tmp/.config"
	chmod 0444 "$tmp/vmlinux" "$tmp/.config"
	chmod 0755 "$tmp"
	sync -f "$tmp/vmlinux" 2>/dev/null || true
	if ! mv -T "$tmp" "$out" 2>/dev/null; then
		[[ -f $out/vmlinux ]] || die "could not move the result into $out"
		log "$out appeared meanwhile; keeping it"
	fi
	rm -rf "$build"
}

main() {
	local mode=build
	case "${1:-}" in
	"") ;;
	--print-key) mode=print-key ;;
	--check) mode=check ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
	(($# <= 1)) || die "expected at most one argument"

	local version key out
	version=$(source_version)
	key=$(cache_key "$version")
	out="$kernel_cache/$key"

	case $mode in
	print-key)
		printf '%s\n' "$key"
		exit 0
		;;
	check)
		[[ -f $out/vmlinux ]] && exit 0
		exit 1
		;;
	esac

	# Fast path: never touch a cached kernel.
	if [[ -f $out/vmlinux ]]; then
		printf '%s\n' "$out/vmlinux"
		exit 0
	fi

	check_build_prereqs
	mkdir -p "$kernel_cache" || die "cannot create $kernel_cache; set ZONE_CACHE_DIR to a writable directory"
	trap cleanup EXIT
	# One build at a time per cache (they share the extracted source).
	exec 9>"$kernel_cache/.lock"
	flock 9
	if [[ -f $out/vmlinux ]]; then
		printf '%s\n' "$out/vmlinux"
		exit 0
	fi

	log "building kernel $key ($SOURCE_PKG $version)"
	build "$version" "$key" "$out"
	printf '%s\n' "$out/vmlinux"
}

main "$@"
