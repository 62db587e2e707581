// Command model-registry is a throwaway in-memory OCI registry holding model
// artifacts, for tests that run the real Docker Model Runner without access to
// Docker Hub. It uses model-runner's own test registry and artifact builder, so
// the artifacts are exactly what `docker model package` would push.
//
//	model-registry --addr 127.0.0.1:0 \
//	    --model ai/smollm2:latest=/path/dummy.gguf \
//	    --model ai/smollm2:135M-Q4_0=/path/dummy.gguf,context-size=2048
//
// Each --model REPO:TAG=FILE[,pad=BYTES][,context-size=N][,license=FILE][,chat-template=FILE]
// is built from a GGUF file and pushed to <addr>/REPO:TAG before the registry
// reports ready. pad=BYTES appends that many zero bytes to a copy of FILE: the
// weights become a distinct, bigger blob, so a pull really downloads it (DMR
// skips blobs it already stores and reports no progress for them). When ready it prints "READY <host:port>" on stdout (and writes
// host:port to --addr-file, if given), then serves until SIGTERM/SIGINT.
//
// Point DMR at it with DEFAULT_REGISTRY=<host:port> (plain HTTP is used for
// localhost/127.0.0.1), so that "ai/smollm2" is pulled from here, or pull
// "<host:port>/ai/smollm2:latest" explicitly.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/docker/model-runner/pkg/distribution/builder"
	reg "github.com/docker/model-runner/pkg/distribution/registry"
	"github.com/docker/model-runner/pkg/distribution/registry/testregistry"
)

type modelFlag []string

func (m *modelFlag) String() string     { return strings.Join(*m, " ") }
func (m *modelFlag) Set(v string) error { *m = append(*m, v); return nil }

func push(ctx context.Context, client *reg.Client, addr, spec string) error {
	name, rest, ok := strings.Cut(spec, "=")
	if !ok {
		return fmt.Errorf("--model %q: want REPO:TAG=FILE[,opt=value...]", spec)
	}
	parts := strings.Split(rest, ",")
	file := parts[0]
	for _, opt := range parts[1:] {
		if k, v, _ := strings.Cut(opt, "="); k == "pad" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return fmt.Errorf("%s: pad: want a byte count, got %q", name, v)
			}
			if file, err = padded(file, n); err != nil {
				return fmt.Errorf("%s: pad: %w", name, err)
			}
			defer os.RemoveAll(filepath.Dir(file)) // pushed below; the copy is not needed after that
		}
	}
	// A fixed creation time keeps digests stable across runs.
	b, err := builder.FromPath(file, builder.WithCreated(time.Unix(1735689600, 0).UTC()))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	for _, opt := range parts[1:] {
		k, v, _ := strings.Cut(opt, "=")
		switch k {
		case "pad":
			// applied to the file above
		case "context-size":
			n, err := strconv.ParseInt(v, 10, 32)
			if err != nil {
				return fmt.Errorf("%s: context-size: %w", name, err)
			}
			b, err = b.WithContextSize(int32(n))
			if err != nil {
				return err
			}
		case "license":
			if b, err = b.WithLicense(v); err != nil {
				return err
			}
		case "chat-template":
			if b, err = b.WithChatTemplateFile(v); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unknown option %q", name, k)
		}
	}
	target, err := client.NewTarget(addr + "/" + name)
	if err != nil {
		return err
	}
	if err := b.Build(ctx, target, io.Discard); err != nil {
		return fmt.Errorf("push %s: %w", name, err)
	}
	fmt.Fprintf(os.Stderr, "model-registry: pushed %s/%s\n", addr, name)
	return nil
}

// padded copies file into a temporary directory (same base name, so the format
// is still detected from the extension) with n zero bytes appended.
func padded(file string, n int64) (string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "model-registry-")
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, filepath.Base(file))
	return out, os.WriteFile(out, append(data, make([]byte, n)...), 0o644)
}

func main() {
	var models modelFlag
	listen := flag.String("addr", "127.0.0.1:0", "listen address")
	addrFile := flag.String("addr-file", "", "write the actual host:port here when ready")
	flag.Var(&models, "model", "REPO:TAG=FILE[,pad=BYTES][,context-size=N][,license=FILE][,chat-template=FILE] (repeatable)")
	flag.Parse()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "model-registry:", err)
		os.Exit(1)
	}
	addr := ln.Addr().String()
	srv := &http.Server{Handler: testregistry.New()}
	go func() { _ = srv.Serve(ln) }()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	client := reg.NewClient(reg.WithPlainHTTP(true))
	for _, spec := range models {
		if err := push(ctx, client, addr, spec); err != nil {
			fmt.Fprintln(os.Stderr, "model-registry:", err)
			os.Exit(1)
		}
	}
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(addr+"\n"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "model-registry:", err)
			os.Exit(1)
		}
	}
	fmt.Printf("READY %s\n", addr)
	<-ctx.Done()
	_ = srv.Close()
}
