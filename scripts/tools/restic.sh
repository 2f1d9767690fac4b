# shellcheck shell=bash
# restic, from github.com/restic/restic through the wrapper module scripts/go/restic.
build_restic() {
  go_build_cached restic "$RESTIC_VERSION" restic github.com/restic/restic/cmd/restic \
    "-X main.version=${RESTIC_VERSION#v}"
}
