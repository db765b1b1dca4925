package console

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	logins   *prometheus.CounterVec
	refused  *prometheus.CounterVec
	streams  prometheus.Gauge
	pushes   prometheus.Counter
	pushSize prometheus.Histogram
	actions  *prometheus.CounterVec
}

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	x := &metrics{
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_console_logins_total",
			Help: "Console logins by result (ok, bad_token, csrf, bad_form, rate_limited, error)."}, []string{"result"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_console_requests_refused_total",
			Help: "Console requests refused, by reason (session, csrf, bad_query, forbidden)."}, []string{"reason"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kedge_console_event_streams",
			Help: "Open Server-Sent Events streams (open console pages)."}),
		pushes: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_console_pushes_total",
			Help: "View updates pushed to open pages."}),
		pushSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kedge_console_push_bytes",
			Help: "Size of one pushed view update.", Buckets: prometheus.ExponentialBuckets(256, 4, 8)}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_console_rollout_actions_total",
			Help: "PluginRollout pause/resume requests by result (ok, csrf, bad_form, forbidden, error)."}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{x.logins, x.refused, x.streams, x.pushes, x.pushSize, x.actions} {
		if err := r.Register(c); err != nil {
			return nil, err
		}
	}
	return x, nil
}
