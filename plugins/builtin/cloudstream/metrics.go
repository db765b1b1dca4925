package cloudstream

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	sessions *prometheus.CounterVec
	refused  *prometheus.CounterVec
	active   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, m *Module) (*metrics, error) {
	x := &metrics{
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_cloudstream_sessions_total",
			Help: "Kubelet API requests for edge pods, by kind (logs, exec) and result."}, []string{"kind", "result"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_cloudstream_tunnel_refused_total",
			Help: "Tunnel connections refused, by reason."}, []string{"reason"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kedge_cloudstream_sessions_active",
			Help: "Sessions in progress."}),
	}
	tunnels := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kedge_cloudstream_tunnels",
		Help: "Edge nodes with a stream tunnel open."}, func() float64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		return float64(len(m.tunnels))
	})
	for _, c := range []prometheus.Collector{x.sessions, x.refused, x.active, tunnels} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return x, nil
}
