# shellcheck shell=bash
# etcd, from go.etcd.io/etcd/server/v3 through the wrapper module scripts/go/etcd.
# (etcd's version string is a constant of go.etcd.io/etcd/api/v3/version: no ldflags needed.)
build_etcd() {
  go_build_cached etcd "$ETCD_VERSION" etcd stash.local/build/etcd \
    "-X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION"
}
