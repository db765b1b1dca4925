package edgehub

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// offlineHub runs edgehub through the real manager, router and SQLite outbox with a dialer that never
// connects: the node is offline for the whole test.
func offlineHub(t *testing.T) (*router.Router, *store.DB) {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "edge.db"), store.Options{Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	rt := router.New(nil)
	mod := New()
	mod.BackoffMin, mod.BackoffMax = time.Hour, time.Hour // one failed dial, then a long wait
	mod.SendInventory = false
	mod.dialHook = func(ctx context.Context) (*hub.Conn, error) { return nil, context.DeadlineExceeded }
	info, _ := sdk.Lookup(Name)
	info.Requires = nil // metamanager is not part of this test
	mgr := modules.NewManager(modules.Deps{NodeName: "edge-1", Router: rt, Store: db})
	if err := mgr.Start(context.Background(), []modules.Planned{{Info: info, Settings: modules.Settings{Runtime: modules.Builtin}, Module: mod}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mgr.Stop(context.Background()); db.Close() })
	return rt, db
}

func TestOfflineSyncQueryIsRefusedAndOtherUpstreamMessagesAreQueued(t *testing.T) {
	rt, db := offlineHub(t)
	tests := []struct {
		name      string
		op        string
		sync      bool
		refused   bool
		wantQueue int // outbox length after the message
	}{
		{"sync query is refused at once, not queued", message.OpQuery, true, true, 0},
		{"ordinary update is queued for the cloud", message.OpUpdate, false, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := message.New("metamanager", "resource", tt.op, "default/pod/p").WithContent(map[string]string{"v": "1"})
			if tt.sync {
				resp, err := rt.SendSync(context.Background(), Name, m, 10*time.Second)
				if err != nil {
					t.Fatalf("no answer from edgehub: %v", err)
				}
				var body struct{ Error string }
				_ = json.Unmarshal(resp.Content, &body)
				if got := resp.Route.Operation == message.OpError; got != tt.refused {
					t.Fatalf("answer %s %s, refused=%v want %v", resp.Route.Operation, resp.Content, got, tt.refused)
				}
				if tt.refused && (!strings.Contains(body.Error, "offline") || !strings.Contains(body.Error, "answered only from the edge's store")) {
					t.Fatalf("refusal does not say why: %q", body.Error)
				}
			} else if err := rt.Send(context.Background(), Name, m); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				n, err := db.Outbox().Len(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if n == tt.wantQueue {
					break
				}
				if n > tt.wantQueue || time.Now().After(deadline) {
					t.Fatalf("outbox holds %d, want %d", n, tt.wantQueue)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}
