# shellcheck shell=bash
# Prometheus Pushgateway, from github.com/prometheus/pushgateway through the wrapper module
# scripts/go/pushgateway (the metrics tests push to a real one).
build_pushgateway() {
  go_build_cached pushgateway "$PUSHGATEWAY_VERSION" pushgateway github.com/prometheus/pushgateway \
    "-X github.com/prometheus/common/version.Version=${PUSHGATEWAY_VERSION#v} -X github.com/prometheus/common/version.Branch=release -X github.com/prometheus/common/version.Revision=${PUSHGATEWAY_VERSION}"
}
