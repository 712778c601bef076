#!/usr/bin/env bash
# The SPIRE upstream CA the tests and demos use (trust domain example.org):
# an ECDSA P-256 root made once per machine into $ZONE_CACHE_DIR/spire-ca/
# (ca.pem, ca.key; reused after that), and prints that directory.
#
# spire-server signs with it through its `disk` UpstreamAuthority, so the
# root is in the trust bundle for good; the SPIRE zone image carries ca.pem
# as spire-agent's bootstrap bundle (trust_bundle_path), which makes the
# server the agent trusts part of the zone's measured initramfs. A
# production deployment uses its own CA the same way.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

need openssl openssl
out="$ZONE_CACHE_DIR/spire-ca"
if [ -s "$out/ca.pem" ] && [ -s "$out/ca.key" ]; then
  echo "$out"
  exit 0
fi
tmp="$out.new"
rm -rf "$tmp"
mkdir -p "$tmp"
chmod 0700 "$tmp"
log "spire: creating the upstream CA for example.org"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 -days 3650 \
  -subj "/O=zone attestor test/CN=example.org upstream CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -addext "subjectAltName=URI:spiffe://example.org" \
  -keyout "$tmp/ca.key" -out "$tmp/ca.pem" 2> "$tmp/openssl.log" || { cat "$tmp/openssl.log" >&2; die "openssl could not create the CA"; }
rm -f "$tmp/openssl.log"
rm -rf "$out"
mv "$tmp" "$out"
echo "$out"
