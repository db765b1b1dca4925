package servicebus

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	requests *prometheus.CounterVec
	seconds  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	x := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_servicebus_requests_total",
			Help: "Requests from the cloud by result: ok, port_not_allowed, bad_request, unreachable, timeout, too_large, expired."}, []string{"result"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kedge_servicebus_request_seconds",
			Help: "Time to answer one request from the cloud, refusals included.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 9)}),
	}
	for _, c := range []prometheus.Collector{x.requests, x.seconds} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return x, nil
}
