package controller

import "github.com/prometheus/client_golang/prometheus"

// Metrics registers a controller's counters, named kedge_<module>_<name>, as they are made; Err
// reports the first registration that failed.
type Metrics struct {
	reg    prometheus.Registerer
	prefix string
	err    error
}

// NewMetrics returns a Metrics registering on reg for module.
func NewMetrics(reg prometheus.Registerer, module string) *Metrics {
	return &Metrics{reg: reg, prefix: "kedge_" + module + "_"}
}

// Counter makes and registers the counter kedge_<module>_<name>.
func (m *Metrics) Counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: m.prefix + name, Help: help})
	m.register(c)
	return c
}

// CounterVec makes and registers the counter vector kedge_<module>_<name> with labels.
func (m *Metrics) CounterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: m.prefix + name, Help: help}, labels)
	m.register(c)
	return c
}

func (m *Metrics) register(c prometheus.Collector) {
	if m.err == nil {
		m.err = m.reg.Register(c)
	}
}

// Err is the first registration error, or nil.
func (m *Metrics) Err() error { return m.err }
