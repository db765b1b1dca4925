package metamanager

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// rig runs metamanager through the real manager, router and SQLite store, with capture mailboxes
// standing in for edged (a consumer) and the hub group.
type rig struct {
	rt          *router.Router
	db          *store.DB
	edged, hub  *router.Mailbox
	stopManager func()
}

func newRig(t *testing.T) *rig {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "edge.db"), store.Options{Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	rt := router.New(nil)
	edged, _ := rt.Register("edged", "edged", router.Options{})
	hub, _ := rt.Register("edgehub", "hub", router.Options{})
	info, _ := sdk.Lookup(Name)
	tree := map[string]any{"modules": map[string]any{Name: map[string]any{"metaServer": map[string]any{"address": "127.0.0.1:0"}}}}
	plan, err := modules.Plan("test", tree, nil, []sdk.Info{info}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mgr := modules.NewManager(modules.Deps{NodeName: "edge-1", Router: rt, Store: db})
	if err := mgr.Start(context.Background(), plan); err != nil {
		t.Fatal(err)
	}
	r := &rig{rt: rt, db: db, edged: edged, hub: hub, stopManager: func() { _ = mgr.Stop(context.Background()) }}
	t.Cleanup(func() { r.stopManager(); db.Close() })
	return r
}

func (r *rig) sync(t *testing.T, source, op, resource, rv string, content any) sdk.Message {
	t.Helper()
	m, err := message.New(source, "resource", op, resource).WithContent(content)
	if err != nil {
		t.Fatal(err)
	}
	m.Header.ResourceVersion = rv
	resp, err := r.rt.SendSync(context.Background(), Name, m, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func receive(t *testing.T, mb *router.Mailbox) sdk.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := mb.Receive(ctx)
	if err != nil {
		t.Fatalf("nothing arrived at %s: %v", mb.Name(), err)
	}
	return m
}

func (r *rig) stored(t *testing.T, typ, ns, name string) store.Object {
	t.Helper()
	o, err := r.db.Objects(Name).Get(context.Background(), store.Key{Type: typ, Namespace: ns, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestCloudUpdateIsStoredBeforeTheConsumerIsTold(t *testing.T) {
	r := newRig(t)
	resp := r.sync(t, "edgehub", message.OpInsert, "default/pod/nginx", "5", map[string]string{"v": "1"})
	if resp.Route.Operation != message.OpResponse || string(resp.Content) != `"OK"` {
		t.Fatalf("reply %v %s", resp, resp.Content)
	}
	got := receive(t, r.edged)
	if got.Route.Resource != "default/pod/nginx" || got.Header.ResourceVersion != "5" {
		t.Fatalf("edged got %v", got)
	}
	if o := r.stored(t, "pod", "default", "nginx"); o.ResourceVersion != 5 || string(o.Value) != `{"v":"1"}` {
		t.Fatalf("stored %+v", o)
	}
	if r.hub.Len() != 0 {
		t.Fatal("a change from the cloud was echoed back to the hub")
	}
}

func TestStaleCloudUpdateDoesNotOverwriteNewerState(t *testing.T) {
	r := newRig(t)
	r.sync(t, "edgehub", message.OpUpdate, "default/configmap/c", "9", map[string]string{"v": "new"})
	r.sync(t, "edgehub", message.OpUpdate, "default/configmap/c", "7", map[string]string{"v": "old"})
	if o := r.stored(t, "configmap", "default", "c"); o.ResourceVersion != 9 || !strings.Contains(string(o.Value), "new") {
		t.Fatalf("stale update overwrote newer state: %+v", o)
	}
}

func TestEdgeChangeIsStoredAndGoesToTheHub(t *testing.T) {
	r := newRig(t)
	r.sync(t, "nodestatus", message.OpUpdate, "default/nodestatus/edge-1", "", map[string]string{"ready": "true"})
	if got := receive(t, r.hub); got.Route.Resource != "default/nodestatus/edge-1" {
		t.Fatalf("hub got %v", got)
	}
	if r.edged.Len() != 0 {
		t.Fatal("an edge change was sent to a local consumer")
	}
	r.stored(t, "nodestatus", "default", "edge-1")
}

func TestQueryAnswersFromTheStore(t *testing.T) {
	r := newRig(t)
	r.sync(t, "edgehub", message.OpInsert, "ns1/secret/a", "1", map[string]string{"k": "a"})
	r.sync(t, "edgehub", message.OpInsert, "ns1/secret/b", "2", map[string]string{"k": "b"})
	r.sync(t, "edgehub", message.OpInsert, "ns2/secret/c", "3", map[string]string{"k": "c"})
	one := r.sync(t, "edged", message.OpQuery, "ns1/secret/b", "", nil)
	if string(one.Content) != `{"k":"b"}` {
		t.Fatalf("query one = %s", one.Content)
	}
	list := r.sync(t, "edged", message.OpQuery, "ns1/secret", "", nil)
	var got []map[string]string
	if err := json.Unmarshal(list.Content, &got); err != nil || len(got) != 2 || got[0]["k"] != "a" || got[1]["k"] != "b" {
		t.Fatalf("query list = %s (%v)", list.Content, err)
	}
}

func TestQueryWithStarNamespaceListsTheTypeInEveryNamespace(t *testing.T) {
	r := newRig(t)
	r.sync(t, "edgehub", message.OpInsert, "ns1/pod/a", "1", map[string]string{"k": "a"})
	r.sync(t, "edgehub", message.OpInsert, "ns2/pod/b", "2", map[string]string{"k": "b"})
	r.sync(t, "edgehub", message.OpInsert, "ns2/secret/c", "3", map[string]string{"k": "c"})
	list := r.sync(t, "edged", message.OpQuery, "*/pod", "", nil)
	var got []map[string]string
	if err := json.Unmarshal(list.Content, &got); err != nil || len(got) != 2 || got[0]["k"] != "a" || got[1]["k"] != "b" {
		t.Fatalf("query */pod = %s (%v)", list.Content, err)
	}
	empty := r.sync(t, "edged", message.OpQuery, "*/configmap", "", nil)
	if string(empty.Content) != "[]" {
		t.Fatalf("query */configmap = %s, want []", empty.Content)
	}
}

func TestDeleteRemovesTheObject(t *testing.T) {
	r := newRig(t)
	r.sync(t, "edgehub", message.OpInsert, "default/pod/p", "1", map[string]string{})
	receive(t, r.edged)
	r.sync(t, "edgehub", message.OpDelete, "default/pod/p", "2", nil)
	if got := receive(t, r.edged); got.Route.Operation != message.OpDelete {
		t.Fatalf("edged got %v, want the delete", got)
	}
	if _, err := r.db.Objects(Name).Get(context.Background(), store.Key{Type: "pod", Namespace: "default", Name: "p"}); err == nil {
		t.Fatal("object still stored after delete")
	}
}

func TestBadRequestsGetAnErrorReply(t *testing.T) {
	r := newRig(t)
	tests := []struct {
		name, op, resource, rv, want string
	}{
		{"malformed resource", message.OpUpdate, "default//x", "", "segment 2 is empty"},
		{"no name to update", message.OpUpdate, "default/pod", "", "resource has no name"},
		{"resourceversion not a number", message.OpUpdate, "default/pod/x", "abc", `resourceversion "abc" is not a number`},
		{"unsupported operation", "frobnicate", "default/pod/x", "", `operation "frobnicate"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := r.sync(t, "edged", tt.op, tt.resource, tt.rv, map[string]int{})
			var body struct{ Error string }
			_ = json.Unmarshal(resp.Content, &body)
			if resp.Route.Operation != message.OpError || !strings.Contains(body.Error, tt.want) {
				t.Fatalf("reply %s %s, want an error containing %q", resp.Route.Operation, resp.Content, tt.want)
			}
		})
	}
}

func TestAbsentConsumerLosesNothing(t *testing.T) {
	r := newRig(t)
	r.rt.Unregister("edged")
	resp := r.sync(t, "edgehub", message.OpInsert, "default/pod/q", "3", map[string]string{"v": "x"})
	if resp.Route.Operation != message.OpResponse {
		t.Fatalf("reply %v %s", resp.Route.Operation, resp.Content)
	}
	r.stored(t, "pod", "default", "q")
}

func TestRepeatedDeliveryReachesNoConsumer(t *testing.T) {
	r := newRig(t)
	r.sync(t, "edgehub", message.OpUpdate, "default/pod/p", "4", map[string]string{"v": "1"})
	receive(t, r.edged)
	resp := r.sync(t, "edgehub", message.OpUpdate, "default/pod/p", "4", map[string]string{"v": "1"})
	if resp.Route.Operation != message.OpResponse {
		t.Fatalf("a repeated delivery must still be acknowledged: %v %s", resp.Route.Operation, resp.Content)
	}
	if r.edged.Len() != 0 {
		t.Fatal("a repeated delivery was passed to the consumer again")
	}
}

func TestInventoryListsVersionedObjects(t *testing.T) {
	r := newRig(t)
	r.sync(t, "edgehub", message.OpInsert, "default/pod/a", "11", map[string]string{})
	r.sync(t, "edgehub", message.OpInsert, "kube-system/configmap/b", "12", map[string]string{})
	r.sync(t, "nodestatus", message.OpUpdate, "default/nodestatus/edge-1", "", map[string]string{}) // edge-made: no version
	resp := r.sync(t, "edgehub", message.OpInventory, "", "", nil)
	var items []Item
	if err := json.Unmarshal(resp.Content, &items); err != nil {
		t.Fatal(err)
	}
	want := []Item{{"kube-system/configmap/b", 12}, {"default/pod/a", 11}}
	if len(items) != 2 || items[0] != want[0] || items[1] != want[1] {
		t.Fatalf("inventory = %+v, want %+v", items, want)
	}
}
