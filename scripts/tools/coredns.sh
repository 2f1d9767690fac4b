# shellcheck shell=bash
# CoreDNS, from github.com/coredns/coredns through the wrapper module scripts/go/coredns (only the
# plugins the test node's cluster DNS uses, see scripts/node.sh).
build_coredns() {
  go_build_cached coredns "$COREDNS_VERSION" coredns stash.local/build/coredns \
    "-X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
}
