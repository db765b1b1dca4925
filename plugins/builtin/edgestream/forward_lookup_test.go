package edgestream

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"testing"

	coordv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kedge-io/kedge/plugins/builtin/cloudstream"
)

// A forwarding replica finds the tunnel's holder from cloudhub's ownership Lease of the node with one
// question when the node's hub connection and tunnel are on the same replica, and asks every replica
// only when they are not.
func TestTheForwardLookupAsksTheNodesOwnerFromItsLeaseFirstAndEveryReplicaOnlyWhenItIsWrong(t *testing.T) {
	for _, c := range []struct {
		name, hubOwner     string
		wantLease, wantAll float64
	}{
		{name: "hub and tunnel on replica b: one question to b", hubOwner: "replica-b", wantLease: 1},
		{name: "hub on replica c, tunnel on b: every replica asked", hubOwner: "replica-c", wantAll: 1},
		{name: "no ownership Lease: every replica asked", wantAll: 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newReplicaPair(t)
			kube := cloudstream.Client(p.a).(*fake.Clientset)
			startReplica(t, p.dir, "replica-c", kube) // a third replica, without the tunnel
			ctx := context.Background()
			eventually(t, "replica a knows b and c", func() bool {
				ps := cloudstream.ForwardPeers(p.a)
				return slices.Contains(ps, "replica-b") && slices.Contains(ps, "replica-c")
			})
			if c.hubOwner != "" {
				holder := c.hubOwner
				if _, err := kube.CoordinationV1().Leases("kedge").Create(ctx, &coordv1.Lease{
					ObjectMeta: metav1.ObjectMeta{Name: "kedge-node-edge-a", Labels: map[string]string{"kedge.io/ownership": "node"},
						Annotations: map[string]string{"kedge.io/node": "edge-a"}},
					Spec: coordv1.LeaseSpec{HolderIdentity: &holder}}, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				eventually(t, "replica a sees the node's Lease", func() bool { return cloudstream.HubOwnerOf(p.a, "edge-a") == c.hubOwner })
			}
			logFile := filepath.Join(p.dir, "c.log")
			p.rt.mu.Lock()
			p.rt.logs["ns/p/c"] = logFile
			p.rt.mu.Unlock()
			f, err := openAppend(logFile)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintln(f, "2024-05-01T10:00:00Z stdout F hello")
			f.Close()
			code, body := getStatus(t, p.api, "https://"+p.a.StreamAddress+"/containerLogs/ns/p/c")
			if code != http.StatusOK || body != "hello\n" {
				t.Fatalf("logs through replica a: %d %q", code, body)
			}
			if got := counter(t, p.regA, "kedge_cloudstream_forward_lookups_total", "via", "lease"); got != c.wantLease {
				t.Fatalf("lookups via the lease %v, want %v", got, c.wantLease)
			}
			if got := counter(t, p.regA, "kedge_cloudstream_forward_lookups_total", "via", "all"); got != c.wantAll {
				t.Fatalf("lookups asking every replica %v, want %v", got, c.wantAll)
			}
		})
	}
}
