package edgehub

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	online                                        prometheus.Gauge
	dials, down, links, leases                    *prometheus.CounterVec
	queued, sent, resent, acked, refused, damaged prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, m *Module) (*metrics, error) {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_edgehub_" + name, Help: help})
	}
	x := &metrics{
		online: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kedge_edgehub_connected", Help: "1 while the cloud link is up."}),
		dials:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_edgehub_dials_total", Help: "Connection attempts by result."}, []string{"result"}),
		links:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_edgehub_links_closed_total", Help: "Cloud links that closed, by kind: unproven (closed before the cloud sent a message; backoff keeps growing)."}, []string{"kind"}),
		down:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_edgehub_downstream_total", Help: "Messages from the cloud by result (ok, repeat, late_ack, no_handler, slow)."}, []string{"result"}),
		leases: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_edgehub_kubeedge_lease_total",
			Help: "Under KubeEdge's cloudcore: node Lease requests sent (query, insert, update) and answers that failed (error)."}, []string{"operation"}),
		queued:  c("upstream_queued_total", "Upstream messages written to the outbox."),
		sent:    c("upstream_sent_total", "Upstream messages sent (first time)."),
		resent:  c("upstream_resent_total", "Upstream messages sent again after no acknowledgement."),
		acked:   c("upstream_acked_total", "Upstream messages acknowledged by the cloud."),
		refused: c("upstream_refused_total", "Upstream messages the cloud answered with an error (not sent again)."),
		damaged: c("outbox_damaged_total", "Outbox entries that could not be decoded and were dropped."),
	}
	depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kedge_edgehub_outbox_depth", Help: "Upstream messages waiting in the outbox."},
		func() float64 {
			n, _ := m.outbox.Len(context.Background())
			return float64(n)
		})
	for _, col := range []prometheus.Collector{x.online, x.dials, x.links, x.leases, x.down, x.queued, x.sent, x.resent, x.acked, x.refused, x.damaged, depth} {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return x, nil
}
