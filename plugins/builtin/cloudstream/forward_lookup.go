package cloudstream

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// Finding the replica that holds a node's stream tunnel. cloudhub's ownership records, per node, the
// replica holding its hub connection (Lease kedge-node-<node>), and per replica its forward address
// (Lease kedge-replica-<identity>). An edge node's hub connection and stream tunnel usually reach the
// same replica (one load balancer, source affinity, or one cloudcore address for both) but need not:
// the balancer picks for each connection. So a forwarding replica asks the hub owner first — one
// request, from the informer's cache, no API call — and only if that replica does not hold the
// tunnel asks every other replica in parallel (kedge_cloudstream_forward_lookups_total{via}).
// Both Leases are read from one informer (label kedge.io/ownership, the forward namespace), as
// cloudhub's ownership reads them: the API server is not asked per forwarded session.

const (
	ownershipLabel    = "kedge.io/ownership" // cloudhub's ownership labels
	forwardAnnotation = "kedge.io/forward-address"
)

// nodeLeaseName is cloudhub.NodeLeaseName (kept equal by a test; cloudstream does not import cloudhub).
func nodeLeaseName(node string) string {
	if n := "kedge-node-" + node; len(n) <= 253 {
		return n
	}
	sum := sha256.Sum256([]byte(node))
	return "kedge-node-" + hex.EncodeToString(sum[:20])
}

func replicaLeaseName(identity string) string { return "kedge-replica-" + identity }

// startLeases starts the informer on the ownership Leases and waits for its first list.
func (f *forwarder) startLeases(ctx context.Context) error {
	factory := informers.NewSharedInformerFactoryWithOptions(f.m.client, 0, informers.WithNamespace(f.cfg.Namespace),
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = ownershipLabel }))
	li := factory.Coordination().V1().Leases()
	inf := li.Informer()
	f.leases = li.Lister().Leases(f.cfg.Namespace)
	lctx, stop := context.WithCancel(ctx)
	factory.Start(lctx.Done())
	f.stopLeases = func() { stop(); factory.Shutdown() }
	syncCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), inf.HasSynced) {
		f.stopLeases()
		return fmt.Errorf("forward: the ownership Leases in namespace %s could not be listed and watched within 30s (RBAC: list and watch leases.coordination.k8s.io)", f.cfg.Namespace)
	}
	return nil
}

// peersFromCache lists the other replicas with a forward address from the informer's cache.
func (f *forwarder) peersFromCache() ([]peer, error) {
	sel := labels.SelectorFromSet(labels.Set{ownershipLabel: "replica"})
	ls, err := f.leases.List(sel)
	if err != nil {
		return nil, err
	}
	var out []peer
	for _, l := range ls {
		id := ""
		if l.Spec.HolderIdentity != nil {
			id = *l.Spec.HolderIdentity
		}
		addr := l.Annotations[forwardAnnotation]
		if id == "" || id == f.cfg.Identity || addr == "" {
			continue
		}
		out = append(out, peer{identity: id, address: addr})
	}
	return out, nil
}

// hubOwner is the other replica cloudhub's ownership says holds node's hub connection.
func (f *forwarder) hubOwner(node string) (peer, bool) {
	if f.leases == nil {
		return peer{}, false
	}
	l, err := f.leases.Get(nodeLeaseName(node))
	if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" || *l.Spec.HolderIdentity == f.cfg.Identity {
		return peer{}, false
	}
	r, err := f.leases.Get(replicaLeaseName(*l.Spec.HolderIdentity))
	if err != nil || r.Annotations[forwardAnnotation] == "" {
		return peer{}, false
	}
	return peer{identity: *l.Spec.HolderIdentity, address: r.Annotations[forwardAnnotation]}, true
}

// holds asks p whether it holds node's tunnel.
func (f *forwarder) holds(ctx context.Context, p peer, node string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+p.address+"/tunnels/"+url.PathEscape(node), nil)
	if err != nil {
		return false
	}
	resp, err := f.transport.RoundTrip(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
