#!/usr/bin/env bash
# Runs every test: setup, lint, type-check, then all unit and integration tests in one
# node:test run against a real control plane and a real node (started here, stopped at the end).
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"
export PATH="$REPO_ROOT/node_modules/.bin:$PATH"
cd "$REPO_ROOT" || exit 1

"$REPO_ROOT/scripts/setup.sh"
log "lint"; npx eslint .; shellcheck -x scripts/*.sh scripts/lib/*.sh scripts/tools/*.sh
log "type-check"; npx tsc -p tsconfig.json

# A fresh control plane: objects left by an earlier run (or a crashed one) must not meet these tests.
"$REPO_ROOT/scripts/control-plane.sh" down >/dev/null 2>&1 || true
kubeconfig_line="$("$REPO_ROOT/scripts/control-plane.sh" up | tail -1)"
export "${kubeconfig_line?}"
trap '"$REPO_ROOT/scripts/node.sh" down >/dev/null 2>&1 || true; "$REPO_ROOT/scripts/control-plane.sh" down >/dev/null 2>&1 || true' EXIT
# The test node (containerd, kubelet, kube-scheduler, kube-proxy, CoreDNS) joined to it: pods in
# namespaces that tolerate its taint really run.
"$REPO_ROOT/scripts/node.sh" up >/dev/null

log "tests"
node --test --test-concurrency=2 \
  "agent/**/*.test.ts" "functions/**/*.test.ts" "shared/**/*.test.ts" "test/**/*.test.ts"
