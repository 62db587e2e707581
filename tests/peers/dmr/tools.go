//go:build tools

// Package tools pins the Docker Model Runner server (the main package at the
// root of github.com/docker/model-runner). Build with:
//
//	go build -trimpath -tags=novllm -o model-runner github.com/docker/model-runner
package tools

import (
	_ "github.com/docker/model-runner"
)
