package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kedge-io/kedge/host/modules"
)

type adminServer struct {
	srv *http.Server
	ln  net.Listener
}

// startAdmin listens before returning, so a taken port fails the start with a clear error.
func startAdmin(addr string, pprofOn bool, reg *prometheus.Registry, mgr *modules.Manager, log *slog.Logger) (*adminServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin.address %s: %w (is another instance running? change admin.address or set it empty to disable)", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := mgr.Ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	// The cloud link on its own: 503 while any link module (edgehub, edgestream) is disconnected,
	// which /readyz does not count (an edge node serves offline).
	mux.HandleFunc("GET /readyz/cloud", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		links, err := mgr.Links(ctx)
		if err != nil {
			http.Error(w, "cloud link down: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if len(links) == 0 {
			fmt.Fprintln(w, "ok (no module holds a cloud link)")
			return
		}
		names := make([]string, 0, len(links))
		for n := range links {
			names = append(names, n)
		}
		slices.Sort(names)
		fmt.Fprintln(w, "ok:", strings.Join(names, ", "), "connected")
	})
	// The host's own metrics and each running module instance's.
	mux.Handle("GET /metrics", promhttp.HandlerFor(prometheus.Gatherers{reg, mgr}, promhttp.HandlerOpts{Registry: reg}))
	if pprofOn {
		servePprof(mux) // pprof.go; refused at validation in a build without it (pprof_off.go)
	}
	s := &adminServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin server stopped", "err", err)
		}
	}()
	log.Info("admin server listening", "address", ln.Addr().String())
	return s, nil
}

func (s *adminServer) close(ctx context.Context) {
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
}

func newRegistry(binary string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "kedge_build_info",
			Help:        "Always 1; labels say which binary and version runs.",
			ConstLabels: prometheus.Labels{"binary": binary, "version": Version, "goversion": runtime.Version()},
		}, func() float64 { return 1 }),
	)
	return reg
}
