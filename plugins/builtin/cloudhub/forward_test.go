package cloudhub

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kedge-io/kedge/sdk/message"
)

// A cloud module waiting for an edge's answer must not wait for a node that is not connected: a sync
// request for it is answered at once with reason node_offline and nothing is queued, while a message
// about an object for the same node is queued as before (it is delivered when the node connects).
func TestASyncRequestForANodeNotConnectedIsAnsweredAtOnceAndAnObjectMessageIsQueued(t *testing.T) {
	c := startCloud(t, nil)
	q := message.New("cloudbus", "func", "request", message.Resource{Node: "away", Namespace: "-", Type: "servicebus", Name: "80"}.Cloud())
	// Were it queued, no answer would come before the node connects: the wait would end in a deadline error.
	reply, err := c.rt.SendSync(context.Background(), Name, q, 20*time.Second)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("the request for a node that is not connected was queued instead of answered")
	}
	if err != nil {
		t.Fatal(err)
	}
	var body struct{ Error, Reason string }
	if reply.Route.Operation != message.OpError || reply.DecodeContent(&body) != nil || body.Reason != ReasonNodeOffline || body.Error == "" {
		t.Fatalf("answer %s %s, want an error with reason %s", reply.Route.Operation, reply.Content, ReasonNodeOffline)
	}
	if p := c.pending("away"); len(p) != 0 {
		t.Fatalf("queued for the node: %v, want nothing", p)
	}

	obj := message.New("edgecontroller", "resource", message.OpUpdate, message.Resource{Node: "away", Namespace: "default", Type: "pod", Name: "p"}.Cloud())
	obj.Header.ResourceVersion = "7"
	if err := c.rt.Send(context.Background(), Name, obj); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the object message queued for the node", func() bool {
		p := c.pending("away")
		return len(p) == 1 && p[0] == "default/pod/p@7"
	})
}
