# shellcheck shell=bash
# Shared shell helpers: where the cache lives, logging, and building Go tools from wrapper modules.
# Source it: . "$(dirname "$0")/lib/common.sh"
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck disable=SC1091 # versions.env: plain NAME=value lines
. "$REPO_ROOT/scripts/versions.env"
export STASH_CACHE="${STASH_CACHE:-$HOME/.cache/stash}"
STASH_BIN="$STASH_CACHE/bin"
mkdir -p "$STASH_BIN"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# go_build_cached NAME VERSION WRAPPER_DIR PACKAGE [LDFLAGS]
# Builds PACKAGE inside the wrapper module scripts/go/WRAPPER_DIR into $STASH_BIN/NAME-VERSION
# unless it is already there, then points $STASH_BIN/NAME at it. Prints the binary's path.
go_build_cached() {
  local name="$1" version="$2" wrapper="$3" pkg="$4" ldflags="${5:-}"
  local out="$STASH_BIN/$name-$version"
  if [ ! -x "$out" ]; then
    command -v go >/dev/null || die "go is not installed; it is needed to build $name"
    log "building $name $version (cached afterwards in $out)"
    ( cd "$REPO_ROOT/scripts/go/$wrapper" &&
      CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp" "$pkg" ) ||
      die "building $name $version failed"
    mv "$out.tmp" "$out"
  fi
  ln -sf "$name-$version" "$STASH_BIN/$name"
  printf '%s\n' "$out"
}
