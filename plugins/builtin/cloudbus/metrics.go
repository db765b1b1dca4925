package cloudbus

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	requests *prometheus.CounterVec
	late     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	x := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_cloudbus_requests_total",
			Help: "HTTP requests to the endpoint by the status answered."}, []string{"code"}),
		late: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_cloudbus_late_answers_total",
			Help: "Answers from edge nodes that came after the request stopped waiting."}),
	}
	for _, c := range []prometheus.Collector{x.requests, x.late} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return x, nil
}
