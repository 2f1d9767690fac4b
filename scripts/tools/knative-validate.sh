# shellcheck shell=bash
# knative-validate: Knative's own admission-webhook defaulting and validation (Eventing's Broker,
# Trigger, ApiServerSource, PingSource; Serving's Service) run on YAML files, from the program in
# scripts/go/knative-adapters/validate. Cached by Knative's version and a hash of the program and its
# go.mod/go.sum, since the program is ours and changes without a version bump.
build_knative_validate() {
  local dir="$REPO_ROOT/scripts/go/knative-adapters" hash
  hash="$(cat "$dir/go.mod" "$dir/go.sum" "$dir/validate/main.go" | sha256sum | cut -c1-12)"
  go_build_cached knative-validate "$KNATIVE_EVENTING_VERSION-$hash" knative-adapters ./validate
}
