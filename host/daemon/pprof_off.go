//go:build kedge_nopprof

package daemon

import "net/http"

// pprofBuilt is false: this build (a release class build, tag kedge_nopprof) has no profiler, so
// admin.pprof: true is refused by validation, naming the key.
var pprofBuilt = false

func servePprof(*http.ServeMux) {}
