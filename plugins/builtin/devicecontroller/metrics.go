package devicecontroller

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/sdk/kube/controller"
)

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
	b := controller.NewMetrics(r, Name)
	m := &metrics{
		downstream:     b.CounterVec("downstream_total", "Messages queued for edge nodes, by resource type (device, devicemodel, membership) and operation.", "type", "operation"),
		upstream:       b.CounterVec("upstream_total", "Reports from edge nodes, by resource type and result (ok, unchanged, error, invalid, forbidden).", "type", "result"),
		denied:         b.CounterVec("denied_total", "Reports from edge nodes refused by the NodeRestriction rule (a device bound to another node), by resource type and operation.", "type", "operation"),
		syncErrors:     b.CounterVec("sync_errors_total", "Failed syncs of API objects (retried with backoff), by type.", "type"),
		olderTwins:     b.Counter("older_twins_total", "Reported twin values ignored because the Device status already holds a newer one (by metadata.timestamp)."),
		secretsMissing: b.Counter("secrets_missing_total", "Device syncs whose configData references a Secret or key that does not exist (the node got the Device without that value)."),
		deferred:       b.Counter("deferred_total", "Changes not sent because the node's inventory was not reconciled yet (the reconciliation sends the current state)."),
		reconciles:     b.Counter("reconciles_total", "Edge node inventories reconciled against the API."),
		conflicts:      b.Counter("status_conflicts_total", "Device status writes retried because the Device changed meanwhile (resourceVersion conflict)."),
		deviceStatuses: b.CounterVec("devicestatus_writes_total", "Writes of DeviceStatus objects (devicestatuses.devices.kubeedge.io), by result (ok; unchanged: the first look at one found it holding what it should, nothing written; error).", "result"),
		events:         b.CounterVec("warning_events_total", "Warning Events on Devices whose Healthy condition turned False, by reason and result (written, suppressed: within eventInterval of the last one, error).", "reason", "result"),
		conditions:     b.CounterVec("health_reports_total", "Healthy conditions reported by edge nodes, by status (True, False, Unknown) and reason.", "status", "reason"),
	}
	return m, b.Err()
}
