#!/usr/bin/env bash
# Idle shutdown latency: SIGTERM to exit with no traffic and no drain delay, for the example
# service (lifecycle: HTTP server, SQLite pool, schema, job worker), plain axum::serve with the
# usual signal handler, and tokio-graceful-shutdown (examples/baselines), in one run,
# alternating, RUNS times each (default 20). Prints the median and the 90th percentile.
#
# Usage: scripts/bench-idle-shutdown.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}

cargo build --release -q -p example-service -p baselines
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
port=$((30000 + RANDOM % 10000))

# once NAME COMMAND...: starts it, waits for /livez, sends SIGTERM, prints the ms until exit.
once() {
  local name=$1; shift
  "$@" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 400); do
    curl -fs "http://127.0.0.1:$port/livez" >/dev/null 2>&1 && break
    sleep 0.025
  done
  local t0 t1
  t0=$(date +%s%N)
  kill -TERM "$pid"
  wait "$pid" || true
  t1=$(date +%s%N)
  echo "$name $(( (t1 - t0) / 1000 ))" >>"$work/times"
}

for _ in $(seq "$runs"); do
  once lifecycle env RUST_LOG=off target/release/example-service --listen "127.0.0.1:$port" \
    --database-url "sqlite://$work/service.db?mode=rwc"
  once axum target/release/baseline-axum "127.0.0.1:$port"
  once tokio-graceful-shutdown target/release/baseline-tgs "127.0.0.1:$port"
done

echo "SIGTERM to exit, idle, drain delay 0, $runs runs each (ms):"
printf '%-26s %8s %8s %8s\n' server median p90 max
for name in lifecycle axum tokio-graceful-shutdown; do
  awk -v n="$name" '$1 == n { print $2 / 1000 }' "$work/times" | sort -n | awk -v n="$name" '
    { v[NR] = $1 }
    END { printf "%-26s %8.2f %8.2f %8.2f\n", n, v[int((NR + 1) / 2)], v[int(NR * 0.9 + 0.5)], v[NR] }'
done
