//go:build tools

// Package tools pins the main packages of kube-apiserver, kubectl and
// kube-controller-manager so that `go mod tidy` keeps every module they need.
// Build with:
//
//	go build -trimpath -o kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
//	go build -trimpath -o kubectl k8s.io/kubernetes/cmd/kubectl
//	go build -trimpath -o kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
