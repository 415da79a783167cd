#!/usr/bin/env bash
# A throw-away single-node Ray cluster on 127.0.0.1 for the tests (and CI).
#
#   scripts/ray-local.sh start   # prints the address to export as RAY_ADDRESS
#   scripts/ray-local.sh stop    # stops exactly the processes `start` started
#
# The head runs in the foreground of its own process group (`ray start --block`), so `stop`
# ends that group by its id and never touches another Ray on the machine (`ray stop` would).
# State: $RAY_LOCAL_DIR (default /tmp/labelloop-ray-$UID): pid, address, log.
# Token authentication is off: the cluster listens on 127.0.0.1 only and lives for one test run.
set -euo pipefail
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
cd "$(dirname "$0")/.."
DIR="${RAY_LOCAL_DIR:-/tmp/labelloop-ray-$(id -u)}"
RAY="${RAY_BIN:-${VENV:-.venv}/bin/ray}"

case "${1:-}" in
start)
  mkdir -p "$DIR"
  if [ -f "$DIR/pid" ] && kill -0 "-$(cat "$DIR/pid")" 2>/dev/null; then
    cat "$DIR/address"; exit 0            # already running
  fi
  PY="$(dirname "$RAY")/python"
  port="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  setsid "$RAY" start --head --block --node-ip-address 127.0.0.1 --port "$port" \
    --include-dashboard false --disable-usage-stats --temp-dir "$DIR/tmp" >"$DIR/log" 2>&1 &
  echo $! >"$DIR/pid"
  echo "127.0.0.1:$port" >"$DIR/address"
  for _ in $(seq 1 240); do               # up to 2 minutes on a loaded machine
    if "$RAY" status --address "127.0.0.1:$port" >/dev/null 2>&1; then cat "$DIR/address"; exit 0; fi
    if ! kill -0 "$(cat "$DIR/pid")" 2>/dev/null; then break; fi
    sleep 0.5
  done
  echo "ray-local: the head did not come up; its log:" >&2; tail -30 "$DIR/log" >&2; exit 1
  ;;
stop)
  [ -f "$DIR/pid" ] || exit 0
  pgid="$(cat "$DIR/pid")"
  kill -TERM "-$pgid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "-$pgid" 2>/dev/null || break; sleep 0.25; done
  kill -KILL "-$pgid" 2>/dev/null || true
  rm -f "$DIR/pid" "$DIR/address"
  ;;
*)
  echo "usage: $0 start|stop" >&2; exit 2
  ;;
esac
