#!/usr/bin/env bash
# Builds (once, cached by version) and locates the tools the project runs.
#   scripts/tools.sh ensure TOOL...   build what is missing; print each tool's path
#   scripts/tools.sh ensure-all       every tool in scripts/tools/
#   scripts/tools.sh list             the tools it knows
# Each tool is described by scripts/tools/TOOL.sh, which defines `build_TOOL` printing the path.
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

ensure() {
  local tool="$1" file="$REPO_ROOT/scripts/tools/$1.sh"
  [ -f "$file" ] || die "unknown tool '$tool' (known: $(list | tr '\n' ' '))"
  # shellcheck source=/dev/null
  . "$file"
  "build_${tool//-/_}"
}
list() { for f in "$REPO_ROOT"/scripts/tools/*.sh; do basename "$f" .sh; done; }

case "${1:-}" in
  ensure) shift; [ $# -gt 0 ] || die "usage: tools.sh ensure TOOL..."; for t in "$@"; do ensure "$t"; done ;;
  ensure-all) for t in $(list); do ensure "$t"; done ;;
  list) list ;;
  *) die "usage: tools.sh ensure TOOL... | ensure-all | list" ;;
esac
