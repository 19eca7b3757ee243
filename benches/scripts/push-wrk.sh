#!/usr/bin/env bash
# docs/design.md §10: POST /pubsub/push of `serve` vs a minimal axum handler that
# answers 204, both under the same keep-alive wrk load on this machine.
#
#   bash benches/scripts/push-wrk.sh                 # 10 s per server at 16, 64 and 256 connections
#   DURATION=30s CONNECTIONS="64" bash benches/scripts/push-wrk.sh
#   VERDICT=unpromoted bash benches/scripts/push-wrk.sh   # every request is a finding
#   EXTRA_BINS=/tmp/old-image-auditor bash benches/scripts/push-wrk.sh   # before/after in one run
#   LOG_FILTERS=warn bash benches/scripts/push-wrk.sh     # only without the per-event log line
#   STORE=postgres bash benches/scripts/push-wrk.sh       # the store on PostgreSQL instead of SQLite
#   STORE="sqlite postgres" bash benches/scripts/push-wrk.sh   # both, beside each other in one run
#   CPU=1 bash benches/scripts/push-wrk.sh            # also the server's CPU per request, by thread
#
# CONNECTIONS is a list: for each count the baseline and every serve run
# under the same load, one after the other (Pub/Sub push opens many
# connections at once, so 16 alone flatters nobody). serve runs on the
# embedded k8s.io fixtures with a findings store in a temporary directory;
# each request has a fresh messageId, so each one is a decision committed to
# the store (and, for unpromoted, a finding) before 200.
#
# STORE is a list of `sqlite` (default: a file in the temporary directory)
# and `postgres`: one PostgreSQL server for the whole run, started the way
# benches/scripts/soak-replicas.py starts it (its `Postgres` class is
# imported: initdb in a temporary directory, a free loopback port, run as an
# unprivileged user when we are root, fsync on as in production), with a
# fresh database for each serve run; `serve` reaches it through
# `store: {postgres: {url_env: …}}` with the default pool.
#
# With CPU=1 each summary line also gives the server's CPU time per
# request over the wrk run, by thread name (tokio-rt-worker, sqlite-writer,
# …), read from /proc/<pid>/task/*/stat before and after: the baseline's
# figure is what the HTTP stack alone costs on this machine.
#
# Needs wrk (Debian package `wrk`: apt-get install wrk), curl, python3,
# sqlite3 and, for STORE=postgres, postgresql; a release build is made first.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16 64 256}
THREADS=${THREADS:-1}
VERDICT=${VERDICT:-promoted}
STORE=${STORE:-sqlite}
for store in $STORE; do
  case "$store" in sqlite|postgres) ;; *) echo "STORE is a list of sqlite and postgres" >&2; exit 2 ;; esac
done
R=us-central1-docker.pkg.dev/k8s-artifacts-prod/images
D=sha256:4ad90a11b55313b182afc186b9876c8e891531b8db4c9bf1541953021618d0e2
case "$VERDICT" in
  promoted) PAYLOAD="{\"action\":\"INSERT\",\"digest\":\"$R/etcd@$D\",\"tag\":\"$R/etcd:3.4.13-0\"}" ;;
  unpromoted) PAYLOAD="{\"action\":\"INSERT\",\"digest\":\"$R/etcd@sha256:$(printf '%064d' 7)\"}" ;;
  *) echo "VERDICT is promoted or unpromoted" >&2; exit 2 ;;
esac
export DATA=$(printf '%s' "$PAYLOAD" | base64 -w0)

cargo build --release --locked --bin image-auditor --example minimal_axum >&2
release=${CARGO_TARGET_DIR:-target}/release
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 300); do curl -fsS -o /dev/null "http://127.0.0.1:$1$2" 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not up" >&2; exit 1; }

work=$(mktemp -d)
pids=()
pg_state=""
# pg COMMAND [ARG]: soak-replicas.py's PostgreSQL helper. `start` starts a
# server and saves its state in $work/pg.json; `createdb NAME`, `decisions
# NAME` (the count) and `remove` (stop it, delete its directory) use it.
pg() {
  python3 - "$work/pg.json" "$@" <<'PY'
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("soak_replicas", "benches/scripts/soak-replicas.py")
soak_replicas = importlib.util.module_from_spec(spec)
spec.loader.exec_module(soak_replicas)
state, command, *args = sys.argv[1:]
if command == "start":
    server = soak_replicas.Postgres()
    server.start()
    with open(state, "w") as f:
        json.dump(server.__dict__, f)
    print(server.port)
    sys.exit(0)
server = object.__new__(soak_replicas.Postgres)
with open(state) as f:
    server.__dict__.update(json.load(f))
if command == "createdb":
    server.psql("postgres", f"CREATE DATABASE {args[0]}")
elif command == "decisions":
    print(server.psql(args[0], "SELECT count(*) FROM decisions")[0][0])
elif command == "remove":
    server.remove()
PY
}
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -z "$pg_state" ] || pg remove || true
  rm -rf "$work"
}
trap cleanup EXIT

