#!/usr/bin/env bash
# Time to `undecided` when no registry can be reached (issue 12 item 4,
# BENCHMARKS.md "Registry outage"): `replay --resolve` of one unknown digest
# pushed under an image with 20 promoted digests promoted from a source
# registry to 20 destinations, each on its own host, every host
# - refused: a loopback port that was bound, then closed (connection refused)
# - dns:     a name under .invalid (never resolves)
# once with `breaker.failures: 0` (no circuit breaker: the behaviour before
# it existed) and once with the default breaker (2 failures, 10s cool-down). Every other registry
# setting is the default (3 retries, 200ms..10s backoff, 20/s overall and
# 10/s per host). The work directory is removed at the end.
#
# The time is network waits and backoff, not CPU: PROFILE=dev uses the debug
# build instead of building a release one.
#
# Usage: bash benches/scripts/breaker-outage.sh            # both failure kinds
#        MODES=dns bash benches/scripts/breaker-outage.sh  # one of them
set -euo pipefail
cd "$(dirname "$0")/../.."
modes=${MODES:-refused dns}
if [ "${PROFILE:-release}" = dev ]; then
  cargo build --quiet --bin image-auditor
  bin=$PWD/target/debug/image-auditor
else
  cargo build --release --quiet --bin image-auditor
  bin=$PWD/target/release/image-auditor
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

hosts_for() {
  case $1 in
    refused)
      python3 -c '
import socket
socks = [socket.socket() for _ in range(21)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join("127.0.0.1:%d" % s.getsockname()[1] for s in socks))
for s in socks:
    s.close()' ;;
    dns) for i in $(seq 0 20); do printf 'region-%d.registry.invalid ' "$i"; done ;;
  esac
}

for mode in $modes; do
  read -r -a hosts <<<"$(hosts_for "$mode")"
  m=$work/$mode/manifests
  mkdir -p "$m/manifests/demo" "$m/images/demo"
  {
    echo "registries:"
    echo "- name: ${hosts[0]}/staging"
    echo "  src: true"
    for h in "${hosts[@]:1}"; do echo "- name: $h/prod"; done
  } >"$m/manifests/demo/promoter-manifest.yaml"
  {
    echo "- name: app"
    echo "  dmap:"
    for i in $(seq 0 19); do
      echo "    \"sha256:$(printf 'promoted %d' "$i" | sha256sum | cut -d' ' -f1)\": [\"v$i\"]"
    done
  } >"$m/images/demo/images.yaml"
  unknown=$(printf 'pushed while nothing answers' | sha256sum | cut -d' ' -f1)
  echo "{\"action\":\"INSERT\",\"digest\":\"${hosts[1]}/prod/app@sha256:$unknown\"}" >"$work/$mode/event.ndjson"

  for breaker in off default; do
    cfg=$work/$mode/registry-$breaker.yaml
    echo "cache_dir: $work/$mode/cache-$breaker" >"$cfg"
    [ "$breaker" = off ] && printf 'breaker:\n  failures: 0\n' >>"$cfg"
    start=$(date +%s.%N)
    log=$work/$mode/log-$breaker
    out=$("$bin" --manifests "$m" --registry-config "$cfg" replay --resolve "$work/$mode/event.ndjson" 2>"$log" || true)
    end=$(date +%s.%N)
    label=$([ "$breaker" = off ] && echo "no breaker" || echo "default breaker")
    printf '%-8s %-21s %7.2fs  %-10s hosts marked down: %d\n' "$mode" "$label" \
      "$(echo "$end - $start" | bc)" "$(cut -f1 <<<"$out")" "$(grep -c 'marked down' "$log" || true)"
  done
done
