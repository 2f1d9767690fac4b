#!/usr/bin/env bash
# Benchmark 1 (issue 3): the `stash` agent against bare restic 0.19.1, side by side, on
#  - a 1.3 GB tree of 50,000 files (scripts/bench/gen-tree.ts; kept in $BENCH_DIR/tree), and
#  - PostgreSQL 15 databases (scripts/bench/pg.sh; pgbench -s 35 and -s 70, and random bytea).
# Prints a table (median and min-max of BENCH_REPS=3 runs, load average beside each).
#   scripts/bench/agent.sh            run (generates the data on first use)
#   scripts/bench/agent.sh clean      stop the database server and delete every generated file
# BENCH_ONLY=files|db limits the run; BENCH_DIR (default /tmp/stash-bench).
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export PATH="$REPO_ROOT/node_modules/.bin:$PATH"
export BENCH_DIR=${BENCH_DIR:-/tmp/stash-bench}
if [[ ${1:-} == clean ]]; then
  "$REPO_ROOT/scripts/bench/pg.sh" clean
  rm -rf "$BENCH_DIR"
  exit 0
fi
mkdir -p "$BENCH_DIR"
STASH_RESTIC=$("$REPO_ROOT/scripts/tools.sh" ensure restic | tail -1)
export STASH_RESTIC
[[ -f $BENCH_DIR/repo-password ]] || { head -c 24 /dev/urandom | base64 > "$BENCH_DIR/repo-password"; chmod 600 "$BENCH_DIR/repo-password"; }
node "$REPO_ROOT/scripts/bench/gen-tree.ts" "$BENCH_DIR/tree" >&2
"$REPO_ROOT/scripts/bench/pg.sh" start
echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GB RAM; $(uptime)" >&2
exec node "$REPO_ROOT/scripts/bench/agent.ts"
