package edgehub

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/sdk/message"
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
	held     map[string]any // the Lease (JSON) as cloudcore last answered it; nil: unknown, query first
	notFound bool           // the last query said there is none: create it
	waitID   string         // the request awaiting its answer
	waitSent time.Time
}

// kubeEdgeResp is the answer of KubeEdge's cloudcore to a lease request.
type kubeEdgeResp struct {
	Object json.RawMessage `json:"Object"`
	Err    *struct {
		ErrStatus struct {
			Reason  string `json:"reason"`
			Message string `json:"message"`
		} `json:"ErrStatus"`
	} `json:"Err"`
}

// microTime is Kubernetes' MicroTime in JSON (RFC 3339 with microseconds, UTC).
func microTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000Z07:00") }

// The Lease is written as JSON of coordination.k8s.io/v1 by hand, so edgehub (in every edgecore
// class) does not link k8s.io/api; kubeedge_lease_test.go decodes it with k8s.io/api.

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
		msg, err = message.New(kubeEdgeNodeSource, "meta", message.OpInsert, l.resource()).WithContent(map[string]any{
			"kind": "Lease", "apiVersion": "coordination.k8s.io/v1",
			"metadata": map[string]any{"name": l.node, "namespace": "kube-node-lease"},
			"spec":     map[string]any{"holderIdentity": l.node, "leaseDurationSeconds": int32(l.duration / time.Second), "renewTime": microTime(now)},
		})
	default:
		up := make(map[string]any, len(l.held))
		for k, v := range l.held {
			up[k] = v
		}
		spec, _ := up["spec"].(map[string]any)
		sp := make(map[string]any, len(spec)+3)
		for k, v := range spec {
			sp[k] = v
		}
		sp["renewTime"], sp["leaseDurationSeconds"] = microTime(now), int32(l.duration/time.Second)
		if h, _ := sp["holderIdentity"].(string); h == "" {
			sp["holderIdentity"] = l.node
		}
		up["spec"], up["kind"], up["apiVersion"] = sp, "Lease", "coordination.k8s.io/v1"
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
		l.notFound = r.Err.ErrStatus.Reason == "NotFound"
		if l.notFound {
			return true, nil
		}
		return true, fmt.Errorf("node lease: %s", r.Err.ErrStatus.Message)
	}
	var lease map[string]any
	err := json.Unmarshal(r.Object, &lease)
	meta, _ := lease["metadata"].(map[string]any)
	if name, _ := meta["name"].(string); err != nil || name != l.node {
		l.held, l.notFound = nil, false
		return true, fmt.Errorf("cloudcore answered the node lease with %.200s", r.Object)
	}
	l.held, l.notFound = lease, false
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
