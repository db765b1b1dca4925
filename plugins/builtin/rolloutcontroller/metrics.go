package rolloutcontroller

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/sdk/kube/controller"
)

type metrics struct {
	downstream *prometheus.CounterVec
	upstream   *prometheus.CounterVec
	denied     prometheus.Counter
	syncErrors prometheus.Counter
	conflicts  prometheus.Counter
	resent     prometheus.Counter
	deletes    *prometheus.CounterVec
	notLeader  prometheus.Counter
}

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	b := controller.NewMetrics(r, Name)
	m := &metrics{
		downstream: b.CounterVec("downstream_total", "Rollout messages queued for edge nodes, by reason (turn: the node's turn came; reconnect: sent again when the node connected; owner: the leader on another replica started the turn of a node held here).", "reason"),
		upstream:   b.CounterVec("upstream_total", "Plugin status reports from edge nodes, by result (ok, unchanged, stale, invalid, forbidden, error).", "result"),
		denied:     b.Counter("denied_total", "Plugin status reports refused because the reporting node is not part of the rollout."),
		syncErrors: b.Counter("sync_errors_total", "Failed reconciliations of a rollout (retried with backoff)."),
		conflicts:  b.Counter("status_conflicts_total", "Rollout status writes retried because the rollout changed meanwhile (resourceVersion conflict)."),
		resent:     b.Counter("reconnect_resends_total", "Rollout messages sent again to a node that connected while its update was in progress."),
		deletes:    b.CounterVec("deletes_total", "Deletes of a rollout message queued for edge nodes, by reason (deleted: the rollout was deleted; inventory: a connecting node still held a deleted rollout).", "reason"),
		notLeader:  b.Counter("not_leader_total", "Rollout reconciliations skipped because this replica does not lead (the leader makes them)."),
	}
	return m, b.Err()
}
