package daemon

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/host/modules"
)

// TestAdminServesProfilesOnlyWhenPprofIsOn proves /debug/pprof/ is absent by default (profiles show a
// process's internals) and serves the heap and goroutine profiles with admin.pprof on.
func TestAdminServesProfilesOnlyWhenPprofIsOn(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		pprof bool
		want  int
	}{{false, http.StatusNotFound}, {true, http.StatusOK}} {
		reg := prometheus.NewRegistry()
		mgr := modules.NewManager(modules.Deps{Logger: log, Metrics: reg})
		s, err := startAdmin("127.0.0.1:0", tc.pprof, reg, mgr, log)
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{"/debug/pprof/heap", "/debug/pprof/goroutine?debug=1"} {
			resp, err := http.Get("http://" + s.ln.Addr().String() + path)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("admin.pprof %v: GET %s = %d, want %d", tc.pprof, path, resp.StatusCode, tc.want)
			}
		}
		s.close(context.Background())
	}
}

// TestAPprofSettingIsRefusedByNameInABuildWithoutTheProfiler proves that a release class build (tag
// kedge_nopprof, which links no profiler: hack/modgen's dependency rules) refuses admin.pprof: true
// at validation, naming the key, instead of starting without the profiles it was asked for.
func TestAPprofSettingIsRefusedByNameInABuildWithoutTheProfiler(t *testing.T) {
	built := pprofBuilt
	t.Cleanup(func() { pprofBuilt = built })
	pprofBuilt = false
	dir := t.TempDir()
	_, _, err := Load(vtSpec(dir), "", []string{"admin.pprof=true"}, nil)
	if err == nil || !strings.Contains(err.Error(), "admin.pprof: this build has no profiler") {
		t.Fatalf("Load(--set admin.pprof=true) without a profiler = %v, want it refused naming admin.pprof", err)
	}
	if _, _, err := Load(vtSpec(dir), "", nil, nil); err != nil {
		t.Fatalf("pprof off is valid in any build: %v", err)
	}
}
