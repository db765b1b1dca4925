package edgehub

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/host/message"
)

// The node Lease under KubeEdge's cloudcore, kept as KubeEdge's edged (a kubelet) keeps it through the
// hub, so a node-lifecycle controller sees the node alive between status reports (a kubelet renews its
// lease every quarter of leaseDuration and may post status far less often):
//
//   - query of kube-node-lease/lease/<node> (group meta, source edged, sync); cloudcore answers
//     {"Object": <Lease>, "Err": <StatusError>} (its edgecontroller's ObjectResp);
//   - NotFound: insert of the same resource with a new Lease (holder the node, leaseDurationSeconds,
//     renewTime now); else update of the Lease last answered, renewTime now, its resourceVersion as
//     the precondition. A Conflict (or any error) drops what is held: the next round queries again.
//
// Leases are not queued in the outbox: a renewal is worth nothing later, so offline none is kept.

// kubeEdgeLease is the lease state of one connection to a KubeEdge cloudcore (guarded by upstream.mu).
type kubeEdgeLease struct {
	node     string
	duration time.Duration
	held     *coordinationv1.Lease // as cloudcore last answered it; nil: unknown, query first
	notFound bool                  // the last query said there is none: create it
	waitID   string                // the request awaiting its answer
	waitSent time.Time
}

// kubeEdgeResp is the answer of KubeEdge's cloudcore to a lease request.
type kubeEdgeResp struct {
	Object json.RawMessage `json:"Object"`
	Err    *struct {
		ErrStatus metav1.Status `json:"ErrStatus"`
	} `json:"Err"`
}

func (l *kubeEdgeLease) resource() string {
	return message.Resource{Namespace: "kube-node-lease", Type: "lease", Name: l.node}.Edge()
}

// next returns the request to send now, if any: nothing while one waits for its answer (for up to
// twice the renew interval, then it counts as lost).
func (l *kubeEdgeLease) next(now time.Time) (message.Message, bool) {
	if l.waitID != "" && now.Sub(l.waitSent) < l.duration/2 {
		return message.Message{}, false
	}
	var msg message.Message
	var err error
	switch {
	case l.held == nil && !l.notFound:
		msg = message.New(kubeEdgeNodeSource, "meta", message.OpQuery, l.resource())
	case l.held == nil:
		holder, secs, renew := l.node, int32(l.duration/time.Second), metav1.NewMicroTime(now)
		msg, err = message.New(kubeEdgeNodeSource, "meta", message.OpInsert, l.resource()).WithContent(coordinationv1.Lease{
			TypeMeta:   metav1.TypeMeta{Kind: "Lease", APIVersion: "coordination.k8s.io/v1"},
			ObjectMeta: metav1.ObjectMeta{Name: l.node, Namespace: "kube-node-lease"},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs, RenewTime: &renew},
		})
	default:
		up := l.held.DeepCopy()
		renew, secs := metav1.NewMicroTime(now), int32(l.duration/time.Second)
		up.Spec.RenewTime, up.Spec.LeaseDurationSeconds = &renew, &secs
		if up.Spec.HolderIdentity == nil || *up.Spec.HolderIdentity == "" {
			holder := l.node
			up.Spec.HolderIdentity = &holder
		}
		up.TypeMeta = metav1.TypeMeta{Kind: "Lease", APIVersion: "coordination.k8s.io/v1"}
		msg, err = message.New(kubeEdgeNodeSource, "meta", message.OpUpdate, l.resource()).WithContent(up)
	}
	if err != nil { // a Lease always encodes
		return message.Message{}, false
	}
	msg.Header.Sync = true
	l.waitID, l.waitSent = msg.Header.ID, now
	return msg, true
}

// answered takes cloudcore's answer to a lease request; false if resp answers something else.
func (l *kubeEdgeLease) answered(resp message.Message) (bool, error) {
	if l.waitID == "" || resp.Header.ParentID != l.waitID {
		return false, nil
	}
	l.waitID = ""
	var r kubeEdgeResp
	if err := json.Unmarshal(resp.Content, &r); err != nil || resp.Route.Operation == message.OpError {
		l.held, l.notFound = nil, false
		return true, fmt.Errorf("cloudcore's answer to the node lease is not {Object, Err}: %.200s", resp.Content)
	}
	if r.Err != nil && r.Err.ErrStatus.Reason != "" {
		l.held = nil
		l.notFound = r.Err.ErrStatus.Reason == metav1.StatusReasonNotFound
		if l.notFound {
			return true, nil
		}
		return true, fmt.Errorf("node lease: %s", r.Err.ErrStatus.Message)
	}
	var lease coordinationv1.Lease
	if err := json.Unmarshal(r.Object, &lease); err != nil || lease.Name != l.node {
		l.held, l.notFound = nil, false
		return true, fmt.Errorf("cloudcore answered the node lease with %.200s", r.Object)
	}
	l.held, l.notFound = &lease, false
	return true, nil
}

// renewLease keeps the node Lease while connected to a KubeEdge cloudcore, from the node's
// registration on: every quarter of LeaseDuration.
func (m *Module) renewLease(ctx context.Context, conn *hub.Conn, u *upstream) {
	tick := time.NewTicker(max(m.LeaseDuration/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		u.mu.Lock()
		var msg message.Message
		ok := false
		if u.ke.registered {
			msg, ok = u.lease.next(time.Now())
		}
		u.mu.Unlock()
		if ok {
			if err := conn.Send(ctx, msg); err != nil {
				return // the connection is gone; serve notices through Receive
			}
			m.metrics.leases.WithLabelValues(msg.Route.Operation).Inc()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
