# shellcheck shell=bash
# The background servers of scripts/control-plane.sh and scripts/node.sh: a lock per state
# directory, pid files, start, stop and the log tail on failure. Source after common.sh, with
# STATE (the state directory), LOCK (the lock file) and OWNER (the script's name, for messages).

# Holds the lock on file descriptor 9 until the script exits. Children get `9>&-` so that a
# background server never keeps the lock.
take_lock() {
  mkdir -p "$(dirname "$LOCK")"
  exec 9>"$LOCK"
  flock -w 600 9 || die "another $OWNER held $LOCK for 10 minutes; check it with 'fuser $LOCK'"
}

# pid_alive COMPONENT: true when the PID in its pid file still runs that component's binary
# (argv[0] is COMPONENT, or $STASH_BIN/COMPONENT-VERSION), so a recycled PID is never taken for ours.
pid_alive() {
  local pidfile="$STATE/$1.pid" pid argv0
  [ -f "$pidfile" ] || return 1
  pid="$(cat "$pidfile")"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  argv0="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n1)"
  case "${argv0##*/}" in "$1" | "$1"-v*) return 0 ;; *) return 1 ;; esac
}

# stop COMPONENT: SIGTERM, up to 10 s, then SIGKILL; the pid file goes either way.
stop() {
  local c="$1" pid _
  if pid_alive "$c"; then
    pid="$(cat "$STATE/$c.pid")"
    log "stopping $c (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do pid_alive "$c" || break; sleep 0.1; done
    if pid_alive "$c"; then kill -9 "$pid" 2>/dev/null || true; sleep 0.2; fi
  fi
  rm -f "$STATE/$c.pid"
}

# start COMPONENT BINARY ARGS...: a background process in its own session, logging to the state dir.
start() {
  local name="$1" bin="$2"; shift 2
  setsid "$bin" "$@" </dev/null >"$STATE/$name.log" 2>&1 9>&- &
  local pid=$! _
  echo "$pid" >"$STATE/$name.pid"
  for _ in $(seq 1 50); do pid_alive "$name" && break; sleep 0.05; done  # until setsid has exec'd
  log "started $name (pid $pid, log $STATE/$name.log)"
}

# fail_with_log COMPONENT WHY: the last lines of its log, then die.
fail_with_log() {
  local name="$1" why="$2"
  log "---- last lines of $STATE/$name.log ----"
  tail -n 30 "$STATE/$name.log" >&2 || true
  die "$why (logs in $STATE; '$OWNER down' wipes the state and 'up' starts afresh)"
}

# components_status: a line per COMPONENTS entry; false when one is not running.
components_status() {
  local c ok=0
  for c in "${COMPONENTS[@]}"; do
    if pid_alive "$c"; then log "$c: running (pid $(cat "$STATE/$c.pid"))"; else log "$c: not running"; ok=1; fi
  done
  return "$ok"
}
