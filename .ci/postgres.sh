#!/usr/bin/env bash
# Starts or stops a throwaway PostgreSQL cluster for the tests, from Debian's `postgresql`.
#   .ci/postgres.sh start DIR   -> prints the DATABASE_URL to use
#   .ci/postgres.sh stop DIR
#   .ci/postgres.sh check DIR   -> fails, saying why, where a cluster cannot be started without
#                                  installing anything (the tests that start their own skip)
# The cluster listens on 127.0.0.1 only, port $PGPORT (default 55432), trust auth.
# With PGTLS=1 it also serves TLS (ssl=on, plain connections still accepted): `start` makes a
# throwaway CA in DIR/tls (ca.pem) and a server certificate it signed for 127.0.0.1 and
# localhost, plus a second, unrelated CA (other-ca.pem) for tests that need a wrong one.
set -euo pipefail

cmd=${1:?usage: postgres.sh start|stop|check DIR}
dir=${2:?usage: postgres.sh start|stop|check DIR}
port=${PGPORT:-55432}

find_bin() {
  local found
  found=$(command -v "$1" 2>/dev/null || true)
  if [ -z "$found" ]; then
    found=$(ls -d /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1 || true)
  fi
  printf '%s' "$found"
}

# A CA, a server certificate it signed for 127.0.0.1 and localhost, and an unrelated CA.
make_certs() {
  local tls=$1
  mkdir -p "$tls"
  if [ ! -s "$tls/server.pem" ]; then
    for ca in ca other-ca; do
      openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=sandkeeper test $ca" \
        -keyout "$tls/$ca.key" -out "$tls/$ca.pem" 2>/dev/null
    done
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$tls/server.ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
      -CAcreateserial -days 2 -extfile "$tls/server.ext" -out "$tls/server.pem" 2>/dev/null
  fi
  chown -R postgres:postgres "$tls"
  chmod 600 "$tls/server.key"
}

case "$cmd" in
  check)
    if [ -z "$(find_bin initdb)" ]; then
      echo "the PostgreSQL server binaries (initdb, pg_ctl) are not installed" >&2
      exit 1
    elif [ "${PGTLS:-0}" = "1" ] && ! command -v openssl >/dev/null; then
      echo "the openssl command is not installed" >&2
      exit 1
    elif ! id postgres >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
      echo "starting PostgreSQL needs root and a \`postgres\` account" >&2
      exit 1
    fi
    ;;
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
    tls_options=""
    if [ "${PGTLS:-0}" = "1" ]; then
      make_certs "$dir/tls"
      tls_options="-c ssl=on -c ssl_cert_file=$dir/tls/server.pem -c ssl_key_file=$dir/tls/server.key"
    fi
    su postgres -s /bin/sh -c "'$pg_ctl' -D '$dir/data' -l '$dir/server.log' -w -t 60 \
      -o \"-p $port -k $dir/sock -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off $tls_options\" start" >&2 \
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
    echo "usage: postgres.sh start|stop|check DIR" >&2
    exit 2
    ;;
esac
