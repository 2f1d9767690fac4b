#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine, and nothing twice:
#   Debian packages (database servers and clients, sshd, the test node's container runtime),
#   Node 24 and the npm dependencies (npm ci, skipped when the lock file is unchanged), and every
#   Go tool in scripts/tools/ (built from the Go module proxy, cached by version in
#   ~/.cache/stash/bin).
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

APT_PACKAGES=(postgresql postgresql-contrib mariadb-server mariadb-client redis-server redis-tools
  openssh-server openssh-client openssl jq procps psmisc shellcheck
  # The test node (scripts/node.sh): container runtime, CNI plugins, iptables for the gateway DNAT
  # and the bridge plugin's masquerading.
  containerd runc containernetworking-plugins iptables
  # kube-proxy clears stale conntrack entries of UDP Services (the DNS Service) with it
  conntrack
  # the design samples' workload image, busybox:latest (scripts/images.ts)
  busybox-static)

install_debian_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The system services are not used: tests start their own servers in temporary directories.
  # scripts/node.sh runs its own containerd with its own socket and state.
  for s in postgresql mariadb redis-server ssh containerd; do $sudo service "$s" stop >/dev/null 2>&1 || true; done
}

install_npm_dependencies() {
  local stamp="$REPO_ROOT/node_modules/.stash-lock-sha" want
  want="$(sha256sum "$REPO_ROOT/package-lock.json" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$REPO_ROOT/node_modules/.bin/node" ]; then return 0; fi
  log "installing npm dependencies (npm ci)"
  ( cd "$REPO_ROOT" && npm ci --no-audit --no-fund --loglevel=error )
  printf '%s' "$want" > "$stamp"
}

install_debian_packages
install_npm_dependencies
"$REPO_ROOT/node_modules/.bin/node" --version | grep -q "^v$NODE_VERSION$" || die "node_modules/.bin/node is not Node $NODE_VERSION"
"$REPO_ROOT/scripts/tools.sh" ensure-all >/dev/null
log "setup complete: Node $NODE_VERSION, tools in $STASH_BIN"
