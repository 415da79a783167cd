#!/usr/bin/env bash
# A throw-away PostgreSQL cluster on 127.0.0.1 for the tests (and for trying labelloop on
# PostgreSQL): Debian's `postgresql` binaries, a free port, trust authentication on localhost
# only, no durability (fsync off): never for real data.
#
#   scripts/pg-test-cluster.sh start [DIR]   initdb + start; prints `export LABELLOOP_TEST_PG=URL`
#   scripts/pg-test-cluster.sh stop  [DIR]   stop and delete DIR
#
# DIR defaults to $LABELLOOP_PG_DIR or /tmp/labelloop-pg. When the binaries are missing,
# `start` installs the postgresql package with apt-get (unless LABELLOOP_PG_NO_INSTALL=1).
# initdb refuses to run as root: as root the cluster runs as the `postgres` user.
set -euo pipefail

cmd=${1:-}
dir=${2:-${LABELLOOP_PG_DIR:-/tmp/labelloop-pg}}

bindir() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    command -v initdb >/dev/null 2>&1 && { dirname "$(readlink -f "$(command -v initdb)")"; return 0; }
    return 1
}

as_owner() {   # run a command as the cluster's owner
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
    if ! bin=$(bindir); then
        if [ "${LABELLOOP_PG_NO_INSTALL:-0}" = 1 ] || ! command -v apt-get >/dev/null; then
            echo "no PostgreSQL binaries (initdb, pg_ctl); install Debian's postgresql package" >&2
            exit 3
        fi
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        bin=$(bindir)
    fi
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    if [ -f "$dir/url" ] && as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        echo "export LABELLOOP_TEST_PG=$(cat "$dir/url")"
        exit 0
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$bin/initdb" -D "$dir/data" -U labelloop --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w -t 60 \
        -o "-p $port -k $dir/data -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null || { cat "$dir/data/server.log" >&2; exit 1; }
    url="postgresql://labelloop@127.0.0.1:$port/postgres"
    echo "$url" >"$dir/url"
    echo "export LABELLOOP_TEST_PG=$url"
    ;;
stop)
    if bin=$(bindir) && [ -d "$dir/data" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start|stop [DIR]" >&2
    exit 2
    ;;
esac
