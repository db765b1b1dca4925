package edgecontroller

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/sdk/kube/controller"
)

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
	b := controller.NewMetrics(r, Name)
	m := &metrics{
		downstream:   b.CounterVec("downstream_total", "Messages queued for edge nodes, by resource type and operation.", "type", "operation"),
		upstream:     b.CounterVec("upstream_total", "Requests from edge nodes, by resource type and result (ok, error, forbidden, invalid).", "type", "result"),
		denied:       b.CounterVec("denied_total", "Requests from edge nodes refused by the NodeRestriction rule, by resource type and operation.", "type", "operation"),
		refused:      b.CounterVec("refused_total", "Requests from edge nodes not carried out: answered with an error (forbidden, not handled, invalid, failed) or, when the edge expected no answer, dropped; by resource type and operation.", "resource", "operation"),
		syncErrors:   b.CounterVec("sync_errors_total", "Failed syncs of API objects (retried with backoff), by type.", "type"),
		missingRefs:  b.CounterVec("missing_references_total", "Objects referenced by an edge pod that do not exist (a Warning Event is recorded on the pod).", "type"),
		deferred:     b.Counter("deferred_total", "Changes not sent because the node's inventory was not reconciled yet (the reconciliation sends the current state)."),
		reconciles:   b.Counter("reconciles_total", "Edge node inventories reconciled against the API."),
		registered:   b.Counter("nodes_registered_total", "Edge Nodes created on first connect."),
		unknown:      b.Counter("nodes_unknown_total", "Times an edge node's Ready condition was set to Unknown after a disconnection outlasted the grace period."),
		statusWrites: b.CounterVec("node_status_writes_total", "Node status reports from edge nodes by result: written to the Node, or skipped (nothing changed and the Ready heartbeat is younger than nodeStatusUpdateFrequency).", "result"),
		leaseWrites:  b.CounterVec("lease_writes_total", "Lease renewals of edge nodes by result: written, or skipped (renewed less than leaseRenewInterval ago).", "result"),
	}
	return m, b.Err()
}
