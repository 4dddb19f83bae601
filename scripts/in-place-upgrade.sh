#!/usr/bin/env bash
# In-place upgrades, measured: one instance of the example service on one port, no load
# balancer, constant keep-alive load from wrk, and three SIGHUP upgrades in a row: each starts
# the binary again, hands it the listening socket, and the old process drains and exits once
# the new one is ready.
#
# Usage: scripts/in-place-upgrade.sh [upgrade|control|steady] [drain-delay]
#   upgrade (default): three SIGHUP upgrades; expect zero failed requests.
#   steady: the same load with no upgrade, for the latency of the steady state.
#   control: three plain restarts (SIGTERM, wait for the exit, start again 2 s later) on the same port;
#            expect failures: connections are refused while no process listens.
# Needs wrk (Debian: apt-get install wrk). BIN=path/to/example-service uses that binary instead
# of building a release one. Prints wrk's figures and a verdict line; exits non-zero when the
# verdict is not the expected one.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-upgrade}
drain=${2:-1s}
case "$mode" in
  upgrade | steady | control) ;;
  *) echo "usage: $0 [upgrade|control|steady] [drain-delay]" >&2; exit 2 ;;
esac
command -v wrk >/dev/null || { echo "in-place-upgrade: wrk is not installed" >&2; exit 2; }

if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p example-service
fi
bin=$(realpath "${BIN:-target/release/example-service}")
work=$(mktemp -d)
port=$((20000 + RANDOM % 10000))
cleanup() {
  local serving
  serving=$(cat "$work/pid" 2>/dev/null || true)
  if [ -n "$serving" ] && [ "$serving" != "${first:-}" ]; then kill -9 "$serving" 2>/dev/null || true; fi
  for pid in ${first:-} ${wrk_pid:-}; do
    { kill -TERM "$pid" && wait "$pid"; } 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# start: starts the service on the port and waits until it is ready.
start() {
  RUST_LOG=warn "$bin" --listen "127.0.0.1:$port" --drain-delay "$drain" --pid-file "$work/pid" \
    --database-url "sqlite://$work/db.db?mode=rwc" >>"$work/service.log" 2>&1 &
  first=$!
  for _ in $(seq 200); do
    [ -f "$work/pid" ] && curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "in-place-upgrade: the service did not become ready" >&2
  exit 1
}

# alive PID: whether the process runs; an exited one that nobody reaped yet (a zombie: a
# process an upgrade started is reaped by init, not by this shell) does not count.
alive() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null || true)
  [ -n "$state" ] && [ "${state#Z}" = "$state" ]
}

# upgrade: SIGHUP, then wait until the PID file names the new process and the old one is gone.
upgrade() {
  local old new
  old=$(cat "$work/pid")
  kill -HUP "$old"
  for _ in $(seq 400); do
    new=$(cat "$work/pid")
    [ "$new" != "$old" ] && break
    sleep 0.05
  done
  [ "$new" != "$old" ] || { echo "in-place-upgrade: no new process took over" >&2; exit 1; }
  while alive "$old"; do
    # The first process is this shell's child: reap it (and read its exit code) with wait.
    if [ "$old" = "${first:-}" ]; then
      wait "$old" || { echo "in-place-upgrade: the old process exited with $?" >&2; exit 1; }
      first=
      break
    fi
    sleep 0.05
  done
  echo "upgraded: $old -> $new" >&2
}

# restart: the control, a plain stop and start on the same port.
restart() {
  local old
  old=$(cat "$work/pid")
  kill -TERM "$old"
  if [ "$old" = "${first:-}" ]; then wait "$old" || true; else
    while alive "$old"; do sleep 0.01; done
  fi
  rm -f "$work/pid"
  # The port is closed between the two processes. A connect whose SYN the old process's stop
  # dropped is retried by the kernel after 1 s and may reach a new process started faster than
  # that (then the control sees nothing: seen once); a real restart (a container's, a unit's
  # RestartSec) takes longer, so the new one starts 2 s later.
  sleep 2
  start
}

start
sleep 1
wrk -t1 -c16 -d14s --latency "http://127.0.0.1:$port/work?ms=5" >"$work/wrk.txt" 2>&1 &
wrk_pid=$!
sleep 2
for _ in 1 2 3; do
  case "$mode" in
    upgrade) upgrade ;;
    control) restart ;;
    steady) ;;
  esac
  sleep 3
done
wait "$wrk_pid"
unset wrk_pid

cat "$work/wrk.txt"
requests=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
socket_errors=$(awk '/Socket errors/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$work/wrk.txt")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.txt")
failed=$(( ${socket_errors:-0} + ${non2xx:-0} ))
p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")
echo "in-place-upgrade ($mode, drain delay $drain): $requests requests, $failed failed, p99 $p99"
if [ "$mode" != control ] && [ "$failed" -ne 0 ]; then
  echo "in-place-upgrade: FAILED: requests failed during in-place upgrades" >&2
  exit 1
fi
if [ "$mode" = control ] && [ "$failed" -eq 0 ]; then
  echo "in-place-upgrade: FAILED: the control saw no failure; the test cannot see the gap" >&2
  exit 1
fi
