//go:build tools

// Package tools pins Helm 4's command so that `go mod tidy` keeps every module it needs.
// Build with:
//
//	go build -trimpath -o helm helm.sh/helm/v4/cmd/helm
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
