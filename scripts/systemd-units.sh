#!/usr/bin/env bash
# The shipped systemd units (examples/deploy/systemd) under a real systemd, booted in a
# container (systemd-nspawn of this machine's own root, volatile, sharing the host's network):
# socket activation, `systemctl reload` (an in-place upgrade that succeeds, then one that fails
# and must fail the reload), the watchdog after a reload, and a stop whose connections wait in
# the socket's queue for the next start.
#
# Usage (as root): BIN=target/debug/example-service scripts/systemd-units.sh
# It installs $BIN as /usr/local/bin/example-service (the units' ExecStart) and removes it after.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${BIN:-target/debug/example-service}
units=examples/deploy/systemd
target=/usr/local/bin/example-service
log=$(mktemp -d)/nspawn.log

fail() {
  echo "systemd-units: FAILED: $*" >&2
  [ -n "${machine:-}" ] && ns journalctl -u example-service --no-pager -n 60 >&2 || true
  exit 1
}

install -m 755 "$bin" "$target"
setsid systemd-nspawn --register=no --keep-unit --volatile=yes -D / -b systemd.firstboot=off \
  >"$log" 2>&1 </dev/null &
nspawn=$!
cleanup() {
  kill "$nspawn" 2>/dev/null || true
  wait "$nspawn" 2>/dev/null || true
  rm -f "$target" "$target.real"
}
trap cleanup EXIT

# The container's systemd: the child of systemd-nspawn.
machine=
for _ in $(seq 100); do
  machine=$(pgrep -P "$nspawn" -f 'systemd.firstboot=off' || true)
  [ -n "$machine" ] && break
  sleep 0.1
done
[ -n "$machine" ] || { cat "$log" >&2; fail "no systemd booted"; }
ns() { nsenter --target "$machine" --all "$@"; }
for _ in $(seq 300); do
  state=$(ns systemctl is-system-running 2>/dev/null || true)
  case "$state" in running|degraded) break ;; esac
  sleep 0.1
done
echo "systemd-units: systemd $(ns systemctl --version | head -1 | cut -d' ' -f2) is $state"

for unit in example-service.socket example-service.service; do
  ns sh -c "cat > /etc/systemd/system/$unit" <"$units/$unit"
done
ns systemctl daemon-reload
ns systemctl start example-service.socket

readyz() { curl -s -o /dev/null -w '%{http_code}' --max-time "${1:-10}" http://127.0.0.1:8080/readyz || true; }
main_pid() { ns systemctl show -p MainPID --value example-service; }
restarts() { ns systemctl show -p NRestarts --value example-service; }

# Socket activation: the first connection starts the service.
[ "$(readyz 20)" = 200 ] || fail "the first connection did not start the service"
first=$(main_pid)
echo "systemd-units: started by its first connection, main PID $first"

# A reload is an in-place upgrade: it returns once the new process took over.
ns systemctl reload example-service || fail "systemctl reload failed"
second=$(main_pid)
[ "$second" != "$first" ] || fail "the main PID did not change"
[ "$(readyz)" = 200 ] || fail "not ready after the reload"
echo "systemd-units: reload ok, main PID $first -> $second"

# The new process pings the watchdog: WatchdogSec=10s passes without a restart.
sleep 12
[ "$(ns systemctl is-active example-service)" = active ] || fail "not active after WatchdogSec"
[ "$(main_pid)" = "$second" ] && [ "$(restarts)" = 0 ] || fail "restarted by the watchdog"
echo "systemd-units: the watchdog is fed after the reload"

# A new version that cannot start (it exits 3; as the reload command it is the real one): the
# reload fails, the old process keeps serving.
install -m 755 "$bin" "$target.real"
printf '#!/bin/sh\ncase "$*" in *--request-upgrade*) exec %s "$@" ;; esac\nexit 3\n' \
  "$target.real" >"$target.next"
chmod 755 "$target.next" && mv "$target.next" "$target"
if ns systemctl reload example-service; then fail "a failed upgrade made a successful reload"; fi
install -m 755 "$bin" "$target"
rm -f "$target.real"
[ "$(main_pid)" = "$second" ] || fail "the main PID changed after a failed upgrade"
[ "$(readyz)" = 200 ] || fail "not serving after a failed upgrade"
ns systemctl status example-service --no-pager | grep -q 'upgrade failed' || fail "no status"
echo "systemd-units: a failed upgrade fails the reload; still serving"

# A stop leaves the socket to systemd: a connection made now starts the service again and is
# answered.
ns systemctl stop example-service
[ "$(readyz 20)" = 200 ] || fail "a connection after the stop was not answered"
third=$(main_pid)
[ "$third" != "$second" ] || fail "no new start"
echo "systemd-units: after a stop, the next connection started the service again ($third)"

ns systemctl stop example-service example-service.socket
echo "systemd-units: ok"
