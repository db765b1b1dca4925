// Package pluginmanager installs plugins on the edge as PluginRollouts ask: it fetches the signed
// plugin index from the registry (mutual TLS with the node certificate), verifies the plugin against
// the pinned registry keys, installs it into its plugins folder, hot-swaps the module through its
// host handle (or edgecore's control socket), checks it stays healthy, and reports each step to the
// cloud. A failed swap or health check goes back to the module's last good version, which is kept on
// disk and in the store so a node rebooted while offline runs it again. It also reports the node's
// inventory (modules, outbox depth, version, class) for the fleet console (inventory.go).
package pluginmanager

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/plugin-registry/client"
	"github.com/kedge-io/kedge/plugin-registry/index"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/control"
	"github.com/kedge-io/kedge/sdk/message"
)

// Name is the module's routing address (metamanager hands it type pluginrollout).
const Name = "pluginmanager"

// Node states reported for a rollout (the PluginRollout status's node states).
const (
	StateInstalling = "Installing"
	StateUpdated    = "Updated"
	StateFailed     = "Failed"
	StateRolledBack = "RolledBack"
)

func init() {
	sdk.Register(sdk.Info{
		Name:    Name,
		Group:   "plugin",
		Doc:     "Installs plugins as PluginRollouts ask: fetches and verifies them from the signed registry, hot-swaps the module, health-checks it, rolls back to the last good version and reports to the cloud.",
		Enabled: false,
		New:     func() sdk.Module { return New() },
	})
}

// Module is the plugin manager; its exported fields are its settings.
type Module struct {
	RegistryURL   string        `yaml:"registryURL" doc:"The plugin registry: https://<cloudcore>:10002/registry (index.json and artifacts/ under it)."`
	CAFile        string        `yaml:"caFile" doc:"CA that signed the registry's server certificate (the cloud's CA, as edgehub's caFile)."`
	CertFile      string        `yaml:"certFile" doc:"This node's certificate, presented to the registry (as edgehub's certFile)."`
	KeyFile       string        `yaml:"keyFile" doc:"This node's private key (as edgehub's keyFile)."`
	TrustedKeys   []string      `yaml:"trustedKeys" doc:"Paths of the registry's ed25519 public keys (PKIX PEM); an index signed by no trusted key is refused."`
	PluginsDir    string        `yaml:"pluginsDir" doc:"Installed plugins (<plugin>/<version>/), the last good version of each module (lastgood/) and the registry state (registry.state)."`
	ControlSocket string        `yaml:"controlSocket" doc:"Empty: modules are listed and swapped through the host (its ModuleLister and ModuleSwapper). Set: through this control socket of edgecore (admin.socket) instead, for a host without them."`
	Hub           string        `yaml:"hub" doc:"The module that carries reports to the cloud."`
	SwapTimeout   time.Duration `yaml:"swapTimeout" doc:"Bound on one swap request (the new instance's preparation — a WASM module compiles, up to plugins.prepareTimeout —, its start and health check; the old instance serves meanwhile)."`
	HealthTimeout time.Duration `yaml:"healthTimeout" doc:"After a swap, the module must be healthy for healthStable within this, else it is rolled back."`
	HealthStable  time.Duration `yaml:"healthStable" doc:"How long a swapped-in module must stay healthy to count as good."`
	FetchTimeout  time.Duration `yaml:"fetchTimeout" doc:"Bound on fetching the index and downloading the artifact."`
	// Inventory: the node's modules, outbox depth, version and class, reported for the console.
	Inventory Inventory `yaml:"inventory" doc:"The node's inventory for the fleet console (modules with runtime, release, sha256, health and counters; outbox depth; edgecore version and device class), sent upstream to rolloutcontroller, which keeps it as the Node annotation kedge.io/inventory."`

	host    sdk.Host
	trusted []ed25519.PublicKey
	ctl     *control.Client
	lister  sdk.ModuleLister
	swapper sdk.ModuleSwapper
	inv     invState
	// ready is closed once the start-up check of the last good versions is done; workers wait for it.
	ready chan struct{}
	// life is the workers' context: cancelled by Stop (and when the host cancels Start's context).
	life   context.Context
	cancel context.CancelFunc
	// mu guards queues and stopped; one worker goroutine runs per target module with work queued.
	mu      sync.Mutex
	queues  map[string]*queue
	stopped bool
	// indexMu serialises fetching the index, whose rollback state file is read, checked and written.
	indexMu    sync.Mutex
	wg         sync.WaitGroup
	done       prometheus.Counter
	states     *prometheus.CounterVec
	superseded prometheus.Counter
	goos       string
	goarch     string
	// now is the registry client's clock (tests).
	now func() time.Time
}

