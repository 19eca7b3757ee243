#!/usr/bin/env bash
# Registry requests of resolution, cold vs warm (issue 3, BENCHMARKS.md
# "Registry requests (resolution)"): starts a real docker-registry on a
# loopback port, pushes the fixture of tests/resolve_real.rs with skopeo, and
# runs `index resolve --json` twice on one cache directory. The registry is
# stopped and the work directory removed at the end.
#
# The fixture, COPIES times (image names get a -<n> suffix): `single` (one
# image), `multi` (a two-platform OCI index + one image), `list` (the same as
# a Docker manifest list, --format v2s2), `nested` (an index of an index),
# `legacy` (an index that only the prod-eu destination has). Per copy: 6
# promoted digests, 5 lists, 10 children, 9 manifest GETs when cold.
#
# Usage: bash benches/scripts/resolve-cold-warm.sh            # the test fixture
#        COPIES=20 bash benches/scripts/resolve-cold-warm.sh  # 20 copies of it
# Needs docker-registry, skopeo, curl (scripts/install-test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
copies=${COPIES:-1}
cargo build --release --quiet --bin image-auditor
bin=$PWD/target/release/image-auditor

work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# --- registry: a random free-looking port, retried if another process has it
for _ in 1 2 3 4 5; do
  port=$((20000 + RANDOM % 40000))
  cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/storage
http:
  addr: 127.0.0.1:$port
  secret: bench-only-secret
EOF
  /usr/bin/docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do
    if curl -fs "http://127.0.0.1:$port/v2/" >/dev/null; then break 2; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=
done
[ -n "$pid" ] || { cat "$work/registry.log"; echo "docker-registry did not start" >&2; exit 2; }
host=127.0.0.1:$port

# --- an OCI layout written by hand: tiny random layers, so digests are fresh
L=$work/layout
mkdir -p "$L/blobs/sha256"
echo '{"imageLayoutVersion":"1.0.0"}' >"$L/oci-layout"
refs=()
blob() { # stdin -> the blob's sha256 hex
  local tmp h
  tmp=$(mktemp "$work/blob.XXXXXX")
  cat >"$tmp"
  h=$(sha256sum "$tmp" | cut -d' ' -f1)
  mv "$tmp" "$L/blobs/sha256/$h"
  echo "$h"
}
desc() { # media type, hex -> descriptor JSON
  printf '{"mediaType":"%s","digest":"sha256:%s","size":%d}' "$1" "$2" "$(stat -c %s "$L/blobs/sha256/$2")"
}
OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
OCI_INDEX=application/vnd.oci.image.index.v1+json
image() { # arch -> manifest hex
  local d layer diff config
  d=$(mktemp -d "$work/layer.XXXXXX")
  head -c 32 /dev/urandom >"$d/random.bin"
  tar -C "$d" -cf "$d/layer.tar" random.bin
  diff=$(sha256sum "$d/layer.tar" | cut -d' ' -f1)
  layer=$(gzip -nc "$d/layer.tar" | blob)
  rm -rf "$d"
  config=$(printf '{"architecture":"%s","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$1" "$diff" | blob)
  printf '{"schemaVersion":2,"mediaType":"%s","config":%s,"layers":[%s]}' "$OCI_MANIFEST" \
    "$(desc application/vnd.oci.image.config.v1+json "$config")" \
    "$(desc application/vnd.oci.image.layer.v1.tar+gzip "$layer")" | blob
}
index() { # "type:hex:os/arch" ... -> index hex
  local entries=() e t h p
  for e in "$@"; do
    IFS=: read -r t h p <<<"$e"
    e=$(desc "$t" "$h")
    [ -z "$p" ] || e="${e%\}},\"platform\":{\"os\":\"${p%/*}\",\"architecture\":\"${p#*/}\"}}"
    entries+=("$e")
  done
  printf '{"schemaVersion":2,"mediaType":"%s","manifests":[%s]}' "$OCI_INDEX" "$(IFS=,; echo "${entries[*]}")" | blob
}
two_platform() {
  index "$OCI_MANIFEST:$(image amd64):linux/amd64" "$OCI_MANIFEST:$(image arm64):linux/arm64"
}
tag() { # media type, hex, tag
  refs+=("$(desc "$1" "$2" | sed "s/}\$/,\"annotations\":{\"org.opencontainers.image.ref.name\":\"$3\"}}/")")
  printf '{"schemaVersion":2,"mediaType":"%s","manifests":[%s]}' "$OCI_INDEX" "$(IFS=,; echo "${refs[*]}")" >"$L/index.json"
}
push() { # tag, repo, [skopeo options]
  local t=$1 repo=$2
  shift 2
  skopeo copy --quiet --all --dest-tls-verify=false "$@" --digestfile "$work/digest" \
    "oci:$L:$t" "docker://$host/$repo:$t"
  cat "$work/digest"
}

