package metamanager

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// fakeHub stands in for edgehub: it records what metamanager sends up and answers the queries it
// forwards with answer (nil: never answers, like a cloud that is slow).
type fakeHub struct {
	host   sdk.Host
	answer func(ctx context.Context, q sdk.Message) (sdk.Message, error)
	mu     sync.Mutex
	got    []sdk.Message
}

func (f *fakeHub) Start(_ context.Context, h sdk.Host) error { f.host = h; return nil }
func (f *fakeHub) Stop(context.Context) error                { return nil }

func (f *fakeHub) Handle(ctx context.Context, m sdk.Message) error {
	f.mu.Lock()
	f.got = append(f.got, m)
	f.mu.Unlock()
	if m.Route.Operation != message.OpQuery || f.answer == nil {
		return nil
	}
	reply, err := f.answer(ctx, m)
	if err != nil {
		return err // the host answers the waiting request with the error, as it does for edgehub
	}
	return f.host.Reply(ctx, reply)
}

func (f *fakeHub) queries() []sdk.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(f.got), func(m sdk.Message) bool { return m.Route.Operation != message.OpQuery })
}

// edge is metamanager with its MetaServer on a free loopback port, over a real SQLite file, beside a
// fake edgehub.
type edge struct {
	rt  *router.Router
	db  *store.DB
	mgr *modules.Manager
	mm  *Module
	hub *fakeHub
}

func startEdge(t *testing.T, dbPath, address string, hub *fakeHub) *edge {
	t.Helper()
	e, err := startEdgeWith(t, dbPath, address, hub, filepath.Join(filepath.Dir(dbPath), "metaserver-admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// startEdgeWith is startEdge with the node-admin token file at adminTokenFile; a start failure is
// returned.
func startEdgeWith(t *testing.T, dbPath, address string, hub *fakeHub, adminTokenFile string, configure ...func(*Module)) (*edge, error) {
	t.Helper()
	db, err := store.Open(dbPath, store.Options{Synchronous: "normal"})
	if err != nil {
		return nil, err
	}
	rt := router.New(nil)
	mm := New()
	mm.MetaServer.Address = address
	mm.MetaServer.AdminTokenFile = adminTokenFile
	for _, f := range configure {
		f(mm)
	}
	mm.QueryTimeout = time.Minute // longer than any requester below waits: an answer proves no timeout was hit
	info, _ := sdk.Lookup(Name)
	mgr := modules.NewManager(modules.Deps{NodeName: "edge-1", Router: rt, Store: db})
	plan := []modules.Planned{
		{Info: info, Settings: modules.Settings{Runtime: modules.Builtin}, Module: mm},
		{Info: sdk.Info{Name: "edgehub", Group: "hub"}, Settings: modules.Settings{Runtime: modules.Builtin}, Module: hub},
	}
	if err := mgr.Start(context.Background(), plan); err != nil {
		db.Close()
		return nil, err
	}
	e := &edge{rt: rt, db: db, mgr: mgr, mm: mm, hub: hub}
	t.Cleanup(e.stop)
	return e, nil
}

func (e *edge) stop() {
	if e.mgr == nil {
		return
	}
	_ = e.mgr.Stop(context.Background())
	_ = e.db.Close()
	e.mgr = nil
}

func newEdge(t *testing.T, hub *fakeHub) *edge {
	return startEdge(t, filepath.Join(t.TempDir(), "edge.db"), "127.0.0.1:0", hub)
}

// adminToken is the node-admin token the MetaServer created.
func (e *edge) adminToken(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(e.mm.MetaServer.AdminTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// get reads path from the MetaServer with token (empty: none).
func (e *edge) get(t *testing.T, path, token string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+e.mm.MetaServerAddr()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// send delivers a message to metamanager as a sync request and returns the answer.
func (e *edge) send(t *testing.T, source, op, resource, rv string, content any) sdk.Message {
	t.Helper()
	m, err := message.New(source, "resource", op, resource).WithContent(content)
	if err != nil {
		t.Fatal(err)
	}
	m.Header.ResourceVersion = rv
	resp, err := e.rt.SendSync(context.Background(), Name, m, 30*time.Second)
	if err != nil {
		t.Fatalf("%s %s: %v", op, resource, err)
	}
	return resp
}

// cloud sends what EdgeController sends: the object at its resourceVersion, and expects it stored.
func (e *edge) cloud(t *testing.T, op, resource string, obj metav1.Object) {
	t.Helper()
	resp := e.send(t, "edgehub", op, resource, obj.GetResourceVersion(), obj)
	if resp.Route.Operation != message.OpResponse {
		t.Fatalf("%s %s: %s", op, resource, resp.Content)
	}
}

func pod(ns, name string, rv int, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, ResourceVersion: strconv.Itoa(rv), Labels: labels, UID: types.UID("uid-" + name)},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "nginx"}}},
	}
}

func configMap(ns, name string, rv int, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, ResourceVersion: strconv.Itoa(rv)}, Data: data}
}

func errorText(m sdk.Message) string {
	var body struct{ Error string }
	_ = json.Unmarshal(m.Content, &body)
	return body.Error
}

// eventually polls cond until it holds or a generous bound passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
