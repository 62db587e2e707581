// Command kstatus prints what kstatus (github.com/fluxcd/cli-utils/pkg/kstatus/status, the
// library Helm 4's --wait and Flux's health checks use) computes for Kubernetes objects.
//
//	kstatus < objects.yaml
//
// stdin holds one or more objects as JSON or YAML (several YAML documents, or a *List with
// items, as `kubectl get -o json` prints). For each object one JSON line goes to stdout:
//
//	{"kind":"LocalModel","namespace":"ns","name":"x","status":"InProgress","message":"..."}
//
// status is status.Compute's Result.Status (InProgress, Current, Failed, Terminating), message
// its Result.Message. A Compute error is printed as {"error": "..."} on that object's line and
// makes the exit code 1; unreadable input exits 2.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

type line struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Status    string `json:"status,omitempty"`
	Message   string `json:"message"`
	Error     string `json:"error,omitempty"`
}

func objects(r io.Reader) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bufio.NewReader(r), 4096)
	var out []*unstructured.Unstructured
	for {
		var doc json.RawMessage
		if err := dec.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		// As the API machinery reads objects: integers as int64 (status.Compute needs them so).
		var raw map[string]interface{}
		if err := utiljson.Unmarshal(doc, &raw); err != nil {
			return nil, err
		}
		if len(raw) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: raw}
		if strings.HasSuffix(u.GetKind(), "List") {
			if items, ok := raw["items"].([]interface{}); ok {
				for _, item := range items {
					if m, ok := item.(map[string]interface{}); ok {
						out = append(out, &unstructured.Unstructured{Object: m})
					}
				}
				continue
			}
		}
		out = append(out, u)
	}
}

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: kstatus < objects.(json|yaml)")
		os.Exit(2)
	}
	objs, err := objects(os.Stdin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kstatus: reading stdin: %v\n", err)
		os.Exit(2)
	}
	enc := json.NewEncoder(os.Stdout)
	code := 0
	for _, u := range objs {
		l := line{Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName()}
		res, err := status.Compute(u)
		if err != nil {
			l.Error = err.Error()
			code = 1
		} else {
			l.Status = res.Status.String()
			l.Message = res.Message
		}
		if err := enc.Encode(l); err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
			os.Exit(2)
		}
	}
	os.Exit(code)
}
