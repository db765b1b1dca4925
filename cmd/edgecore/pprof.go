//go:build kedge_pprof

package main

import (
	"log/slog"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
	"runtime"
)

// A profiling build (go build -tags kedge_pprof ./cmd/edgecore) serves net/http/pprof on the
// loopback address in EDGECORE_PPROF (e.g. 127.0.0.1:6060), for the memory diet of issue 22 (see
// BENCHMARKS.md, device classes). Release builds never have it.
func init() {
	addr := os.Getenv("EDGECORE_PPROF")
	if addr == "" {
		return
	}
	runtime.MemProfileRate = 4096 // fine-grained heap profile: small allocations are what adds up here
	go func() {
		if err := http.ListenAndServe(addr, nil); err != nil {
			slog.Error("pprof server", "addr", addr, "err", err)
		}
	}()
}
