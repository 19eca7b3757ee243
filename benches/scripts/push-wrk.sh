#!/usr/bin/env bash
# docs/design.md §10: POST /pubsub/push of `serve` vs a minimal axum handler that
# answers 204, both under the same keep-alive wrk load on this machine.
#
#   bash benches/scripts/push-wrk.sh                 # 10 s per server at 16, 64 and 256 connections
#   DURATION=30s CONNECTIONS="64" bash benches/scripts/push-wrk.sh
#   VERDICT=unpromoted bash benches/scripts/push-wrk.sh   # every request is a finding
#   EXTRA_BINS=/tmp/old-image-auditor bash benches/scripts/push-wrk.sh   # before/after in one run
#   LOG_FILTERS=warn bash benches/scripts/push-wrk.sh     # only without the per-event log line
#
# CONNECTIONS is a list: for each count the baseline and every serve run
# under the same load, one after the other (Pub/Sub push opens many
# connections at once, so 16 alone flatters nobody). serve runs on the
# embedded k8s.io fixtures with a findings store in a temporary directory;
# each request has a fresh messageId, so each one is a decision committed to
# SQLite (and, for unpromoted, a finding) before 200.
#
# Needs wrk (Debian package `wrk`: apt-get install wrk), curl, python3 and
# sqlite3; a release build is made first.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16 64 256}
THREADS=${THREADS:-1}
VERDICT=${VERDICT:-promoted}
R=us-central1-docker.pkg.dev/k8s-artifacts-prod/images
D=sha256:4ad90a11b55313b182afc186b9876c8e891531b8db4c9bf1541953021618d0e2
case "$VERDICT" in
  promoted) PAYLOAD="{\"action\":\"INSERT\",\"digest\":\"$R/etcd@$D\",\"tag\":\"$R/etcd:3.4.13-0\"}" ;;
  unpromoted) PAYLOAD="{\"action\":\"INSERT\",\"digest\":\"$R/etcd@sha256:$(printf '%064d' 7)\"}" ;;
  *) echo "VERDICT is promoted or unpromoted" >&2; exit 2 ;;
esac
export DATA=$(printf '%s' "$PAYLOAD" | base64 -w0)

cargo build --release --locked --bin image-auditor --example minimal_axum >&2
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 300); do curl -fsS -o /dev/null "http://127.0.0.1:$1$2" 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not up" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# run_wrk PORT: the load at the current connection count ($c).
run_wrk() { wrk -t"$THREADS" -c"$c" -d"$DURATION" --latency -s benches/scripts/push.lua "http://127.0.0.1:$1"; }

base_port=$(free_port)
target/release/examples/minimal_axum "127.0.0.1:$base_port" & pids+=($!)
# The minimal handler has no GET route: any HTTP answer means it is up.
for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$base_port/" && break; sleep 0.1; done

rps() { awk '/^Requests\/sec/ {print $2}' <<<"$1"; }
p99() { sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p' <<<"$1"; }
# Answers other than 2xx (a 503 is cheap and would flatter the rate).
non2xx() { awk '/Non-2xx/ {n=$NF} END {print n+0}' <<<"$1"; }

# serve BINARY LOG_FILTER: a fresh store each time; the decision log (one
# JSON line per event at `info`) goes to a file, as in a container.
serve() {
  local bin=$1 filter=$2 port dir
  port=$(free_port)
  dir=$(mktemp -d -p "$work")
  cat >"$dir/config.yaml" <<YAML
data_dir: $dir/data
http:
  listen: 127.0.0.1:$port
log:
  filter: $filter
YAML
  "$bin" serve --config "$dir/config.yaml" >"$dir/serve.log" 2>&1 & local pid=$!
  pids+=($pid)
  wait_up "$port" /readyz
  echo "== c=$c $bin serve, log $filter, every request a $VERDICT decision"
  local out; out=$(run_wrk "$port"); echo "$out"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local decided; decided=$(sqlite3 "$dir/data/findings.sqlite" 'select count(*) from decisions' 2>/dev/null || echo '?')
  summary+="c=$c $bin log=$filter: serve_rps=$(rps "$out") ratio=$(python3 -c "print(round($(rps "$out")/$(rps "$base_out"),3))") serve_p99_ms=$(p99 "$out") non_2xx=$(non2xx "$out") decisions_recorded=$decided"$'\n'
}

summary=""
for c in $CONNECTIONS; do
  echo "== c=$c minimal axum (204)"
  base_out=$(run_wrk "$base_port"); echo "$base_out"
  summary+="c=$c baseline_rps=$(rps "$base_out") baseline_p99_ms=$(p99 "$base_out")"$'\n'
  for bin in target/release/image-auditor ${EXTRA_BINS:-}; do
    for filter in ${LOG_FILTERS:-warn info}; do serve "$bin" "$filter"; done
  done
done
echo
printf '%s' "$summary"
