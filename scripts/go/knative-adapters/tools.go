//go:build tools

// Package tools pins what this wrapper module builds so `go mod tidy` keeps their dependencies:
// Knative Eventing's ApiServerSource receive adapter and multi-tenant PingSource adapter (mtping),
// and ./validate (Knative's webhook validation, with knative.dev/serving at the knative-v1.22
// release matching KNATIVE_EVENTING_VERSION).
package tools

import (
	_ "knative.dev/eventing/cmd/apiserver_receive_adapter"
	_ "knative.dev/eventing/cmd/mtping"
)
