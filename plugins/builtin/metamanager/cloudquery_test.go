package metamanager

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

func TestQueryMissIsAskedOfTheCloud(t *testing.T) {
	cloudPod, _ := json.Marshal(pod("default", "web", 42, "edge-1", nil))
	tests := []struct {
		name      string
		answer    func(ctx context.Context, q sdk.Message) (sdk.Message, error)
		wantOp    string
		wantText  []string // in the error, for an error answer
		wantStore bool
	}{
		{
			name: "online: the cloud's object is the answer and is stored with its resourceVersion",
			answer: func(_ context.Context, q sdk.Message) (sdk.Message, error) {
				r, err := q.Reply("edgehub", json.RawMessage(cloudPod))
				r.Header.ResourceVersion = "42"
				return r, err
			},
			wantOp: message.OpResponse, wantStore: true,
		},
		{
			name: "the cloud answers with an error: the requester gets it",
			answer: func(_ context.Context, q sdk.Message) (sdk.Message, error) {
				return q.ErrorReply("edgehub", errors.New(`pods "web" not found`)), nil
			},
			wantOp: message.OpError, wantText: []string{"not found on this node", `asked the cloud: pods "web" not found`},
		},
		{
			name: "offline: edgehub refuses the query and the requester gets a not-found at once",
			answer: func(_ context.Context, q sdk.Message) (sdk.Message, error) {
				return sdk.Message{}, errors.New("offline: query default/pod/web not sent to the cloud; answered only from the edge's store")
			},
			wantOp: message.OpError, wantText: []string{"not found on this node", "offline"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEdge(t, &fakeHub{answer: tt.answer})
			resp := e.send(t, "edged", message.OpQuery, "default/pod/web", "", nil)
			if resp.Route.Operation != tt.wantOp {
				t.Fatalf("answer %s %s, want %s", resp.Route.Operation, resp.Content, tt.wantOp)
			}
			for _, w := range tt.wantText {
				if !strings.Contains(errorText(resp), w) {
					t.Fatalf("error %q does not contain %q", errorText(resp), w)
				}
			}
			qs := e.hub.queries()
			if len(qs) != 1 || qs[0].Route.Resource != "default/pod/web" || qs[0].Route.Group != "resource" || !qs[0].Header.Sync || qs[0].Route.Source != Name {
				t.Fatalf("forwarded queries: %v", qs)
			}
			o, err := e.db.Objects(Name).Get(context.Background(), store.Key{Type: "pod", Namespace: "default", Name: "web"})
			switch {
			case tt.wantStore && (err != nil || o.ResourceVersion != 42 || string(o.Value) != string(cloudPod)):
				t.Fatalf("stored %+v %v, want the cloud's object at 42", o, err)
			case tt.wantStore && string(resp.Content) != string(cloudPod):
				t.Fatalf("answer %s, want the cloud's object", resp.Content)
			case !tt.wantStore && !errors.Is(err, store.ErrNotFound):
				t.Fatalf("something was stored after a failed query: %+v %v", o, err)
			}
		})
	}
}

func TestQueryHitNeverReachesTheHub(t *testing.T) {
	e := newEdge(t, &fakeHub{answer: func(context.Context, sdk.Message) (sdk.Message, error) {
		return sdk.Message{}, errors.New("the hub must not be asked")
	}})
	e.cloud(t, message.OpInsert, "default/pod/web", pod("default", "web", 7, "edge-1", nil))
	resp := e.send(t, "edged", message.OpQuery, "default/pod/web", "", nil)
	if resp.Route.Operation != message.OpResponse {
		t.Fatalf("answer %s %s", resp.Route.Operation, resp.Content)
	}
	if qs := e.hub.queries(); len(qs) != 0 {
		t.Fatalf("a hit reached the hub: %v", qs)
	}
}

func TestQueryWaitingForTheCloudDoesNotBlockMetamanager(t *testing.T) {
	release := make(chan struct{})
	e := newEdge(t, &fakeHub{answer: func(ctx context.Context, q sdk.Message) (sdk.Message, error) {
		<-release // the cloud is slow
		return q.ErrorReply("edgehub", errors.New("gone")), nil
	}})
	waiting := make(chan sdk.Message, 1)
	go func() {
		m := message.New("edged", "resource", message.OpQuery, "default/pod/slow")
		resp, _ := e.rt.SendSync(context.Background(), Name, m, 30*time.Second)
		waiting <- resp
	}()
	eventually(t, "the query reaches the hub", func() bool { return len(e.hub.queries()) == 1 })
	// While the query waits, metamanager still stores what the cloud sends.
	e.cloud(t, message.OpInsert, "default/configmap/c", configMap("default", "c", 3, nil))
	close(release)
	if resp := <-waiting; resp.Route.Operation != message.OpError || !strings.Contains(errorText(resp), "gone") {
		t.Fatalf("the waiting query got %s %s", resp.Route.Operation, resp.Content)
	}
}
