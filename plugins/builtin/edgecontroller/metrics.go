package edgecontroller

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	downstream  *prometheus.CounterVec
	upstream    *prometheus.CounterVec
	denied      *prometheus.CounterVec
	refused     *prometheus.CounterVec
	syncErrors  *prometheus.CounterVec
	missingRefs *prometheus.CounterVec
	deferred    prometheus.Counter
	reconciles  prometheus.Counter
	registered  prometheus.Counter
	unknown     prometheus.Counter
	// statusWrites and leaseWrites count node status reports by what they cost the API (written,
	// skipped): what nodeStatusUpdateFrequency and leaseRenewInterval save.
	statusWrites *prometheus.CounterVec
	leaseWrites  *prometheus.CounterVec
}

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		downstream: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_edgecontroller_downstream_total",
			Help: "Messages queued for edge nodes, by resource type and operation."}, []string{"type", "operation"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_edgecontroller_upstream_total",
			Help: "Requests from edge nodes, by resource type and result (ok, error, forbidden, invalid)."}, []string{"type", "result"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_edgecontroller_denied_total",
			Help: "Requests from edge nodes refused by the NodeRestriction rule, by resource type and operation."}, []string{"type", "operation"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_edgecontroller_refused_total",
			Help: "Requests from edge nodes not carried out: answered with an error (forbidden, not handled, invalid, failed) or, when the edge expected no answer, dropped; by resource type and operation."}, []string{"resource", "operation"}),
		syncErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_edgecontroller_sync_errors_total",
			Help: "Failed syncs of API objects (retried with backoff), by type."}, []string{"type"}),
		missingRefs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_edgecontroller_missing_references_total",
			Help: "Objects referenced by an edge pod that do not exist (a Warning Event is recorded on the pod)."}, []string{"type"}),
		deferred: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_edgecontroller_deferred_total",
			Help: "Changes not sent because the node's inventory was not reconciled yet (the reconciliation sends the current state)."}),
		reconciles: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_edgecontroller_reconciles_total",
			Help: "Edge node inventories reconciled against the API."}),
		registered: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_edgecontroller_nodes_registered_total",
			Help: "Edge Nodes created on first connect."}),
		unknown: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_edgecontroller_nodes_unknown_total",
			Help: "Times an edge node's Ready condition was set to Unknown after a disconnection outlasted the grace period."}),
		statusWrites: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_edgecontroller_node_status_writes_total",
			Help: "Node status reports from edge nodes by result: written to the Node, or skipped (nothing changed and the Ready heartbeat is younger than nodeStatusUpdateFrequency)."}, []string{"result"}),
		leaseWrites: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_edgecontroller_lease_writes_total",
			Help: "Lease renewals of edge nodes by result: written, or skipped (renewed less than leaseRenewInterval ago)."}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.downstream, m.upstream, m.denied, m.refused, m.syncErrors, m.missingRefs, m.deferred, m.reconciles, m.registered, m.unknown, m.statusWrites, m.leaseWrites} {
		if err := r.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
