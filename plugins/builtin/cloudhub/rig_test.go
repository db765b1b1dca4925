package cloudhub

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/test/k8senv"
)

// The control plane is started by the first test that needs it, and stopped after the last.
var (
	k8sOnce sync.Once
	k8s     *k8senv.Env
	k8sErr  error
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if k8s != nil {
		_ = k8s.Stop()
	}
	os.Exit(code)
}

func controlPlane(t *testing.T) *k8senv.Env {
	t.Helper()
	if testing.Short() || os.Getenv("KEDGE_SKIP_K8S") != "" {
		t.Skip("needs the control plane (not with -short)")
	}
	k8sOnce.Do(func() { k8s, k8sErr = k8senv.Start() })
	if k8sErr != nil {
		t.Fatal("this test needs a control plane:", k8sErr)
	}
	return k8s
}

// cloud is cloudcore with cloudhub as it runs it: a real router, SQLite store and module manager.
type cloud struct {
	rt  *router.Router
	db  *store.DB
	mgr *modules.Manager
	hub *Module
}

// startCloud runs cloudhub on loopback ports, configured further by configure.
func startCloud(t *testing.T, configure func(*Module), others ...modules.Planned) *cloud {
	t.Helper()
	c, err := tryStartCloud(t, configure, others...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tryStartCloud is startCloud that returns why cloudhub did not start; others are cloud modules
// started beside it (dispatch targets).
func tryStartCloud(t *testing.T, configure func(*Module), others ...modules.Planned) (*cloud, error) {
	t.Helper()
	c, start, err := newCloud(t, configure, others...)
	if err != nil {
		return nil, err
	}
	if err := start(); err != nil {
		c.db.Close()
		return nil, err
	}
	t.Cleanup(c.stop)
	return c, nil
}

// newCloud builds cloudhub and its host; start starts the modules (cloudhub first, then others).
func newCloud(t *testing.T, configure func(*Module), others ...modules.Planned) (*cloud, func() error, error) {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(filepath.Join(dir, "cloud.db"), store.Options{Synchronous: "normal"})
	if err != nil {
		return nil, nil, err
	}
	reg := prometheus.NewRegistry()
	c := &cloud{rt: router.New(reg), db: db, hub: New()}
	c.hub.Address, c.hub.CertServerAddress, c.hub.PKIDir = "127.0.0.1:0", "127.0.0.1:0", filepath.Join(dir, "pki")
	c.hub.QPS, c.hub.Burst = 1e6, 1e6
	if configure != nil {
		configure(c.hub)
	}
	c.mgr = modules.NewManager(modules.Deps{NodeName: "cloudcore-test", Router: c.rt, Store: db, Metrics: reg, StopTimeout: 5 * time.Second, StartTimeout: time.Minute})
	start := func() error {
		return c.mgr.Start(context.Background(), append([]modules.Planned{
			{Info: sdk.Info{Name: Name, Group: "hub"}, Settings: modules.Settings{Runtime: modules.Builtin}, Module: c.hub},
		}, others...))
	}
	return c, start, nil
}

func (c *cloud) stop() {
	if c.mgr != nil {
		_ = c.mgr.Stop(context.Background())
		_ = c.db.Close()
		c.mgr = nil
	}
}

// join makes node known to the cloud with a fresh join token, as edgecore join does.
func (c *cloud) join(t *testing.T, node string) *pki.JoinResult {
	t.Helper()
	tok, err := c.hub.CreateToken(context.Background(), pki.TokenOptions{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	res, err := pki.Join(context.Background(), pki.JoinOptions{CertServer: c.hub.CertServerAddress, Token: tok.String(), NodeName: node, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// eventually polls cond until it holds, failing after a generous bound.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
