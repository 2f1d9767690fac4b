# shellcheck shell=bash
# pause, the pod sandbox process of the test node's images (scripts/images.ts), from the module
# scripts/go/pause (our own ten lines; no dependencies).
build_pause() {
  go_build_cached pause "$PAUSE_VERSION" pause .
}
