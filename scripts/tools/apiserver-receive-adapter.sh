# shellcheck shell=bash
# Knative Eventing's ApiServerSource receive adapter (knative.dev/eventing/cmd/apiserver_receive_adapter),
# through the wrapper module scripts/go/knative-adapters. Runs as a plain process in the tests
# (test/support/knative.ts); version strings come from the module itself, so no ldflags.
build_apiserver_receive_adapter() {
  go_build_cached apiserver-receive-adapter "$KNATIVE_EVENTING_VERSION" knative-adapters \
    knative.dev/eventing/cmd/apiserver_receive_adapter
}
