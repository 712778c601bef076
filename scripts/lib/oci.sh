# OCI image archives from a directory tree, with the standard tools (GNU tar,
# gzip, sha256sum): for benchmarks and test payloads (sourced, not run).
# shellcheck shell=bash

# oci_archive ROOT OUT NAME CONFIG PATH...: writes OUT, an OCI image archive
# (the layout `skopeo copy … oci-archive:` writes) with one gzip layer of
# PATH... (relative to ROOT; sorted, owned by root, mtime 0, so the same tree
# gives the same bytes), CONFIG as the image configuration's `config` object
# (JSON: Entrypoint, Cmd, Env, …) and NAME as its ref name. Prints the
# manifest digest.
oci_archive() {
  local root="$1" out="$2" name="$3" config="$4"
  shift 4
  local work
  work="$(mktemp -d)"
  local blobs="$work/layout/blobs/sha256"
  mkdir -p "$blobs"
  _oci_sha() { sha256sum "$1" | cut -d' ' -f1; }
  _oci_blob() { local d; d=$(_oci_sha "$1"); mv "$1" "$blobs/$d"; echo "$d"; }
  tar -C "$root" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$work/layer.tar" "$@"
  gzip -n -c "$work/layer.tar" > "$work/layer.tgz"
  local diff_id layer cfg manifest msize
  diff_id=$(_oci_sha "$work/layer.tar")
  rm -f "$work/layer.tar"
  layer=$(_oci_blob "$work/layer.tgz")
  printf '{"architecture":"amd64","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$config" "$diff_id" > "$work/config.json"
  cfg=$(_oci_blob "$work/config.json")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$cfg" "$(stat -c %s "$blobs/$cfg")" "$layer" "$(stat -c %s "$blobs/$layer")" > "$work/manifest.json"
  msize=$(stat -c %s "$work/manifest.json")
  manifest=$(_oci_blob "$work/manifest.json")
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest" "$msize" "$name" > "$work/layout/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' > "$work/layout/oci-layout"
  tar -C "$work/layout" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$out" oci-layout index.json blobs
  rm -rf "$work"
  echo "sha256:$manifest"
}