# --- the fixture, promoted by one thin-layout project
M=$work/manifests
mkdir -p "$M/manifests/demo" "$M/images/demo"
printf 'registries:\n- name: %s/staging\n  src: true\n- name: %s/prod-us\n- name: %s/prod-eu\n' \
  "$host" "$host" "$host" >"$M/manifests/demo/promoter-manifest.yaml"
images=$M/images/demo/images.yaml
: >"$images"
for n in $(seq "$copies"); do
  single=$(image amd64); tag "$OCI_MANIFEST" "$single" "single-$n"
  multi=$(two_platform); tag "$OCI_INDEX" "$multi" "multi-$n"
  multi2=$(image amd64); tag "$OCI_MANIFEST" "$multi2" "multi2-$n"
  list=$(two_platform); tag "$OCI_INDEX" "$list" "list-$n"
  inner=$(two_platform); tag "$OCI_INDEX" "$inner" "inner-$n"
  s390x=$(image s390x); tag "$OCI_MANIFEST" "$s390x" "s390x-$n"
  outer=$(index "$OCI_INDEX:$inner:" "$OCI_MANIFEST:$s390x:linux/s390x")
  legacy=$(two_platform); tag "$OCI_INDEX" "$legacy" "legacy-$n"

  push "single-$n" "staging/single-$n" --preserve-digests >/dev/null
  push "multi-$n" "staging/multi-$n" --preserve-digests >/dev/null
  push "multi2-$n" "staging/multi-$n" --preserve-digests >/dev/null
  list=$(push "list-$n" "staging/list-$n" --format v2s2)
  push "inner-$n" "staging/nested-$n" --preserve-digests >/dev/null
  push "s390x-$n" "staging/nested-$n" --preserve-digests >/dev/null
  # skopeo 1.9 refuses an index of an index: PUT it as it is.
  curl -fsS -X PUT -H "Content-Type: $OCI_INDEX" --data-binary "@$L/blobs/sha256/$outer" \
    "http://$host/v2/staging/nested-$n/manifests/outer" >/dev/null
  push "legacy-$n" "prod-eu/legacy-$n" --preserve-digests >/dev/null

  cat >>"$images" <<EOF
- name: single-$n
  dmap:
    "sha256:$single": ["1.0"]
- name: multi-$n
  dmap:
    "sha256:$multi": ["1.0"]
    "sha256:$multi2": ["2.0"]
- name: list-$n
  dmap:
    "$list": ["1.0"]
- name: nested-$n
  dmap:
    "sha256:$outer": ["1.0"]
- name: legacy-$n
  dmap:
    "sha256:$legacy": ["0.9"]
EOF
done

# Default budgets (20 requests/s overall, 10/s per host): the figures are what
# an operator gets out of the box.
printf 'insecure_http_hosts: ["127.0.0.1"]\ncache_dir: %s\n' "$work/cache" >"$work/registry-config.yaml"
for run in cold warm; do
  printf '%s: ' "$run"
  (cd "$work" && "$bin" --manifests "$M" --registry-config "$work/registry-config.yaml" index resolve --json)
done
