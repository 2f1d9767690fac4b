#!/usr/bin/env bash
# Knative's own CRDs, from the Go modules at the knative-v1.22 release (no registry of YAML needed):
#   Eventing: knative.dev/eventing@$KNATIVE_EVENTING_VERSION  config/core/resources/*.yaml
#   Serving:  knative.dev/serving at the version required by scripts/go/knative-adapters/go.mod
#             (v0.49.1 = knative-v1.22.1; v0.49.2 is not on the module proxy)  config/core/300-resources/*.yaml
#
#   scripts/knative-crds.sh files [eventing|serving|all]   print the CRD files' paths (default all)
#   scripts/knative-crds.sh print [eventing|serving|all]   print the CRDs as one multi-document YAML
#   scripts/knative-crds.sh apply [eventing|serving|all]   server-side apply them with kubectl to
#       $KUBECONFIG (e.g. the control plane: eval "$(scripts/control-plane.sh env)") and wait until
#       they are Established
# The control plane (scripts/control-plane.sh up) installs Eventing's; Serving's are needed only to
# validate knative/ (test/deploy-manifests.test.ts applies them itself).
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

WRAPPER="$REPO_ROOT/scripts/go/knative-adapters"

module_dir() {  # module_dir MODULE: its directory in the module cache, downloading it once
  local dir
  dir="$(cd "$WRAPPER" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' "$1" 2>/dev/null)" || true
  if [ -z "$dir" ] || [ ! -d "$dir" ]; then
    (cd "$WRAPPER" && GOFLAGS=-mod=mod go mod download "$1") >&2 ||
      die "downloading $1 (required by $WRAPPER/go.mod) failed: the Go module proxy must be reachable once"
    dir="$(cd "$WRAPPER" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' "$1")"
  fi
  [ -d "$dir" ] || die "$1 is not in the module cache after downloading it"
  printf '%s\n' "$dir"
}

files() {
  local which="${1:-all}" dir
  command -v go >/dev/null || die "go is not installed; it is needed to fetch Knative's CRDs from the Go module proxy"
  case "$which" in
    eventing|all)
      dir="$(module_dir knative.dev/eventing)"
      ls "$dir"/config/core/resources/*.yaml ;;&
    serving|all)
      dir="$(module_dir knative.dev/serving)"
      ls "$dir"/config/core/300-resources/*.yaml ;;
    eventing) ;;
    *) die "unknown CRD set '$which' (known: eventing, serving, all)" ;;
  esac
}

print_all() {
  local f
  for f in $(files "${1:-all}"); do printf -- '---\n# %s\n' "${f#*/pkg/mod/}"; cat "$f"; printf '\n'; done
}

apply_all() {
  [ -n "${KUBECONFIG:-}" ] || die "KUBECONFIG is not set; point it at the cluster (eval \"\$(scripts/control-plane.sh env)\")"
  local kubectl crds=()
  kubectl="$("$REPO_ROOT/scripts/tools.sh" ensure kubectl | tail -n1)"
  print_all "${1:-all}" | "$kubectl" apply --server-side --force-conflicts --field-manager=stash-knative-crds -f - >/dev/null ||
    die "applying Knative's CRDs failed (see kubectl's error above)"
  mapfile -t crds < <(print_all "${1:-all}" | awk '/^kind: CustomResourceDefinition/{c=1} c&&/^  name:/{print "crd/" $2; c=0}')
  "$kubectl" wait --for condition=Established --timeout=60s "${crds[@]}" >/dev/null ||
    die "Knative's CRDs were not Established within 60 s ('kubectl get crd NAME -o yaml' shows why)"
  log "applied ${#crds[@]} Knative CRDs"
}

case "${1:-}" in
  files) files "${2:-all}" ;;
  print) print_all "${2:-all}" ;;
  apply) apply_all "${2:-all}" ;;
  *) die "usage: scripts/knative-crds.sh files|print|apply [eventing|serving|all]" ;;
esac
