package devicecontroller

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	downstream     *prometheus.CounterVec
	upstream       *prometheus.CounterVec
	denied         *prometheus.CounterVec
	syncErrors     *prometheus.CounterVec
	olderTwins     prometheus.Counter
	deferred       prometheus.Counter
	secretsMissing prometheus.Counter
	reconciles     prometheus.Counter
	conflicts      prometheus.Counter

	deviceStatuses *prometheus.CounterVec
	events         *prometheus.CounterVec
	conditions     *prometheus.CounterVec
}

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		downstream: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_devicecontroller_downstream_total",
			Help: "Messages queued for edge nodes, by resource type (device, devicemodel, membership) and operation."}, []string{"type", "operation"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_devicecontroller_upstream_total",
			Help: "Reports from edge nodes, by resource type and result (ok, unchanged, error, invalid, forbidden)."}, []string{"type", "result"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_devicecontroller_denied_total",
			Help: "Reports from edge nodes refused by the NodeRestriction rule (a device bound to another node), by resource type and operation."}, []string{"type", "operation"}),
		syncErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_devicecontroller_sync_errors_total",
			Help: "Failed syncs of API objects (retried with backoff), by type."}, []string{"type"}),
		olderTwins: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_devicecontroller_older_twins_total",
			Help: "Reported twin values ignored because the Device status already holds a newer one (by metadata.timestamp)."}),
		secretsMissing: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_devicecontroller_secrets_missing_total",
			Help: "Device syncs whose configData references a Secret or key that does not exist (the node got the Device without that value)."}),
		deferred: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_devicecontroller_deferred_total",
			Help: "Changes not sent because the node's inventory was not reconciled yet (the reconciliation sends the current state)."}),
		reconciles: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_devicecontroller_reconciles_total",
			Help: "Edge node inventories reconciled against the API."}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_devicecontroller_status_conflicts_total",
			Help: "Device status writes retried because the Device changed meanwhile (resourceVersion conflict)."}),
		deviceStatuses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_devicecontroller_devicestatus_writes_total",
			Help: "Writes of DeviceStatus objects (devicestatuses.devices.kubeedge.io), by result (ok, error)."}, []string{"result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_devicecontroller_warning_events_total",
			Help: "Warning Events on Devices whose Healthy condition turned False, by reason and result (written, suppressed: within eventInterval of the last one, error)."}, []string{"reason", "result"}),
		conditions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_devicecontroller_health_reports_total",
			Help: "Healthy conditions reported by edge nodes, by status (True, False, Unknown) and reason."}, []string{"status", "reason"}),
	}
	for _, c := range []prometheus.Collector{m.downstream, m.upstream, m.denied, m.syncErrors, m.olderTwins, m.deferred, m.secretsMissing, m.reconciles, m.conflicts, m.deviceStatuses, m.events, m.conditions} {
		if err := r.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
