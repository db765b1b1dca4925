// Package hublink tests the cloud–edge link end to end in one process: a cloud host running cloudhub
// and an edge host running metamanager and edgehub, each with its own router and SQLite store, joined
// through the real certificate server, talking real TLS through a fault-injecting proxy.
package hublink

import (
	"context"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/plugins/builtin/cloudhub"
	"github.com/kedge-io/kedge/plugins/builtin/edgehub"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/test/faultproxy"

	_ "github.com/kedge-io/kedge/plugins/builtin/metamanager"
)

// host is one side: a router, a store and a module manager, as cloudcore or edgecore run them.
type host struct {
	rt  *router.Router
	db  *store.DB
	mgr *modules.Manager
	reg *prometheus.Registry
}

func startHost(t testing.TB, identity, dbPath string, mods []modules.Planned) *host {
	t.Helper()
	db, err := store.Open(dbPath, store.Options{Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	h := &host{rt: router.New(reg), db: db, reg: reg}
	h.mgr = modules.NewManager(modules.Deps{NodeName: identity, Router: h.rt, Store: db, Metrics: reg, StopTimeout: 5 * time.Second})
	if err := h.mgr.Start(context.Background(), mods); err != nil {
		db.Close()
		t.Fatal(err)
	}
	return h
}

func (h *host) stop() {
	_ = h.mgr.Stop(context.Background())
	_ = h.db.Close()
}

// recorder is a test module that records what it is handed, answers OK, and (as a stand-in for a
// cloud controller backed by an informer cache) can resend what a node's inventory lacks.
type recorder struct {
	name string
	mu   sync.Mutex
	got  []sdk.Message
	host sdk.Host
	// desired, when set, is the state to keep a node at: resource (edge form) -> resourceVersion.
	desired map[string]uint64
}

func (r *recorder) Start(_ context.Context, h sdk.Host) error { r.host = h; return nil }
func (r *recorder) Stop(context.Context) error                { return nil }

func (r *recorder) Handle(ctx context.Context, m sdk.Message) error {
	r.mu.Lock()
	r.got = append(r.got, m)
	desired := r.desired
	r.mu.Unlock()
	if m.Route.Operation == message.OpInventory && desired != nil {
		return r.resync(ctx, m, desired)
	}
	if m.Header.Sync {
		reply, err := m.Reply(r.name, "OK")
		if err != nil {
			return err
		}
		return r.host.Reply(ctx, reply)
	}
	return nil
}

// resync sends the node every desired object it does not hold at that version.
func (r *recorder) resync(ctx context.Context, inv sdk.Message, desired map[string]uint64) error {
	node := strings.Split(inv.Route.Resource, "/")[1]
	var items []struct {
		Resource        string `json:"resource"`
		ResourceVersion uint64 `json:"resourceVersion"`
	}
	if err := inv.DecodeContent(&items); err != nil {
		return err
	}
	held := map[string]uint64{}
	for _, it := range items {
		held[it.Resource] = it.ResourceVersion
	}
	for res, rv := range desired {
		if held[res] >= rv {
			continue
		}
		if err := r.host.Send(ctx, "cloudhub", object("resync", node, res, rv)); err != nil {
			return err
		}
	}
	return nil
}

func (r *recorder) snapshot() []sdk.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func (r *recorder) count(op string) int {
	n := 0
	for _, m := range r.snapshot() {
		if op == "" || m.Route.Operation == op {
			n++
		}
	}
	return n
}

func recorderInfo(r *recorder, group string) modules.Planned {
	return modules.Planned{Info: sdk.Info{Name: r.name, Group: group}, Settings: modules.Settings{Runtime: modules.Builtin}, Module: r}
}

// object is a downstream update of one object at a version.
func object(source, node, edgeResource string, rv uint64) message.Message {
	r, _ := message.ParseEdge(edgeResource)
	r.Node = node
	m, _ := message.New(source, "resource", message.OpUpdate, r.Cloud()).WithContent(map[string]any{"rv": rv})
	m.Header.ResourceVersion = strconv.FormatUint(rv, 10)
	return m
}

// link is a cloud and an edge joined through a proxy.
type link struct {
	t        *testing.T
	dir      string
	cloud    *host
	edge     *host
	proxy    *faultproxy.Proxy
	hub      *cloudhub.Module
	ctl      *recorder // cloud: edgecontroller stand-in (group "resource" dispatch) and hub events
	events   *recorder // cloud: hubevents group
	edged    *recorder // edge: consumer of downstream objects
	edgeEvts *recorder // edge: hubevents group
	certs    *pki.JoinResult
	hbeat    time.Duration
}

const nodeName = "edge-1"

func cloudModules(l *link) []modules.Planned {
	hub := cloudhub.New()
	hub.Address, hub.CertServerAddress, hub.PKIDir = "127.0.0.1:0", "127.0.0.1:0", filepath.Join(l.dir, "pki")
	if l.hub != nil { // a restart: the same addresses, as a restarted cloudcore has
		hub.Address, hub.CertServerAddress = l.hub.Address, l.hub.CertServerAddress
	}
	hub.Heartbeat, hub.AckTimeout, hub.QPS, hub.Burst = l.hbeat, time.Second, 1e6, 1e6
	hub.Dispatch = map[string]string{"resource": "edgecontroller"}
	l.hub = hub
	return []modules.Planned{
		recorderInfo(l.ctl, "controller"),
		recorderInfo(l.events, "hubevents"),
		{Info: sdk.Info{Name: cloudhub.Name, Group: "hub"}, Settings: modules.Settings{Runtime: modules.Builtin}, Module: hub},
	}
}

func newLink(t *testing.T, heartbeat time.Duration) *link {
	t.Helper()
	l := &link{t: t, dir: t.TempDir(), hbeat: heartbeat,
		ctl: &recorder{name: "edgecontroller"}, events: &recorder{name: "cloudevents"},
		edged: &recorder{name: "edged"}, edgeEvts: &recorder{name: "edgeevents"}}
	l.cloud = startHost(t, "cloudcore-test", filepath.Join(l.dir, "cloud.db"), cloudModules(l))
	t.Cleanup(func() { l.cloud.stop() })

	ca, _, err := pki.LoadOrCreateCA(context.Background(), pki.FileStorage{Dir: filepath.Join(l.dir, "pki")})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := pki.CreateToken(context.Background(), ca, pki.FileRecords{Dir: filepath.Join(l.dir, "pki")}, pki.TokenOptions{TTL: time.Hour, Node: nodeName})
	if err != nil {
		t.Fatal(err)
	}
	l.certs, err = pki.Join(context.Background(), pki.JoinOptions{CertServer: l.hub.CertServerAddress, Token: tok.String(), NodeName: nodeName, Dir: filepath.Join(l.dir, "certs")})
	if err != nil {
		t.Fatal(err)
	}
	l.proxy, err = faultproxy.New(l.hub.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.proxy.Close() })

	mm, _ := sdk.Lookup("metamanager")
	mmPlan, err := modules.Plan("test", map[string]any{"modules": map[string]any{"metamanager": map[string]any{
		"consumers": map[string]any{"item": "edged"}}}}, nil, []sdk.Info{mm}, nil)
	if err != nil {
		t.Fatal(err)
	}
	eh := edgehub.New()
	eh.Server = "localhost:" + strings.Split(l.proxy.Addr(), ":")[1]
	eh.CAFile, eh.CertFile, eh.KeyFile = l.certs.CAFile, l.certs.CertFile, l.certs.KeyFile
	eh.Heartbeat, eh.AckTimeout, eh.BackoffMin, eh.BackoffMax = heartbeat, time.Second, 10*time.Millisecond, 200*time.Millisecond
	l.edge = startHost(t, nodeName, filepath.Join(l.dir, "edge.db"), []modules.Planned{
		recorderInfo(l.edged, "edged"),
		recorderInfo(l.edgeEvts, "hubevents"),
		mmPlan[0],
		{Info: sdk.Info{Name: edgehub.Name, Group: "hub", Requires: []string{"metamanager"}}, Settings: modules.Settings{Runtime: modules.Builtin}, Module: eh},
	})
	t.Cleanup(func() { l.edge.stop() })
	l.waitEdge("the first connection", func() bool { return l.edgeEvts.count(message.OpConnected) >= 1 })
	return l
}

func (l *link) waitEdge(what string, cond func() bool) {
	l.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			var stacks strings.Builder
			_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
			l.t.Fatalf("timed out waiting for %s: edge consumer %d, cloud controller %d\n%s", what, l.edged.count(""), l.ctl.count(""), kedgeStacks(stacks.String()))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// kedgeStacks keeps the goroutine groups that run Kedge code, to see where a stall sits.
func kedgeStacks(all string) string {
	var out []string
	for _, g := range strings.Split(all, "\n\n") {
		if strings.Contains(g, "kedge-io/kedge/plugins") || strings.Contains(g, "kedge-io/kedge/host/hub") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// waitProgress waits until count reaches want, failing only when it stops moving for a minute: a
// loaded machine is allowed to be slow, a stalled link is not.
func (l *link) waitProgress(what string, count func() int, want int) {
	l.t.Helper()
	last, since := -1, time.Now()
	for {
		n := count()
		if n >= want {
			return
		}
		if n != last {
			last, since = n, time.Now()
		}
		if time.Since(since) > time.Minute {
			var stacks strings.Builder
			_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
			l.t.Fatalf("%s stalled at %d of %d for a minute\n%s", what, n, want, kedgeStacks(stacks.String()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
