//go:build tools

// Package tools pins the etcd main package (the root of go.etcd.io/etcd/server/v3)
// so that `go mod tidy` keeps every module it needs. Build with:
//
//	go build -trimpath -o etcd go.etcd.io/etcd/server/v3
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
