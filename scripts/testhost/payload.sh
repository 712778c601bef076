#!/usr/bin/env bash
# Assembles the test-host payload: what the tests copy into the test host's
# root. Prints the payload directory.
#
#   opt/zone/bin/{zone-vmm,zonectl,zone-guest,        static binaries
#                 zone-bench,vsock-probe}
#   opt/zone/bin/hypervisor-agent                     dynamic (libtss2), with
#   usr/lib/x86_64-linux-gnu/…                        the libraries it needs
#                                                     beyond the base image's, and
#                                                     the TCTI the loader dlopens
#   opt/zone/test-bin/{hypervisor-agent,zone-vmm}     the same with their test hooks
#                                                     (tests that need them put
#                                                     test-bin first in PATH)
#   opt/zone/kernel/vmlinux                         zone kernel (scripts/kernel/build.sh, cached; symbols stripped)
#   opt/zone/images/{base,shell,vsock-test}.cpio    zone images (scripts/images/build.sh)
#   opt/zone/images/oci-test.tar                    an OCI image archive for the image tests (oci-fixture)
#
# and, beside it (`<payload>-spire`, only for the SPIRE tests: ~250 MB more
# initramfs that the other test-host runs need not unpack):
#   opt/spire/bin/{spire-server,zone-attestor-server} SPIRE server (scripts/spire/install.sh,
#                                                     dynamic: its libraries go with it) and our plugin
#   opt/zone/images/spire-agent.cpio                 the SPIRE zone image
#   opt/zone/images/spire-agent-oci.tar              the same files as an OCI image
#                                                     (entrypoint /opt/spire/start.sh)
#   opt/spire/ca/{ca.pem,ca.key}                     the SPIRE server's upstream CA (scripts/spire/ca.sh)
#
# The payload is rebuilt from those outputs every time (a copy; the expensive
# parts are cached by the scripts that make them).
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
# shellcheck source=scripts/lib/oci.sh
source "$ZONE_ROOT/scripts/lib/oci.sh"

for b in zone-vmm zonectl zone-guest zone-bench vsock-probe oci-fixture zone-vmm-under-test; do
  [ -x "$ZONE_BIN_DIR/$b" ] || die "no static $b in $ZONE_BIN_DIR: run scripts/build.sh first"
done
for b in hypervisor-agent hypervisor-agent-under-test; do
  [ -x "$ZONE_HOST_BIN_DIR/$b" ] || die "no $b in $ZONE_HOST_BIN_DIR: run scripts/build.sh first"
done
kernel="$("$ZONE_ROOT/scripts/kernel/build.sh" | tail -n 1)"
[ -f "$kernel" ] || die "scripts/kernel/build.sh did not produce a vmlinux"
"$ZONE_ROOT/scripts/images/build.sh" >&2

payload="${ZONE_TESTHOST_PAYLOAD:-$ZONE_CACHE_DIR/payload}"
tmp="$payload.new"
rm -rf "$tmp"
mkdir -p "$tmp/opt/zone/bin" "$tmp/opt/zone/test-bin" "$tmp/opt/zone/kernel" "$tmp/opt/zone/images"
cp "$ZONE_BIN_DIR"/{zone-vmm,zonectl,zone-guest,zone-bench,vsock-probe} "$tmp/opt/zone/bin/"
cp "$ZONE_HOST_BIN_DIR/hypervisor-agent" "$tmp/opt/zone/bin/"
cp "$ZONE_HOST_BIN_DIR/hypervisor-agent-under-test" "$tmp/opt/zone/test-bin/hypervisor-agent"
cp "$ZONE_BIN_DIR/zone-vmm-under-test" "$tmp/opt/zone/test-bin/zone-vmm"
# Shared libraries of the host binaries, plus the TPM device TCTI that
# libtss2-tctildr dlopens (and its own libraries), at their /usr/lib paths
# (the test host's /lib is a symlink to usr/lib).
tcti=/usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0
[ -e "$tcti" ] || die "$tcti is missing: apt-get install libtss2-tcti-device0 (scripts/setup.sh installs libtss2-dev)"
mkdir -p "$tmp/usr/lib/x86_64-linux-gnu"
for lib in "$tcti" $(ldd "$ZONE_HOST_BIN_DIR/hypervisor-agent" "$tcti" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u); do
  cp -L "$lib" "$tmp/usr/lib/x86_64-linux-gnu/$(basename "$lib")"
done
# Symbols are never loaded: strip them (deterministically) so a launch reads,
# hashes and seals only what boots.
objcopy --strip-all "$kernel" "$tmp/opt/zone/kernel/vmlinux"
chmod 0644 "$tmp/opt/zone/kernel/vmlinux"
for img in "$ZONE_CACHE_DIR"/images/*.cpio; do
  [ "$(basename "$img")" = spire-agent.cpio ] || cp "$img" "$tmp/opt/zone/images/"
done
"$ZONE_BIN_DIR/oci-fixture" /bin/busybox "$tmp/opt/zone/images/oci-test.tar" > /dev/null

spire="$("$ZONE_ROOT/scripts/spire/install.sh")"
stmp="$payload-spire.new"
rm -rf "$stmp"
mkdir -p "$stmp/opt/spire/bin" "$stmp/opt/zone/images" "$stmp/usr/lib/x86_64-linux-gnu"
cp "$spire/spire-server" "$ZONE_BIN_DIR/zone-attestor-server" "$stmp/opt/spire/bin/"
for lib in $(ldd "$spire/spire-server" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u); do
  cp -L "$lib" "$stmp/usr/lib/x86_64-linux-gnu/$(basename "$lib")"
done
cp "$ZONE_CACHE_DIR/images/spire-agent.cpio" "$stmp/opt/zone/images/"
# The SPIRE zone as an OCI image: the initramfs's files as one layer.
tree="$(mktemp -d)"
(cd "$tree" && busybox cpio -i -d -m < "$ZONE_CACHE_DIR/images/spire-agent.cpio" 2> /dev/null)
oci_archive "$tree" "$stmp/opt/zone/images/spire-agent-oci.tar" spire-agent:1 \
  '{"Entrypoint":["/bin/sh","/opt/spire/start.sh"],"Env":["PATH=/bin:/sbin"]}' . > /dev/null
rm -rf "$tree"
# The SPIRE server's upstream CA (its root is the SPIRE zone image's bootstrap bundle).
spire_ca="$("$ZONE_ROOT/scripts/spire/ca.sh")"
mkdir -p "$stmp/opt/spire/ca"
cp "$spire_ca/ca.pem" "$spire_ca/ca.key" "$stmp/opt/spire/ca/"

rm -rf "$payload" "$payload-spire"
mv "$tmp" "$payload"
mv "$stmp" "$payload-spire"
echo "$payload"
