// Command llama-server is a stand-in for llama.cpp's llama-server, good enough
// for Docker Model Runner to start it as an inference engine in tests.
//
// DMR runs it as
//
//	llama-server -ngl 999 --metrics --model <gguf> --host <unix-socket> [flags...]
//
// and, at install time, with --version and --list-devices. Unknown flags are
// accepted and ignored. The server listens on the Unix socket given by --host
// (or on TCP host:port when --host is not a path) and answers /health,
// /metrics, /props, /v1/models, /v1/chat/completions, /v1/completions and
// /v1/embeddings with small, valid OpenAI-style JSON. Every JSON answer
// carries the argv it was started with under "fake_llama_server", so tests can
// see which flags DMR actually passed (e.g. --ctx-size, --model-draft).
//
// Environment knobs (all optional):
//
//	FAKE_LLAMA_ARGV_DIR     write <dir>/<pid>.json with {"argv":[...]} at start
//	FAKE_LLAMA_FAIL_FLAG    exit 1 at start if this flag is present in argv
//	FAKE_LLAMA_START_DELAY  Go duration: /health answers 503 until it elapses
//	FAKE_LLAMA_LOADING_WHILE  a path: /health answers 503 while it exists, so a
//	                        test holds a runner in DMR's loading state for as
//	                        long as it needs (DMR polls /health every 500 ms)
//	FAKE_LLAMA_BUSY_WHILE   a path: chat and text completions do not answer while
//	                        it exists (or until the client goes away), so a test
//	                        holds a runner busy with one request in flight
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const version = "version: 4242 (fa4e11a)\nbuilt with fake-llama-server for localmodel tests"

func flagValue(args []string, names ...string) (string, bool) {
	for i, a := range args {
		for _, n := range names {
			if a == n && i+1 < len(args) {
				return args[i+1], true
			}
			if strings.HasPrefix(a, n+"=") {
				return strings.TrimPrefix(a, n+"="), true
			}
		}
	}
	return "", false
}

func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

func exists(path string) bool {
	if path == "" {
		return false
	}
	_, err := os.Stat(path)
	return err == nil
}

