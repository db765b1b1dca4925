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
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// TestAgainstAKubeEdgeCloudTheEdgeSpeaksJSONSendsOnceAndKeepsAlive runs edgehub against a cloud that,
// like KubeEdge's cloudcore, selects no subprotocol, reads JSON text frames and acknowledges nothing.
func TestAgainstAKubeEdgeCloudTheEdgeSpeaksJSONSendsOnceAndKeepsAlive(t *testing.T) {
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
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert, err := ca.IssueNodeCert(&key.PublicKey, "edge-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	client := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ca.Pool(), Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}}
	frames := make(chan message.Message, 64)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{TLSConfig: pki.ServerTLSConfig(ca, serving), ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer ws.Close()
			for {
				typ, b, err := ws.ReadMessage()
				if err != nil {
					return
				}
				if typ != websocket.TextMessage {
					t.Errorf("KubeEdge cloud got a frame of type %d, want JSON text", typ)
					return
				}
				m, err := hub.UnmarshalJSONLane(b)
				if err != nil {
					t.Errorf("KubeEdge cloud cannot read %s: %v", b, err)
					return
				}
				frames <- m
			}
		})}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })

	db, err := store.Open(filepath.Join(dir, "edge.db"), store.Options{Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	rt := router.New(nil)
	mod := New()
	mod.Heartbeat, mod.AckTimeout = 200*time.Millisecond, 100*time.Millisecond
	mod.dialHook = func(ctx context.Context) (*hub.Conn, error) {
		return hub.Dial(ctx, hub.DialOptions{URL: "wss://" + ln.Addr().String(), TLS: client, NodeID: "edge-1"})
	}
	info, _ := sdk.Lookup(Name)
	info.Requires = nil
	mgr := modules.NewManager(modules.Deps{NodeName: "edge-1", Router: rt, Store: db})
	if err := mgr.Start(context.Background(), []modules.Planned{{Info: info, Settings: modules.Settings{Runtime: modules.Builtin}, Module: mod}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mgr.Stop(context.Background()); db.Close() })

	up, _ := message.New("edged", "meta", message.OpUpdate, "default/podstatus/p").WithContent(map[string]string{"phase": "Running"})
	if err := rt.Send(context.Background(), Name, up); err != nil {
		t.Fatal(err)
	}
	var keepalives, got int
	deadline := time.After(time.Minute)
	for keepalives < 3 {
		select {
		case m := <-frames:
			switch {
			case m.Route.Operation == message.OpKeepalive:
				if string(m.Content) != `"ping"` || m.Route.Resource != "node" || m.Route.Group != "resource" {
					t.Fatalf("keepalive %s content %s, want KubeEdge's (resource node, group resource, \"ping\")", m.String(), m.Content)
				}
				keepalives++
			case m.Header.ID == up.Header.ID:
				got++
			case m.Route.Operation == message.OpInventory:
				t.Fatalf("sent Kedge's inventory to a KubeEdge cloud")
			}
		case <-deadline:
			t.Fatalf("in a minute: %d keepalives, the update %d times", keepalives, got)
		}
	}
	// Three heartbeats is many ackTimeouts: a Kedge-lane edge would have resent the update by now.
	if got != 1 {
		t.Fatalf("the update arrived %d times, want once (KubeEdge's cloud acknowledges nothing; no resend)", got)
	}
	deadline = time.After(time.Minute)
	for {
		n, err := db.Outbox().Len(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("outbox still holds %d after the update was written", n)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
