package rolloutcontroller

import "github.com/prometheus/client_golang/prometheus"

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
	m := &metrics{
		downstream: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_rolloutcontroller_downstream_total",
			Help: "Rollout messages queued for edge nodes, by reason (turn: the node's turn came; reconnect: sent again when the node connected; owner: the leader on another replica started the turn of a node held here)."}, []string{"reason"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_rolloutcontroller_upstream_total",
			Help: "Plugin status reports from edge nodes, by result (ok, unchanged, stale, invalid, forbidden, error)."}, []string{"result"}),
		denied: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_rolloutcontroller_denied_total",
			Help: "Plugin status reports refused because the reporting node is not part of the rollout."}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_rolloutcontroller_sync_errors_total",
			Help: "Failed reconciliations of a rollout (retried with backoff)."}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_rolloutcontroller_status_conflicts_total",
			Help: "Rollout status writes retried because the rollout changed meanwhile (resourceVersion conflict)."}),
		resent: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_rolloutcontroller_reconnect_resends_total",
			Help: "Rollout messages sent again to a node that connected while its update was in progress."}),
		deletes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_rolloutcontroller_deletes_total",
			Help: "Deletes of a rollout message queued for edge nodes, by reason (deleted: the rollout was deleted; inventory: a connecting node still held a deleted rollout)."}, []string{"reason"}),
		notLeader: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_rolloutcontroller_not_leader_total",
			Help: "Rollout reconciliations skipped because this replica does not lead (the leader makes them)."}),
	}
	for _, c := range []prometheus.Collector{m.downstream, m.upstream, m.denied, m.syncErrors, m.conflicts, m.resent, m.deletes, m.notLeader} {
		if err := r.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
