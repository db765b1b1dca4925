package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/kedge-io/kedge/host/config"
	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/sdk"
)

// controller changes the running modules: swaps asked for over the control socket, and config
// reloads when the config file changes. One change at a time.
type controller struct {
	mu      sync.Mutex
	spec    Spec
	mgr     *modules.Manager
	log     *slog.Logger
	path    string   // the config file ("" when running on defaults)
	sets    []string // --set flags, re-applied on every reload
	current Config
}

// options turns the request's settings into swap options; a bad value is an error naming it.
func swapOptions(r swapRequest) ([]modules.SwapOption, error) {
	if r.HealthTimeout == "" {
		return nil, nil
	}
	d, err := time.ParseDuration(r.HealthTimeout)
	if err != nil || d <= 0 {
		return nil, fmt.Errorf("swap request: healthTimeout: expected a positive duration like \"30s\", got %q", r.HealthTimeout)
	}
	return []modules.SwapOption{modules.WithHealthTimeout(d)}, nil
}

// swap replaces a running module with the same module on another runtime or file, keeping its
// settings. It does not change the config file: a restart runs what the file says.
func (c *controller) swap(ctx context.Context, name string, req swapRequest) (modules.SwapReport, error) {
	opts, err := swapOptions(req)
	if err != nil {
		return modules.SwapReport{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cur, ok := c.mgr.Planned(name)
	if !ok {
		return modules.SwapReport{}, fmt.Errorf("module %q is not running (see: %s module ls)", name, c.spec.Binary)
	}
	block := maps.Clone(cur.Block)
	if block == nil {
		block = map[string]any{}
	}
	delete(block, "path")
	delete(block, "sha256")
	block["runtime"] = string(req.Runtime)
	if req.Path != "" {
		block["path"] = req.Path
	}
	if req.SHA256 != "" {
		block["sha256"] = req.SHA256
	}
	// The running instance's settings came from the file, the KEDGE_ environment and --set: the new
	// one gets the same, but for what the request itself sets.
	ov := config.EnvOverrides(EnvPrefix, os.Environ())
	sets, err := config.ParseSet(c.sets)
	if err != nil {
		return modules.SwapReport{}, err
	}
	at := "modules." + name + "."
	ov = ov.Merge(sets).Without(at+"runtime", at+"path", at+"sha256", at+"enable")
	next, err := modules.PlanModule("swap request", name, block, &ov, sdk.Registered(), loaders(c.current.base()))
	if err != nil {
		ov.Attribute(err)
		return modules.SwapReport{}, err
	}
	next.Block = cur.Block // the file still says what it said
	return c.mgr.Swap(ctx, next, opts...)
}

// reload re-reads the config and applies module changes: a changed module block is swapped, a newly
// enabled module started, a disabled one stopped. An invalid config changes nothing.
func (c *controller) reload(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cfg, plan, err := Load(c.spec, c.path, c.sets, os.Environ())
	if err != nil {
		return fmt.Errorf("config reload refused, the running modules are unchanged: %w", err)
	}
	if !reflect.DeepEqual(hostPart(c.current), hostPart(cfg)) {
		c.log.Warn("config reload: settings outside modules changed; restart to apply them", "config", c.path)
	}
	want := make(map[string]modules.Planned, len(plan))
	for _, p := range plan {
		want[p.Info.Name] = p
	}
	var errs []error
	for _, name := range slices.Backward(c.mgr.Running()) {
		if _, ok := want[name]; !ok {
			c.log.Info("config reload: stopping module", "module", name)
			errs = append(errs, c.mgr.Remove(ctx, name))
		}
	}
	for _, p := range plan {
		cur, running := c.mgr.Planned(p.Info.Name)
		switch {
		case !running:
			c.log.Info("config reload: starting module", "module", p.Info.Name)
			errs = append(errs, c.mgr.Add(ctx, p))
		case !reflect.DeepEqual(cur.Block, p.Block):
			c.log.Info("config reload: swapping module", "module", p.Info.Name, "runtime", string(p.Settings.Runtime))
			_, err := c.mgr.Swap(ctx, p)
			errs = append(errs, err)
		}
	}
	c.current = cfg
	return errors.Join(errs...)
}

// hostPart is the config without its modules section.
func hostPart(cfg Config) any {
	v := reflect.ValueOf(cfg).Elem()
	cp := reflect.New(v.Type()).Elem()
	cp.Set(v)
	cp.Addr().Interface().(Config).base().Modules = nil
	return cp.Interface()
}

// watch reloads the config when its file changes (editors replace files, so the folder is watched)
// and ends with ctx.
func (c *controller) watch(ctx context.Context) error {
	if c.path == "" {
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch config %s: %w", c.path, err)
	}
	if err := w.Add(filepath.Dir(c.path)); err != nil {
		w.Close()
		return fmt.Errorf("watch config %s: %w", c.path, err)
	}
	go func() {
		defer w.Close()
		var debounce <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-w.Events:
				if filepath.Clean(ev.Name) == filepath.Clean(c.path) && ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) != 0 {
					debounce = time.After(200 * time.Millisecond) // one reload for an editor's burst of events
				}
			case err := <-w.Errors:
				c.log.Warn("config watch error", "err", err)
			case <-debounce:
				debounce = nil
				if err := c.reload(ctx); err != nil {
					c.log.Error("config reload", "err", err)
				} else {
					c.log.Info("config reloaded", "config", c.path)
				}
			}
		}
	}()
	return nil
}

// serveControl serves the control API on a unix socket that only the daemon's user can open: swapping
// a module runs new code, so the socket's file mode is the access check.
func serveControl(ctx context.Context, path string, c *controller) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin.socket %s: %w", path, err)
	}
	if conn, err := net.Dial("unix", path); err == nil {
		conn.Close()
		return nil, fmt.Errorf("admin.socket %s: another %s is running and serving it", path, c.spec.Binary)
	}
	_ = os.Remove(path) // a stale socket from a crash
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin.socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin.socket %s: %w", path, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/modules", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, c.mgr.Status(r.Context()))
	})
	mux.HandleFunc("POST /v1/modules/{name}/swap", func(w http.ResponseWriter, r *http.Request) {
		var req swapRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "decode swap request: " + err.Error()})
			return
		}
		if _, err := swapOptions(req); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		rep, err := c.swap(r.Context(), r.PathValue("name"), req)
		if err != nil {
			writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, rep)
	})
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		if err := c.reload(r.Context()); err != nil {
			writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"result": "reloaded"})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = os.Remove(path)
	}, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
