package cloudstream

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	sessions *prometheus.CounterVec
	refused  *prometheus.CounterVec
	active   prometheus.Gauge

	streamRefused *prometheus.CounterVec
	insecure      prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, m *Module) (*metrics, error) {
	x := &metrics{
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_cloudstream_sessions_total",
			Help: "Kubelet API requests for edge pods, by kind (logs, exec) and result."}, []string{"kind", "result"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_cloudstream_tunnel_refused_total",
			Help: "Tunnel connections refused, by reason (certificate, unknown_session, other_node; tls_*: the TLS handshake failed)."}, []string{"reason"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kedge_cloudstream_sessions_active",
			Help: "Sessions in progress."}),
		streamRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_cloudstream_stream_refused_total",
			Help: "Clients of the stream server (the kubelet API) refused, by reason: tls_no_cert, tls_bad_cert, tls_plain_http, tls_aborted, tls_handshake (in the TLS handshake) or name_not_allowed (a certificate of clientCAFile whose CN is not in clientAllowedNames)."}, []string{"reason"}),
		insecure: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kedge_cloudstream_insecure_unauthenticated",
			Help: "1 when the stream server serves every client without authentication (insecureAllowUnauthenticated, development only)."}),
	}
	tunnels := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kedge_cloudstream_tunnels",
		Help: "Edge nodes with a stream tunnel open."}, func() float64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		return float64(len(m.tunnels))
	})
	for _, c := range []prometheus.Collector{x.sessions, x.refused, x.active, x.streamRefused, x.insecure, tunnels} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return x, nil
}
