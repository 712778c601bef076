#!/usr/bin/env bash
# Builds the pinned SPIRE v1.15.3 — spire-server (cgo: its sqlite datastore)
# and spire-agent (static, CGO_ENABLED=0: it runs inside zones) — from the Go
# module proxy, into $ZONE_CACHE_DIR/spire/<hash of go.mod, go.sum and the Go
# version>/, and prints that directory. A cached build is reused.
#
# Why a module here instead of `go install github.com/spiffe/spire/cmd/...@v1.15.3`:
# the module proxy these machines reach refuses SPIRE's version list (which
# `go install pkg@version` reads for deprecation notices) and one of SPIRE's
# dependencies at the version SPIRE pins (github.com/Keyfactor/ejbca-go-client-sdk
# v1.1.0, used only by SPIRE's EJBCA UpstreamAuthority, which we do not use).
# go.mod requires exactly spiffe/spire v1.15.3, replaces that one dependency
# with v1.0.2 (the version the proxy serves) and go.sum pins every module.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

need go "golang (Go 1.26 from https://go.dev/dl; Debian's golang-go is too old)"
here="$ZONE_ROOT/scripts/spire"
key=$( (cat "$here/go.mod" "$here/go.sum"; go version) | sha256sum | cut -c1-16)
out="$ZONE_CACHE_DIR/spire/$key"
if [ -x "$out/spire-server" ] && [ -x "$out/spire-agent" ]; then
  echo "$out"
  exit 0
fi
tmp="$out.new"
rm -rf "$tmp"
mkdir -p "$tmp"
log "spire: building spire-server and spire-agent v1.15.3 (a few minutes on 2 cores)"
(
  cd "$here"
  export GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN=local
  # Stripped (-s -w): half the size, for the test host and the zone image.
  CGO_ENABLED=1 go build -ldflags "-s -w" -o "$tmp/spire-server" github.com/spiffe/spire/cmd/spire-server
  CGO_ENABLED=0 go build -ldflags "-s -w" -o "$tmp/spire-agent" github.com/spiffe/spire/cmd/spire-agent
) >&2
rm -rf "$out"
mv "$tmp" "$out"
echo "$out"
