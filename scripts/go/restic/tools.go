//go:build tools

// Package tools pins the restic command so `go mod tidy` keeps its dependencies.
package tools

import _ "github.com/restic/restic/cmd/restic"
