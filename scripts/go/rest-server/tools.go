//go:build tools

// Package tools pins the rest-server command so `go mod tidy` keeps its dependencies.
package tools

import _ "github.com/restic/rest-server/cmd/rest-server"
