# shellcheck shell=bash
# restic's rest-server, from github.com/restic/rest-server through the wrapper module
# scripts/go/rest-server. The tests run it on a temp dir with an htpasswd file.
build_rest_server() {
  go_build_cached rest-server "$REST_SERVER_VERSION" rest-server github.com/restic/rest-server/cmd/rest-server
}
