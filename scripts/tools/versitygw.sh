# shellcheck shell=bash
# versitygw (S3 gateway, Apache-2.0), from github.com/versity/versitygw through the wrapper module
# scripts/go/versitygw. The tests run its posix backend on a temp dir as a real S3 server.
build_versitygw() {
  go_build_cached versitygw "$VERSITYGW_VERSION" versitygw github.com/versity/versitygw/cmd/versitygw \
    "-X main.Version=${VERSITYGW_VERSION}"
}
