#!/usr/bin/env bash
# A PostgreSQL 15 server for the benchmarks (Debian's binaries), kept in $BENCH_DIR/pg so the
# generated databases are reused across runs:
#   scripts/bench/pg.sh start   initdb on first use, start, create the databases (prints nothing)
#   scripts/bench/pg.sh stop    stop the server (the data stays)
#   scripts/bench/pg.sh clean   stop and delete everything
# Databases: bench35 (pgbench -i -s 35, ~0.5 GB), bench70 (pgbench -i -s 70, ~1.05 GB),
# blobs (a table of random bytea: 80,000 rows x 4 KB = ~330 MB that does not compress).
# Port $BENCH_PG_PORT (default 55432) on 127.0.0.1; password in $BENCH_DIR/pg/password (0600).
set -euo pipefail
BENCH_DIR=${BENCH_DIR:-/tmp/stash-bench}
PG_BIN=${STASH_TEST_PG_BIN:-/usr/lib/postgresql/15/bin}
PORT=${BENCH_PG_PORT:-55432}
DIR=$BENCH_DIR/pg
export PGPASSFILE=/dev/null

pg_run() { runuser -u postgres -- "$PG_BIN/$@"; }
q() { PGPASSWORD=$(cat "$DIR/password") psql -h 127.0.0.1 -p "$PORT" -U postgres -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }

start() {
  if [[ ! -f $DIR/data/PG_VERSION ]]; then
    rm -rf "$DIR"; mkdir -p "$DIR"; chown postgres: "$DIR"
    head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$DIR/password"; chmod 600 "$DIR/password"
    install -m 600 -o postgres "$DIR/password" "$DIR/pwfile"
    pg_run initdb -D "$DIR/data" -U postgres --auth=scram-sha-256 --pwfile="$DIR/pwfile" --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$DIR/pwfile"
  fi
  if ! pg_run pg_ctl -D "$DIR/data" status >/dev/null 2>&1; then
    pg_run pg_ctl -D "$DIR/data" -l "$DIR/postgres.log" -w -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_wal_size=4GB" start >/dev/null
  fi
  for scale in 35 70; do
    if [[ $(q -d postgres -c "select count(*) from pg_database where datname='bench$scale'") == 0 ]]; then
      q -d postgres -c "create database bench$scale"
      PGPASSWORD=$(cat "$DIR/password") pgbench -h 127.0.0.1 -p "$PORT" -U postgres -i -q -s "$scale" "bench$scale" >/dev/null 2>&1
      q -d "bench$scale" -c 'vacuum analyze'
    fi
  done
  if [[ $(q -d postgres -c "select count(*) from pg_database where datname='blobs'") == 0 ]]; then
    q -d postgres -c "create database blobs"
    q -d blobs -c "create extension pgcrypto; create table blobs(id int primary key, b bytea); alter table blobs alter column b set storage external;"
  fi
  if [[ $(q -d blobs -c "select count(*) from blobs") == 0 ]]; then
    q -d blobs -c "insert into blobs select g, gen_random_bytes(1024)||gen_random_bytes(1024)||gen_random_bytes(1024)||gen_random_bytes(1024) from generate_series(1,80000) g"
    q -d blobs -c "vacuum analyze blobs"
  fi
}

case ${1:-} in
  start) start ;;
  stop) pg_run pg_ctl -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true ;;
  clean) pg_run pg_ctl -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$DIR" ;;
  *) echo "usage: $0 start|stop|clean" >&2; exit 2 ;;
esac
