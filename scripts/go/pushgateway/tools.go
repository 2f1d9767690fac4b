//go:build tools

// Package tools pins the Pushgateway command so `go mod tidy` keeps its dependencies.
package tools

import _ "github.com/prometheus/pushgateway"
