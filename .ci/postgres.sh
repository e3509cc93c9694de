#!/usr/bin/env bash
# Starts or stops a throwaway PostgreSQL cluster for the tests, from Debian's `postgresql`.
#   .ci/postgres.sh start DIR   -> prints the DATABASE_URL to use
#   .ci/postgres.sh stop DIR
# The cluster listens on 127.0.0.1 only, port $PGPORT (default 55432), trust auth.
set -euo pipefail

cmd=${1:?usage: postgres.sh start|stop DIR}
dir=${2:?usage: postgres.sh start|stop DIR}
port=${PGPORT:-55432}

find_bin() {
  local found
  found=$(command -v "$1" 2>/dev/null || true)
  if [ -z "$found" ]; then
    found=$(ls -d /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1 || true)
  fi
  printf '%s' "$found"
}

case "$cmd" in
  start)
    if [ -z "$(find_bin initdb)" ]; then
      echo "postgres.sh: installing Debian's postgresql" >&2
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    fi
    initdb=$(find_bin initdb)
    pg_ctl=$(find_bin pg_ctl)
    mkdir -p "$dir/data" "$dir/sock"
    chown -R postgres:postgres "$dir"
    chmod 700 "$dir/data"
    if [ ! -s "$dir/data/PG_VERSION" ]; then
      su postgres -s /bin/sh -c "'$initdb' --auth=trust --username=postgres -D '$dir/data'" >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    su postgres -s /bin/sh -c "'$pg_ctl' -D '$dir/data' -l '$dir/server.log' -w -t 60 \
      -o \"-p $port -k $dir/sock -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off\" start" >&2 \
      || { cat "$dir/server.log" >&2; exit 1; }
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    pg_ctl=$(find_bin pg_ctl)
    if [ -n "$pg_ctl" ] && [ -s "$dir/data/postmaster.pid" ]; then
      su postgres -s /bin/sh -c "'$pg_ctl' -D '$dir/data' -m fast -w stop" >&2 || true
    fi
    ;;
  *)
    echo "usage: postgres.sh start|stop DIR" >&2
    exit 2
    ;;
esac