// waitWhile blocks while path exists, until the request is cancelled.
func waitWhile(r *http.Request, path string) {
	for exists(path) {
		select {
		case <-r.Context().Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func main() {
	args := os.Args[1:]
	if hasFlag(args, "--version") {
		fmt.Fprintln(os.Stderr, version)
		return
	}
	if hasFlag(args, "--list-devices") {
		// llama.cpp prints this header followed by one "  NAME: description"
		// line per GPU; CPU-only builds list none.
		fmt.Println("Available devices:")
		return
	}
	if f := os.Getenv("FAKE_LLAMA_FAIL_FLAG"); f != "" && hasFlag(args, f) {
		fmt.Fprintf(os.Stderr, "error: invalid argument: %s\n", f)
		os.Exit(1)
	}

	argv := append([]string{filepath.Base(os.Args[0])}, args...)
	fmt.Fprintf(os.Stderr, "fake llama-server starting: %q\n", argv)
	if dir := os.Getenv("FAKE_LLAMA_ARGV_DIR"); dir != "" {
		data, _ := json.Marshal(map[string]any{"argv": argv, "pid": os.Getpid()})
		_ = os.MkdirAll(dir, 0o755)
		_ = os.WriteFile(filepath.Join(dir, strconv.Itoa(os.Getpid())+".json"), data, 0o644)
	}

	model, _ := flagValue(args, "--model", "-m")
	alias, ok := flagValue(args, "--alias", "-a")
	if !ok {
		alias = model
	}
	ctxSize := 4096
	if v, ok := flagValue(args, "--ctx-size", "-c"); ok {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			ctxSize = n
		}
	}
	embeddings := hasFlag(args, "--embeddings") || hasFlag(args, "--embedding")

	host, _ := flagValue(args, "--host")
	if host == "" {
		host = "127.0.0.1"
	}
	var ln net.Listener
	var err error
	if strings.Contains(host, "/") || strings.HasSuffix(host, ".sock") {
		_ = os.Remove(host)
		ln, err = net.Listen("unix", host)
	} else {
		port, ok := flagValue(args, "--port")
		if !ok {
			port = "8080"
		}
		ln, err = net.Listen("tcp", net.JoinHostPort(host, port))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: listen: %v\n", err)
		os.Exit(1)
	}

	readyAt := time.Now()
	if d, err := time.ParseDuration(os.Getenv("FAKE_LLAMA_START_DELAY")); err == nil {
		readyAt = readyAt.Add(d)
	}
	loadingWhile := os.Getenv("FAKE_LLAMA_LOADING_WHILE")
	busyWhile := os.Getenv("FAKE_LLAMA_BUSY_WHILE")
	meta := map[string]any{"argv": argv, "model": model, "n_ctx": ctxSize}
	writeJSON := func(w http.ResponseWriter, code int, v map[string]any) {
		v["fake_llama_server"] = meta
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	usage := map[string]any{"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
	now := func() int64 { return time.Now().Unix() }

	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		if time.Now().Before(readyAt) || exists(loadingWhile) {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": map[string]any{"code": 503, "message": "Loading model", "type": "unavailable_error"}})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	})
	mux.HandleFunc("/props", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{
			"default_generation_settings": map[string]any{"n_ctx": ctxSize},
			"model_path":                  model,
			"total_slots":                 1,
		})
	})
	models := func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []any{
			map[string]any{"id": alias, "object": "model", "created": now(), "owned_by": "llamacpp", "meta": map[string]any{"n_ctx_train": ctxSize}},
		}})
	}
	mux.HandleFunc("/v1/models", models)
	mux.HandleFunc("/models", models)
	chat := func(w http.ResponseWriter, r *http.Request) {
		waitWhile(r, busyWhile)
		var req map[string]any
		_ = json.NewDecoder(r.Body).Decode(&req)
		if req["stream"] == true {
			w.Header().Set("Content-Type", "text/event-stream")
			chunk, _ := json.Marshal(map[string]any{"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": now(), "model": alias,
				"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"role": "assistant", "content": "Hello from fake llama-server"}, "finish_reason": "stop"}}})
			fmt.Fprintf(w, "data: %s\n\ndata: [DONE]\n\n", chunk)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"id": "chatcmpl-fake", "object": "chat.completion", "created": now(), "model": alias,
			"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": "Hello from fake llama-server"}, "finish_reason": "stop"}},
			"usage":   usage})
	}
	mux.HandleFunc("/v1/chat/completions", chat)
	mux.HandleFunc("/chat/completions", chat)
	completion := func(w http.ResponseWriter, r *http.Request) {
		waitWhile(r, busyWhile)
		writeJSON(w, http.StatusOK, map[string]any{"id": "cmpl-fake", "object": "text_completion", "created": now(), "model": alias,
			"choices": []any{map[string]any{"index": 0, "text": "Hello from fake llama-server", "finish_reason": "stop", "logprobs": nil}},
			"usage":   usage})
	}
	mux.HandleFunc("/v1/completions", completion)
	mux.HandleFunc("/completions", completion)
	embed := func(w http.ResponseWriter, r *http.Request) {
		if !embeddings {
			writeJSON(w, http.StatusNotImplemented, map[string]any{"error": map[string]any{"code": 501, "message": "This server does not support embeddings. Start it with `--embeddings`", "type": "not_supported_error"}})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"object": "list", "model": alias,
			"data":  []any{map[string]any{"object": "embedding", "index": 0, "embedding": []float64{0.1, 0.2, 0.3, 0.4}}},
			"usage": map[string]any{"prompt_tokens": 1, "total_tokens": 1}})
	}
	mux.HandleFunc("/v1/embeddings", embed)
	mux.HandleFunc("/embeddings", embed)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": map[string]any{"code": 404, "message": "File Not Found", "type": "not_found_error"}})
	})

	srv := &http.Server{Handler: mux}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		fmt.Fprintf(os.Stderr, "error: serve: %v\n", err)
		os.Exit(1)
	}
}
