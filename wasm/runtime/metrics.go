package wasmruntime

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	denied *prometheus.CounterVec
	lost   *prometheus.CounterVec
	stop   *prometheus.GaugeVec
}

// newMetrics registers the module's WASM metrics on its own registerer (which adds the module
// label). A module started again (a hot swap to a new version) reuses the collectors already there.
func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		denied: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_wasm_denied_total",
			Help: "Host calls a WASM module made that its manifest does not grant, by capability."}, []string{"capability"})),
		lost: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_wasm_instance_lost_total",
			Help: "WASM instances lost in a call (and re-instantiated for the next message), by reason."}, []string{"reason"})),
		stop: registerGauge(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kedge_wasm_stop_info",
			Help: "1 for how the WASM module's calls are stopped at their deadline: check (Kedge's loop checks), " +
				"wazero (wazero's termination checks) or none (interruptible: false)."}, []string{"stop"})),
	}
}

func registerGauge(reg prometheus.Registerer, g *prometheus.GaugeVec) *prometheus.GaugeVec {
	if err := reg.Register(g); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.GaugeVec); ok {
				existing.Reset() // a module started again may stop another way
				return existing
			}
		}
	}
	return g
}

func register(reg prometheus.Registerer, c *prometheus.CounterVec) *prometheus.CounterVec {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing
			}
		}
		// The name is taken by something else: count anyway, unexported, rather than fail the module.
	}
	return c
}
