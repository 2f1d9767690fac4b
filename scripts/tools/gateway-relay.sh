# shellcheck shell=bash
# gateway-relay, the test node's TCP relay from the pod network's gateway to the apiserver on
# loopback (scripts/node.sh), from the module scripts/go/gateway-relay (our own; no dependencies).
build_gateway_relay() {
  go_build_cached gateway-relay "$GATEWAY_RELAY_VERSION" gateway-relay .
}
