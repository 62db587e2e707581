//go:build tools

// Package tools pins the older Docker Model Runner server release (v1.0.10, the main package at
// the root of github.com/docker/model-runner) that the version matrix runs against. Build with:
//
//	go build -trimpath -o model-runner github.com/docker/model-runner
package tools

import (
	_ "github.com/docker/model-runner"
)