var _ sdk.Module = (*Module)(nil)

// New returns a plugin manager with its defaults.
func New() *Module {
	return &Module{PluginsDir: "/var/lib/kedge/plugins", Hub: "edgehub", Inventory: defaultInventory(),
		CAFile: "/var/lib/kedge/certs/ca.crt", CertFile: "/var/lib/kedge/certs/node.crt", KeyFile: "/var/lib/kedge/certs/node.key",
		SwapTimeout: control.DefaultPrepareTimeout + 2*time.Minute, HealthTimeout: 30 * time.Second, HealthStable: 3 * time.Second, FetchTimeout: 5 * time.Minute,
		goos: runtime.GOOS, goarch: runtime.GOARCH}
}

// Rollout is the content of a pluginrollout message from the cloud.
type Rollout struct {
	Rollout             string   `json:"rollout"` // <namespace>/<name>
	Generation          int64    `json:"generation"`
	Plugin              string   `json:"plugin"`
	Version             string   `json:"version"`
	Runtime             string   `json:"runtime"`
	Module              string   `json:"module"`
	GrantedCapabilities []string `json:"grantedCapabilities"`
}

// Report is the content of a pluginstatus message to the cloud.
type Report struct {
	Rollout    string `json:"rollout"`
	Generation int64  `json:"generation"`
	Version    string `json:"version"`
	State      string `json:"state"`
	Message    string `json:"message"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)

func (m *Module) Start(ctx context.Context, h sdk.Host) error {
	if err := m.Validate(); err != nil { // the host checked already; a direct caller gets the same answer
		return err
	}
	for _, p := range m.TrustedKeys {
		k, err := index.ReadPublicKey(p)
		if err != nil {
			return fmt.Errorf("trustedKeys: %w", err)
		}
		m.trusted = append(m.trusted, k)
	}
	abs, err := filepath.Abs(m.PluginsDir)
	if err != nil {
		return fmt.Errorf("pluginsDir: %w", err)
	}
	m.PluginsDir = abs
	if err := os.MkdirAll(m.PluginsDir, 0o755); err != nil {
		return fmt.Errorf("pluginsDir: %w", err)
	}
	m.host = h
	if err := m.controls(h); err != nil {
		return err
	}
	m.done = prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_pluginmanager_startup_swaps_total", Help: "Modules swapped at start to their last good version."})
	m.states = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_pluginmanager_rollouts_total", Help: "Rollout results reported, by state."}, []string{"state"})
	m.superseded = prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_pluginmanager_superseded_total", Help: "Rollout messages dropped from a module's queue or cancelled while downloading because a newer generation of the same rollout arrived."})
	m.inv.reports = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_pluginmanager_inventory_reports_total", Help: "Inventory reports sent upstream, by reason (change: something but counters changed; period: inventory.interval passed)."}, []string{"reason"})
	m.inv.bytes = prometheus.NewGauge(prometheus.GaugeOpts{Name: "kedge_pluginmanager_inventory_bytes", Help: "Size of the last inventory report sent (its JSON content)."})
	for _, c := range []prometheus.Collector{m.done, m.states, m.superseded, m.inv.reports, m.inv.bytes} {
		if err := h.Metrics().Register(c); err != nil {
			return err
		}
	}
	m.life, m.cancel = context.WithCancel(ctx)
	m.queues = map[string]*queue{}
	m.ready = make(chan struct{})
	// edgecore swaps (host handle or control socket) once every module started: check the last good versions
	// in the background, holding rollouts until that is done.
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(m.ready)
		m.restoreLastGood(m.life)
	}()
	if m.Inventory.Interval > 0 {
		m.wg.Go(func() { m.reportInventory(m.life) })
	}
	return nil
}

// Stop cancels the rollouts in progress (a download stops; a swap request in flight is abandoned,
// edgecore finishes or rolls it back on its side), drops the queued ones (metamanager hands them
// again at the next start) and waits for the workers.
func (m *Module) Stop(context.Context) error {
	if m.cancel == nil {
		return nil
	}
	m.mu.Lock()
	m.stopped = true
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	return nil
}

// Handle takes a pluginrollout object (stored by metamanager) and queues it for its target module's
// worker; it returns at once (a slow download holds up no other message).
func (m *Module) Handle(ctx context.Context, msg sdk.Message) error {
	if msg.IsReply() {
		return nil
	}
	res, err := message.ParseEdge(msg.Route.Resource)
	if err != nil {
		if _, edge, err2 := message.ToEdge(msg.Route.Resource); err2 == nil {
			res, err = message.ParseEdge(edge)
		}
		if err != nil {
			return fmt.Errorf("pluginmanager: resource %q: %w", msg.Route.Resource, err)
		}
	}
	if res.Type != "pluginrollout" {
		return fmt.Errorf("pluginmanager: resource %q is not a pluginrollout", msg.Route.Resource)
	}
	if msg.Route.Operation == message.OpDelete {
		m.host.Logger().Info("rollout deleted; what it installed keeps running", "rollout", res.Namespace+"/"+res.Name)
		return m.forget(ctx, res.Namespace+"/"+res.Name)
	}
	var r Rollout
	if err := msg.DecodeContent(&r); err != nil {
		return fmt.Errorf("pluginmanager: %s: %w", msg.Route.Resource, err)
	}
	if r.Rollout == "" {
		r.Rollout = res.Namespace + "/" + res.Name
	}
	if ns, name, ok := strings.Cut(r.Rollout, "/"); !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("pluginmanager: rollout %q is not <namespace>/<name>", r.Rollout)
	}
	return m.enqueue(r)
}

// rollout runs one rollout generation on this node and reports its result. fetchCtx bounds the
// download only: it is cancelled when a newer generation of the same rollout supersedes this one
// before anything is swapped.
func (m *Module) rollout(ctx, fetchCtx context.Context, r Rollout) error {
	ns, name, _ := strings.Cut(r.Rollout, "/")
	resultKey := sdk.Key{Type: typeResult, Namespace: ns, Name: name}
	var prev Result
	if _, err := getJSON(ctx, m.host.Store(), resultKey, &prev); err != nil {
		return err
	}
	log := m.host.Logger().With("rollout", r.Rollout, "generation", r.Generation, "plugin", r.Plugin, "version", r.Version, "target", r.Module)
	finish := func(state, text string) error {
		if state != StateInstalling {
			if err := putJSON(ctx, m.host.Store(), resultKey, Result{Generation: r.Generation, Version: r.Version, State: state, Message: text}); err != nil {
				log.Error("record rollout result", "err", err)
			}
			m.states.WithLabelValues(state).Inc()
			if state == StateUpdated {
				log.Info("plugin updated", "message", text)
			} else {
				log.Warn("plugin rollout did not succeed on this node", "state", state, "message", text)
			}
		}
		return m.report(ctx, ns, name, Report{Rollout: r.Rollout, Generation: r.Generation, Version: r.Version, State: state, Message: text})
	}

	if prev.Generation > r.Generation {
		log.Info("older rollout generation ignored", "recorded", prev.Generation)
		return nil
	}
	if prev.Generation == r.Generation && prev.State != "" && prev.State != StateUpdated {
		// Delivered again (a restart, a reconnect): report what it came to; a new generation retries.
		return finish(prev.State, prev.Message)
	}
	if msg := validate(r); msg != "" {
		return finish(StateFailed, msg)
	}
	// Already running and good (delivered again, or the store was lost but pluginsDir kept): report
	// Updated without reinstalling.
	if good, ok, err := m.lastGood(ctx, r.Module); err == nil && ok && good.Plugin == r.Plugin && good.Version == r.Version && good.Runtime == r.Runtime {
		if st, err := m.status(ctx, r.Module); err == nil && runs(st, good) && st.Health == "" {
			return finish(StateUpdated, fmt.Sprintf("%s %s already runs as module %s", r.Plugin, r.Version, r.Module))
		}
	}
	if err := finish(StateInstalling, "fetching "+r.Plugin+" "+r.Version+" from the registry"); err != nil {
		log.Warn("report Installing", "err", err)
	}
	state, text := m.install(ctx, fetchCtx, r, log)
	return finish(state, text)
}

func validate(r Rollout) string {
	switch {
	case r.Generation <= 0:
		return fmt.Sprintf("generation %d: must be positive", r.Generation)
	case !nameRE.MatchString(r.Plugin):
		return fmt.Sprintf("plugin %q: not a plugin name", r.Plugin)
	case r.Version == "":
		return "version: empty"
	case r.Runtime != index.RuntimeProcess && r.Runtime != index.RuntimeWASM:
		return fmt.Sprintf("runtime %q: must be process or wasm", r.Runtime)
	case !nameRE.MatchString(r.Module):
		return fmt.Sprintf("module %q: not a module name", r.Module)
	case r.Module == Name:
		return "module pluginmanager cannot replace itself"
	}
	return ""
}

// install fetches, verifies, installs and swaps in r's plugin; it returns the node's state and why.
func (m *Module) install(ctx, fetchCtx context.Context, r Rollout, log interface {
	Info(string, ...any)
	Warn(string, ...any)
}) (string, string) {
	good, hasGood, err := m.lastGood(ctx, r.Module)
	if err != nil {
		return StateFailed, "read the last good version: " + err.Error()
	}
	inst, err := m.fetch(fetchCtx, r)
	if err != nil {
		if cause := context.Cause(fetchCtx); cause != nil && fetchCtx.Err() != nil {
			err = cause
		}
		return StateFailed, "nothing installed: " + err.Error()
	}
	log.Info("plugin verified and installed; swapping", "path", inst.Path)
	swapErr := m.swapAndCheck(ctx, inst)
	if swapErr == nil {
		inst.RecordedAt = time.Now().UTC()
		if err := m.saveLastGood(ctx, inst); err != nil {
			return StateUpdated, fmt.Sprintf("%s %s runs as module %s, but %v", r.Plugin, r.Version, r.Module, err)
		}
		return StateUpdated, fmt.Sprintf("%s %s runs as module %s (%s)", r.Plugin, r.Version, r.Module, r.Runtime)
	}
	if !hasGood {
		return StateFailed, fmt.Sprintf("%v; no last good version of module %s is recorded, so it was not rolled back", swapErr, r.Module)
	}
	if err := m.ensureRunning(ctx, good); err != nil {
		return StateFailed, fmt.Sprintf("%v; rolling back to %s %s failed too: %v", swapErr, good.Plugin, good.Version, err)
	}
	return StateRolledBack, fmt.Sprintf("%v; rolled back to the last good version %s %s", swapErr, good.Plugin, good.Version)
}

// fetch verifies the index and downloads r's artifact into pluginsDir/<plugin>/<version>/.
func (m *Module) fetch(ctx context.Context, r Rollout) (Installed, error) {
	ctx, cancel := context.WithTimeout(ctx, m.FetchTimeout)
	defer cancel()
	c, err := m.registry()
	if err != nil {
		return Installed{}, err
	}
	m.indexMu.Lock()
	idx, err := c.Index(ctx)
	m.indexMu.Unlock()
	if err != nil {
		return Installed{}, fmt.Errorf("registry index refused: %w", err)
	}
	p, err := idx.Find(r.Plugin, r.Version)
	if err != nil {
		return Installed{}, err
	}
	if err := p.CheckAPI(sdk.APIVersion); err != nil {
		return Installed{}, err
	}
	if r.Runtime == index.RuntimeWASM {
		missing, err := checkGranted(p.Capabilities, r.GrantedCapabilities)
		if err != nil {
			return Installed{}, err
		}
		if len(missing) > 0 {
			return Installed{}, fmt.Errorf("%s %s asks for capabilities the rollout does not grant: %s", r.Plugin, r.Version, strings.Join(missing, ", "))
		}
	}
	a, err := p.Artifact(r.Runtime, m.goos, m.goarch)
	if err != nil {
		return Installed{}, err
	}
	file := r.Plugin
	if r.Runtime == index.RuntimeWASM {
		file += ".wasm"
	}
	dir := filepath.Join(m.PluginsDir, r.Plugin, r.Version)
	dst := filepath.Join(dir, file)
	inst := Installed{Module: r.Module, Plugin: r.Plugin, Version: r.Version, Runtime: r.Runtime, Path: dst, SHA256: a.SHA256,
		Rollout: r.Rollout, Generation: r.Generation}
	if sum, err := fileSHA256(dst); err == nil && sum == a.SHA256 {
		return inst, nil // installed before (a resend); the file is what the index names
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Installed{}, err
	}
	if _, err := c.Download(ctx, p, r.Runtime, m.goos, m.goarch, dst); err != nil {
		_ = os.Remove(dir) // only if empty: a refused artifact leaves no trace
		return Installed{}, err
	}
	return inst, nil
}

func (m *Module) registry() (*client.Client, error) {
	var tlsCfg *tls.Config
	if strings.HasPrefix(m.RegistryURL, "https://") {
		cert, err := tls.LoadX509KeyPair(m.CertFile, m.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("certFile/keyFile: %w", err)
		}
		pem, err := os.ReadFile(m.CAFile)
		if err != nil {
			return nil, fmt.Errorf("caFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("caFile %s holds no PEM certificate", m.CAFile)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	c, err := client.New(m.RegistryURL, m.trusted, sdk.APIVersion, tlsCfg)
	if err != nil {
		return nil, err
	}
	c.State = &index.StateFile{Path: filepath.Join(m.PluginsDir, "registry.state")}
	c.Now = m.now
	return c, nil
}

// swapAndCheck swaps inst in and waits until it has stayed healthy for healthStable.
func (m *Module) swapAndCheck(ctx context.Context, inst Installed) error {
	if _, err := m.swap(ctx, inst.Module, control.Runtime(inst.Runtime), inst.Path, inst.SHA256); err != nil {
		return fmt.Errorf("swap of module %s to %s %s refused: %w", inst.Module, inst.Plugin, inst.Version, err)
	}
	return m.waitHealthy(ctx, inst)
}

// waitHealthy polls the module's status until it has run inst healthily for healthStable; an
// unhealthy report, another file running or healthTimeout passing is an error.
func (m *Module) waitHealthy(ctx context.Context, inst Installed) error {
	deadline := time.Now().Add(m.HealthTimeout)
	var since time.Time
	tick := time.NewTicker(min(m.HealthStable/4, 250*time.Millisecond))
	defer tick.Stop()
	for {
		st, err := m.status(ctx, inst.Module)
		switch {
		case err != nil:
			return fmt.Errorf("health check of module %s: %w", inst.Module, err)
		case !runs(st, inst):
			return fmt.Errorf("health check of module %s: it runs %s %s, not %s %s", inst.Module, st.Runtime, st.Path, inst.Runtime, inst.Path)
		case st.Health != "":
			return fmt.Errorf("module %s %s %s is unhealthy: %s", inst.Module, inst.Plugin, inst.Version, st.Health)
		case since.IsZero():
			since = time.Now()
		case time.Since(since) >= m.HealthStable:
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("module %s %s %s was not healthy for %s within %s", inst.Module, inst.Plugin, inst.Version, m.HealthStable, m.HealthTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// ensureRunning makes module inst.Module run inst (swapping it in if something else runs).
func (m *Module) ensureRunning(ctx context.Context, inst Installed) error {
	st, err := m.status(ctx, inst.Module)
	if err != nil {
		return err
	}
	if runs(st, inst) && st.Health == "" {
		return nil
	}
	if sum, err := fileSHA256(inst.Path); err != nil || sum != inst.SHA256 {
		return fmt.Errorf("the last good file %s is missing or changed (sha256 %s, recorded %s): %v", inst.Path, sum, inst.SHA256, err)
	}
	return m.swapAndCheck(ctx, inst)
}

func (m *Module) status(ctx context.Context, module string) (control.Status, error) {
	all, err := m.modules(ctx)
	if err != nil {
		return control.Status{}, err
	}
	for _, s := range all {
		if s.Name == module {
			return s, nil
		}
	}
	return control.Status{}, fmt.Errorf("module %s is not running on this node", module)
}

// runs says whether status shows inst: same runtime and file, and (as far as the status tells) the
// same sha256.
func runs(st control.Status, inst Installed) bool {
	if string(st.Runtime) != inst.Runtime || filepath.Clean(st.Path) != filepath.Clean(inst.Path) {
		return false
	}
	return len(inst.SHA256) < 12 || strings.Contains(st.Version, "sha256:"+inst.SHA256[:12])
}

// restoreLastGood runs at start: every module with a recorded last good version must run it (a node
// that rebooted while offline starts what its config file says; the update since is put back).
func (m *Module) restoreLastGood(ctx context.Context) {
	names, err := m.lastGoodModules(ctx)
	if err != nil {
		m.host.Logger().Error("read the last good versions", "err", err)
		return
	}
	if len(names) == 0 {
		return
	}
	// Wait for the module list (the control socket is served once edgecore has started every module;
	// the host handle answers at once, and a swap through it waits for the start: see swap).
	wait := 100 * time.Millisecond
	for {
		if _, err := m.modules(ctx); err == nil {
			break
		} else if ctx.Err() != nil {
			return
		} else if wait >= 5*time.Second {
			m.host.Logger().Debug("waiting for edgecore's control socket", "socket", m.ControlSocket, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
	for _, name := range names {
		good, ok, err := m.lastGood(ctx, name)
		if err != nil || !ok {
			m.host.Logger().Error("read the last good version", "target", name, "err", err)
			continue
		}
		st, err := m.status(ctx, name)
		if err != nil {
			m.host.Logger().Warn("module with a last good version is not running; enable it in the config", "target", name, "err", err)
			continue
		}
		if runs(st, good) {
			m.host.Logger().Info("module runs its last good version", "target", name, "plugin", good.Plugin, "version", good.Version)
			continue
		}
		m.host.Logger().Info("module does not run its last good version; swapping it in", "target", name, "runs", string(st.Runtime)+" "+st.Path, "plugin", good.Plugin, "version", good.Version)
		if err := m.ensureRunning(ctx, good); err != nil {
			m.host.Logger().Error("could not start the last good version", "target", name, "err", err)
			continue
		}
		m.done.Inc()
	}
}

// report sends a rollout state to the cloud through the hub (durably queued while offline).
func (m *Module) report(ctx context.Context, ns, name string, rep Report) error {
	res := message.Resource{Namespace: ns, Type: "pluginstatus", Name: name}
	msg, err := message.New(Name, "plugin", message.OpUpdate, res.Edge()).WithContent(rep)
	if err != nil {
		return err
	}
	if err := m.host.Send(ctx, m.Hub, msg); err != nil {
		return fmt.Errorf("report %s of %s to %s: %w", rep.State, rep.Rollout, m.Hub, err)
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
