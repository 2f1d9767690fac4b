#!/usr/bin/env bash
# The whole of Stash running locally: its own control plane (kube-apiserver + etcd +
# kube-controller-manager), a node that runs pods (scripts/node.sh: containerd, kubelet,
# kube-scheduler), the six functions and Knative's real adapters (test/support/stack.ts), then a
# demo that really backs up a Deployment's volume and recovers it.
#
#   scripts/stack.sh up       setup, control plane, node, default AgentTemplates, functions + adapters
#                             in the background, then the demo (namespace demo). The stack keeps running.
#   scripts/stack.sh down     stop the functions, the adapters, the node and the stack's control plane
#   scripts/stack.sh status   what runs, and where
#
# State and logs: ${STASH_STACK_DIR:-/tmp/stash-stack} (one log per function and adapter). The
# control plane is the stack's own (STASH_CONTROL_PLANE_DIR, default <state>/control-plane), so
# `down` never stops the one the tests share. The node is not: a machine has one (its bridge and
# cgroups are global), so the stack and scripts/test.sh take it from each other; run one at a time.
# The node is tainted: pods run there in namespaces annotated as namespace demo is (see
# docs/DEVELOPING.md, "The test node").
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"
export PATH="$REPO_ROOT/node_modules/.bin:$PATH"

STATE="${STASH_STACK_DIR:-/tmp/stash-stack}"
export STASH_CONTROL_PLANE_DIR="${STASH_CONTROL_PLANE_DIR:-$STATE/control-plane}"
PIDFILE="$STATE/stack.pid"
KUBECTL="$STASH_BIN/kubectl"

serve_alive() {
  [ -f "$PIDFILE" ] || return 1
  local pid; pid="$(cat "$PIDFILE")"
  [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'scripts/stack.ts serve'
}

cmd_up() {
  mkdir -p "$STATE"
  "$REPO_ROOT/scripts/setup.sh"
  local line
  line="$("$REPO_ROOT/scripts/control-plane.sh" up | tail -1)"
  export "${line?}"
  "$REPO_ROOT/scripts/node.sh" up >/dev/null
  [ -x "$KUBECTL" ] || "$REPO_ROOT/scripts/tools.sh" ensure kubectl >/dev/null
  log "applying the default AgentTemplates"
  "$KUBECTL" apply --server-side --field-manager=stash-install -f "$REPO_ROOT/shared/api/defaults/agent-templates.yaml" >&2

  if serve_alive; then
    log "functions and adapters already running (pid $(cat "$PIDFILE"))"
  else
    log "starting the functions and adapters (logs in $STATE)"
    rm -f "$STATE/stack.env"
    # setsid: the stack outlives this shell; 9>&-: never hold control-plane.sh's lock.
    setsid node "$REPO_ROOT/scripts/stack.ts" serve --state "$STATE" >"$STATE/stack.log" 2>&1 9>&- </dev/null &
    echo $! >"$PIDFILE"
    local deadline=$((SECONDS + 120))
    until [ -s "$STATE/stack.env" ]; do
      # kill -0, not serve_alive: until the child has exec'd node, its cmdline is still this shell's.
      kill -0 "$(cat "$PIDFILE")" 2>/dev/null || die "the stack exited while starting; $STATE/stack.log ends: $(tail -20 "$STATE/stack.log")"
      [ $SECONDS -lt $deadline ] || die "the stack did not start within 120 s; see $STATE/stack.log"
      sleep 1
    done
  fi
  log "running the demo"
  node "$REPO_ROOT/scripts/stack.ts" demo --state "$STATE"
  cat <<MSG

The stack keeps running (functions and Knative adapters: $STATE/*.log; URLs: $STATE/stack.env).
Point kubectl at it and apply the design's samples, then watch the functions act (pods run on the
node in namespace demo, or in any namespace annotated like it):
  export KUBECONFIG=$KUBECONFIG
  $KUBECTL apply -n demo -f test/fixtures/design-samples/...
Stop it with: scripts/stack.sh down
MSG
}

cmd_down() {
  if serve_alive; then
    local pid; pid="$(cat "$PIDFILE")"
    log "stopping the functions and adapters (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 40); do serve_alive || break; sleep 0.5; done
    if serve_alive; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"; fi
  fi
  rm -f "$PIDFILE" "$STATE/stack.env"
  "$REPO_ROOT/scripts/node.sh" down
  "$REPO_ROOT/scripts/control-plane.sh" down
  log "stopped; logs stay in $STATE"
}

cmd_status() {
  local rc=0
  if "$REPO_ROOT/scripts/control-plane.sh" status >/dev/null 2>&1; then
    echo "control plane: up ($("$REPO_ROOT/scripts/control-plane.sh" env))"
  else
    echo "control plane: down"; rc=1
  fi
  if "$REPO_ROOT/scripts/node.sh" status >/dev/null 2>&1; then
    echo "node: up (containerd, kubelet, kube-scheduler; logs in ${STASH_NODE_DIR:-/tmp/stash-node})"
  else
    echo "node: down"; rc=1
  fi
  if serve_alive; then
    echo "functions and adapters: running (pid $(cat "$PIDFILE")), logs in $STATE"
    sed 's/^/  /' "$STATE/stack.env"
  else
    echo "functions and adapters: not running"; rc=1
  fi
  return $rc
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) die "usage: scripts/stack.sh up|down|status" ;;
esac
