package edgehub

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// closingCloud is a real mTLS hub server that accepts every connection, optionally sends one
// message, and closes it: a cloud that speaks another protocol, or is broken, looks like this.
type closingCloud struct {
	addr    string
	accepts atomic.Int64
	client  *tls.Config
}

func newClosingCloud(t *testing.T, sendFirst bool) *closingCloud {
	t.Helper()
	dir := t.TempDir()
	st := pki.FileStorage{Dir: filepath.Join(dir, "pki")}
	ca, _, err := pki.LoadOrCreateCA(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := pki.NewServerCert(context.Background(), ca, st, pki.ServerCertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueNodeCert(&key.PublicKey, "edge-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := &closingCloud{client: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ca.Pool(),
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr = ln.Addr().String()
	srv := &http.Server{TLSConfig: pki.ServerTLSConfig(ca, serving), ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			conn, err := hub.Accept(w, r, hub.AcceptOptions{})
			if err != nil {
				t.Errorf("accept: %v", err)
				return
			}
			c.accepts.Add(1)
			if sendFirst {
				_ = conn.Send(r.Context(), message.New("cloudhub", "hub", "keepalive", ""))
				// Closed once edgehub read it (its ack for the message, or its close, ends the wait).
				_, _ = conn.Receive(r.Context())
			}
			_ = conn.Close()
		})}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return c
}

// startRedialHub runs edgehub through the real manager, router and SQLite outbox, dialing cloud.
func startRedialHub(t *testing.T, cloud *closingCloud, configure func(*Module)) {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "edge.db"), store.Options{Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	mod := New()
	mod.SendInventory = false
	mod.dialHook = func(ctx context.Context) (*hub.Conn, error) {
		return hub.Dial(ctx, hub.DialOptions{URL: "wss://" + cloud.addr, TLS: cloud.client, NodeID: "edge-1"})
	}
	configure(mod)
	info, _ := sdk.Lookup(Name)
	info.Requires = nil
	mgr := modules.NewManager(modules.Deps{NodeName: "edge-1", Router: router.New(nil), Store: db})
	if err := mgr.Start(context.Background(), []modules.Planned{{Info: info, Settings: modules.Settings{Runtime: modules.Builtin}, Module: mod}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mgr.Stop(context.Background()); db.Close() })
}

func TestCloudThatClosesRightAfterTheHandshakeIsRedialedWithGrowingBackoff(t *testing.T) {
	cloud := newClosingCloud(t, false)
	startRedialHub(t, cloud, func(m *Module) {
		m.BackoffMin, m.BackoffMax, m.HealthyAfter = 20*time.Millisecond, 500*time.Millisecond, time.Hour
	})
	// Wait until the backoff has surely grown past its cap, then count the dials over a window. With
	// the bound at 500 ms and full jitter a dial comes every 250 ms on average, about 12 in 3 s; the
	// old loop, which reset the backoff after every successful dial, redialed thousands of times.
	deadline := time.Now().Add(time.Minute)
	for cloud.accepts.Load() < 6 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d dials in a minute: edgehub stopped redialing", cloud.accepts.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	before := cloud.accepts.Load()
	time.Sleep(3 * time.Second)
	n := cloud.accepts.Load() - before
	if n > 40 {
		t.Fatalf("%d dials in 3 s to a cloud that closes each link at once: the backoff is not growing", n)
	}
	t.Logf("%d dials in 3 s (%d before the window)", n, before)
}

func TestLinkThatCarriedAMessageResetsTheBackoff(t *testing.T) {
	cloud := newClosingCloud(t, true)
	// A backoff of an hour: if a proven link did not reset it, the second dial would never come.
	startRedialHub(t, cloud, func(m *Module) { m.BackoffMin, m.BackoffMax, m.HealthyAfter = time.Hour, time.Hour, time.Hour })
	deadline := time.Now().Add(time.Minute)
	for cloud.accepts.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d dials in a minute: a link that carried a message did not reset the backoff", cloud.accepts.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