if [[ " $STORE " == *" postgres "* ]]; then
  pg_port=$(pg start)
  pg_state=$work/pg.json
  echo "== PostgreSQL on 127.0.0.1:$pg_port" >&2
fi
databases=0

# run_wrk PORT: the load at the current connection count ($c).
run_wrk() { wrk -t"$THREADS" -c"$c" -d"$DURATION" --latency -s benches/scripts/push.lua "http://127.0.0.1:$1"; }

# cpu_ticks PID: "thread-name ticks" per thread name (user + system clock
# ticks so far, threads of one name summed).
cpu_ticks() {
  for t in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(tr ' ' _ <"$t/comm")" "$(awk '{print $14 + $15}' "$t/stat")"
  done | awk '{n[$1] += $2} END {for (k in n) print k, n[k]}' | sort
}
# cpu_per_request BEFORE AFTER REQUESTS: " cpu_us_per_req: name=µs …" for
# the threads that ran (empty unless CPU=1).
cpu_per_request() {
  [ "${CPU:-}" = 1 ] || return 0
  local hz; hz=$(getconf CLK_TCK)
  printf ' cpu_us_per_req:'
  join <(printf '%s\n' "$1") <(printf '%s\n' "$2") |
    awk -v n="$3" -v hz="$hz" '$3 > $2 {t += $3 - $2; printf " %s=%.1f", $1, ($3 - $2) * 1e6 / hz / n}
      END {printf " total=%.1f", t * 1e6 / hz / n}'
}
# requests OUT: how many requests wrk completed.
requests() { awk '/requests in/ {print $1}' <<<"$1"; }

base_port=$(free_port)
"$release/examples/minimal_axum" "127.0.0.1:$base_port" & base_pid=$!; pids+=($base_pid)
# The minimal handler has no GET route: any HTTP answer means it is up.
for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$base_port/" && break; sleep 0.1; done

rps() { awk '/^Requests\/sec/ {print $2}' <<<"$1"; }
p99() { sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p' <<<"$1"; }
# Answers other than 2xx (a 503 is cheap and would flatter the rate).
non2xx() { awk '/Non-2xx/ {n=$NF} END {print n+0}' <<<"$1"; }

# serve BINARY LOG_FILTER STORE: a fresh store each time (a new SQLite file
# or a new PostgreSQL database); the decision log (one JSON line per event
# at `info`) goes to a file, as in a container.
serve() {
  local bin=$1 filter=$2 store=$3 port dir db="" store_yaml=""
  port=$(free_port)
  dir=$(mktemp -d -p "$work")
  if [ "$store" = postgres ]; then
    databases=$((databases + 1))
    db=bench_$databases
    pg createdb "$db"
    store_yaml=$'store:\n  postgres:\n    url_env: PUSH_WRK_DATABASE_URL\n'
  fi
  cat >"$dir/config.yaml" <<YAML
${store_yaml}data_dir: $dir/data
http:
  listen: 127.0.0.1:$port
log:
  filter: $filter
YAML
  PUSH_WRK_DATABASE_URL="host=127.0.0.1 port=${pg_port:-0} user=postgres dbname=$db" \
    "$bin" serve --config "$dir/config.yaml" >"$dir/serve.log" 2>&1 & local pid=$!
  pids+=($pid)
  wait_up "$port" /readyz
  echo "== c=$c $bin serve, store $store, log $filter, every request a $VERDICT decision"
  local before after out
  before=$(cpu_ticks "$pid"); out=$(run_wrk "$port"); after=$(cpu_ticks "$pid"); echo "$out"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local decided
  if [ "$store" = postgres ]; then
    decided=$(pg decisions "$db" 2>/dev/null || echo '?')
  else
    decided=$(sqlite3 "$dir/data/findings.sqlite" 'select count(*) from decisions' 2>/dev/null || echo '?')
  fi
  summary+="c=$c $bin store=$store log=$filter: serve_rps=$(rps "$out") ratio=$(python3 -c "print(round($(rps "$out")/$(rps "$base_out"),3))") serve_p99_ms=$(p99 "$out") non_2xx=$(non2xx "$out") decisions_recorded=$decided$(cpu_per_request "$before" "$after" "$(requests "$out")")"$'\n'
}

summary=""
for c in $CONNECTIONS; do
  echo "== c=$c minimal axum (204)"
  before=$(cpu_ticks "$base_pid"); base_out=$(run_wrk "$base_port"); after=$(cpu_ticks "$base_pid")
  echo "$base_out"
  summary+="c=$c baseline_rps=$(rps "$base_out") baseline_p99_ms=$(p99 "$base_out")$(cpu_per_request "$before" "$after" "$(requests "$base_out")")"$'\n'
  for bin in "$release/image-auditor" ${EXTRA_BINS:-}; do
    for store in $STORE; do
      for filter in ${LOG_FILTERS:-warn info}; do serve "$bin" "$filter" "$store"; done
    done
  done
done
echo
printf '%s' "$summary"
