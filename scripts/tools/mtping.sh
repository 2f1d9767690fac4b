# shellcheck shell=bash
# Knative Eventing's multi-tenant PingSource adapter (knative.dev/eventing/cmd/mtping),
# through the wrapper module scripts/go/knative-adapters. Runs as a plain process in the tests
# (test/support/knative.ts).
build_mtping() {
  go_build_cached mtping "$KNATIVE_EVENTING_VERSION" knative-adapters knative.dev/eventing/cmd/mtping
}
