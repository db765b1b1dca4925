package edgestream

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	sessions *prometheus.CounterVec
	dials    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	x := &metrics{
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_edgestream_sessions_total",
			Help: "Sessions served for the cloud, by kind (logs, exec) and result."}, []string{"kind", "result"}),
		dials: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_edgestream_tunnel_dials_total",
			Help: "Dials of the stream tunnel, by result."}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{x.sessions, x.dials} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return x, nil
}
