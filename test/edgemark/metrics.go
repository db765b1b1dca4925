package edgemark

import (
	"io"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

func slogDiscard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// simMetrics are edgemark's own metrics (kedge_edgemark_*).
type simMetrics struct {
	reg             prometheus.Registerer
	joinErrors      prometheus.Counter
	dialErrors      prometheus.Counter
	dialSeconds     prometheus.Histogram
	ackSeconds      *prometheus.HistogramVec
	podStartSeconds prometheus.Histogram
	refused         *prometheus.CounterVec
}

var latencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2, 5, 10, 30, 60}

func newSimMetrics(reg prometheus.Registerer) (*simMetrics, error) {
	m := &simMetrics{
		reg:         reg,
		joinErrors:  prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_edgemark_join_errors_total", Help: "Joins (or certificate loads) that failed and are tried again."}),
		dialErrors:  prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_edgemark_dial_errors_total", Help: "Dials to the hub that failed."}),
		dialSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kedge_edgemark_dial_seconds", Help: "Time to open a link (TCP, TLS, websocket upgrade).", Buckets: latencyBuckets}),
		ackSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kedge_edgemark_ack_seconds",
			Help: "Upstream message queued -> acknowledged by the cloud (after the cloud module handled it), by kind.", Buckets: latencyBuckets}, []string{"kind"}),
		podStartSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kedge_edgemark_pod_start_seconds",
			Help: "Pod received from the cloud -> its Running status acknowledged (written to the API).", Buckets: latencyBuckets}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_edgemark_refused_total", Help: "Upstream messages the cloud answered with an error, by kind."}, []string{"kind"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.joinErrors, m.dialErrors, m.dialSeconds, m.ackSeconds, m.podStartSeconds, m.refused} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// bind exports the simulation's counters, read at scrape time.
func (m *simMetrics) bind(s *Sim) {
	if m.reg == nil {
		return
	}
	gauge := func(name, help string, f func(Stats) int64) {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return float64(f(s.Stats())) }))
	}
	counter := func(name, help string, f func(Stats) int64) {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f(s.Stats())) }))
	}
	gauge("kedge_edgemark_nodes", "Hollow nodes configured.", func(st Stats) int64 { return int64(st.Nodes) })
	gauge("kedge_edgemark_nodes_joined", "Hollow nodes holding a certificate.", func(st Stats) int64 { return st.Joined })
	gauge("kedge_edgemark_nodes_connected", "Hollow nodes with an open link.", func(st Stats) int64 { return st.Connected })
	gauge("kedge_edgemark_nodes_reported", "Hollow nodes whose node status the cloud acknowledged at least once.", func(st Stats) int64 { return st.Reported })
	gauge("kedge_edgemark_nodes_reported_on_link", "Hollow nodes whose node status the cloud acknowledged on their current link (after a cloudcore restart: the nodes it took back).", func(st Stats) int64 { return st.ReportedOnLink })
	gauge("kedge_edgemark_pods_held", "Pods the hollow nodes hold.", func(st Stats) int64 { return st.PodsHeld })
	counter("kedge_edgemark_pods_running_total", "Pods whose Running status the cloud acknowledged.", func(st Stats) int64 { return st.PodsRunning })
	counter("kedge_edgemark_connects_total", "Links opened.", func(st Stats) int64 { return st.Connects })
	counter("kedge_edgemark_disconnects_total", "Links lost.", func(st Stats) int64 { return st.Disconnects })
	counter("kedge_edgemark_messages_in_total", "Messages from the cloud.", func(st Stats) int64 { return st.MsgsIn })
	counter("kedge_edgemark_messages_out_total", "Messages to the cloud, resends included.", func(st Stats) int64 { return st.MsgsOut })
	counter("kedge_edgemark_twins_sent_total", "Twin reports (devicestatus updates) queued.", func(st Stats) int64 { return st.TwinsSent })
	counter("kedge_edgemark_twins_acked_total", "Twin reports the cloud acknowledged without an error.", func(st Stats) int64 { return st.TwinsAcked })
	counter("kedge_edgemark_resent_total", "Upstream messages sent again for want of an acknowledgement.", func(st Stats) int64 { return st.Resent })
}
