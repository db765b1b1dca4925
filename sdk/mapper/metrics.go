package mapper

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/sdk"
)

type metrics struct {
	reads, readErrors   *prometheus.CounterVec // device
	writes, reports     *prometheus.CounterVec // device, result
	online              *prometheus.GaugeVec   // device
	devices, goroutines prometheus.Gauge
	registrations       *prometheus.CounterVec // result
	refusedDevices      prometheus.Counter
	push                *pushMetrics // push.go
}

func newMetrics(h sdk.Host) (*metrics, error) {
	mt := &metrics{
		reads:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_mapper_reads_total", Help: "Successful driver reads, per device."}, []string{"device"}),
		readErrors:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_mapper_read_errors_total", Help: "Failed driver reads, per device."}, []string{"device"}),
		writes:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_mapper_writes_total", Help: "Driver writes of desired values, per device and result."}, []string{"device", "result"}),
		reports:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_mapper_reports_total", Help: "ReportDeviceStatus calls to edgecore, per device and result: ok, refused (edgecore refused the content: the values are dropped), failed (not taken: retried with the next report)."}, []string{"device", "result"}),
		online:        prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kedge_mapper_device_online", Help: "1 when the device was last reported online, 0 offline."}, []string{"device"}),
		devices:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "kedge_mapper_devices", Help: "Devices the mapper runs."}),
		goroutines:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "kedge_mapper_device_goroutines", Help: "Per-device goroutines running (one per device; a removed device's ends)."}),
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_mapper_registrations_total", Help: "MapperRegister calls to edgecore, per result."}, []string{"result"}),
		refusedDevices: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_mapper_refused_devices_total",
			Help: "Devices (or device updates) refused because a property cannot work as its model and visitor say (see the mapper's log)."}),
		push: newPushMetrics(),
	}
	for _, c := range append([]prometheus.Collector{mt.reads, mt.readErrors, mt.writes, mt.reports, mt.online, mt.devices, mt.goroutines, mt.registrations, mt.refusedDevices}, mt.push.collectors()...) {
		if err := h.Metrics().Register(c); err != nil {
			return nil, err
		}
	}
	return mt, nil
}

// forget drops a removed device's series.
func (mt *metrics) forget(device string) {
	l := prometheus.Labels{"device": device}
	mt.reads.DeletePartialMatch(l)
	mt.readErrors.DeletePartialMatch(l)
	mt.writes.DeletePartialMatch(l)
	mt.reports.DeletePartialMatch(l)
	mt.online.DeletePartialMatch(l)
}
