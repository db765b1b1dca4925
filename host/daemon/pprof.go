//go:build !kedge_nopprof

package daemon

import (
	"net/http"
	"net/http/pprof"
)

// pprofBuilt says whether admin.pprof can be turned on: release class builds leave the profiler out
// (build tag kedge_nopprof: net/http/pprof and runtime/pprof are about 0.5 MiB of an 8–22 MiB goal).
var pprofBuilt = true

func servePprof(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index) // heap, goroutine, allocs, ... by name
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
}
