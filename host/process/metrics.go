package process

import (
	"context"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	modulepb "github.com/kedge-io/kedge/sdk/proto"
)

// gatherTimeout bounds fetching a plugin's metrics during a scrape.
const gatherTimeout = 2 * time.Second

// metrics is the proxy's own counters plus, at each scrape, the plugin's metrics fetched over Gather.
// It is one collector registered on the module's registerer, so everything carries module=<name>.
type metrics struct {
	m                                  *module
	restarts, handleErrors, sendErrors prometheus.Counter

	mu     sync.Mutex
	warned map[string]bool // plugin metrics already reported as skipped
}

func newMetrics(m *module) *metrics {
	return &metrics{
		m: m,
		restarts: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_plugin_restarts_total",
			Help: "Times the plugin process was restarted after it crashed or stopped answering."}),
		handleErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_plugin_handle_rpc_errors_total",
			Help: "Handle calls that failed in transport (the plugin died or broke the stream), each followed by a restart."}),
		sendErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_plugin_deferred_send_errors_total",
			Help: "Sends and replies made during Handle that could not be routed when Handle returned."}),
	}
}

// register adds the collector to the module's registerer (the manager gives each module instance
// its own registry, so an instance being swapped in never collides with the one it replaces).
func (c *metrics) register(reg prometheus.Registerer) {
	if err := reg.Register(c); err != nil {
		c.m.log.Warn("plugin metrics are not exported", "err", err)
	}
}

// Describe names only the proxy's counters: the plugin's metrics are not known in advance, and the
// registry accepts undescribed metrics from a described collector.
func (c *metrics) Describe(ch chan<- *prometheus.Desc) {
	c.restarts.Describe(ch)
	c.handleErrors.Describe(ch)
	c.sendErrors.Describe(ch)
}

func (c *metrics) Collect(ch chan<- prometheus.Metric) {
	c.restarts.Collect(ch)
	c.handleErrors.Collect(ch)
	c.sendErrors.Collect(ch)
	c.m.mu.Lock()
	in := c.m.cur
	c.m.mu.Unlock()
	if in == nil {
		return // restarting or stopped: its metrics are back with the next scrape
	}
	ctx, cancel := context.WithTimeout(context.Background(), gatherTimeout)
	defer cancel()
	resp, err := in.mod.Gather(ctx, &modulepb.GatherRequest{})
	if err != nil {
		c.m.log.Debug("gather plugin metrics", "err", rpcMessage(err))
		return
	}
	seen := map[string]bool{}
	for _, raw := range resp.GetFamilies() {
		fam := &dto.MetricFamily{}
		if err := proto.Unmarshal(raw, fam); err != nil {
			c.m.log.Warn("plugin sent a metric family that does not decode", "err", err)
			continue
		}
		if !metricName.MatchString(fam.GetName()) {
			c.skipped(fam.GetName(), "invalid metric name")
			continue
		}
		desc := prometheus.NewDesc(fam.GetName(), fam.GetHelp(), nil, nil)
		for _, pm := range fam.GetMetric() {
			id, ok := seriesID(fam, pm)
			switch {
			case !ok:
				c.skipped(fam.GetName(), "a bad or reserved label (module is the host's), or a value of the wrong type")
			case seen[id]:
				c.skipped(fam.GetName(), "a duplicate series")
			default:
				seen[id] = true
				ch <- gathered{desc: desc, m: pm}
			}
		}
	}
}

// skipped logs once per metric name that a series of it is not exported, and why.
func (c *metrics) skipped(name, why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.warned == nil {
		c.warned = map[string]bool{}
	}
	if !c.warned[name] {
		c.warned[name] = true
		c.m.log.Warn("plugin metric not exported", "metric", name, "reason", why)
	}
}

var (
	metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelName  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// seriesID identifies one series, and refuses what would make the host's whole /metrics fail: a bad
// label name, a duplicate label, the module label the host adds itself, a value of the wrong type.
func seriesID(fam *dto.MetricFamily, pm *dto.Metric) (string, bool) {
	var typed bool
	switch fam.GetType() {
	case dto.MetricType_COUNTER:
		typed = pm.Counter != nil
	case dto.MetricType_GAUGE:
		typed = pm.Gauge != nil
	case dto.MetricType_SUMMARY:
		typed = pm.Summary != nil
	case dto.MetricType_UNTYPED:
		typed = pm.Untyped != nil
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		typed = pm.Histogram != nil
	}
	if !typed {
		return "", false
	}
	var b strings.Builder
	b.WriteString(fam.GetName())
	names := map[string]bool{}
	for _, lp := range pm.GetLabel() {
		n := lp.GetName()
		if !labelName.MatchString(n) || names[n] || n == "module" || strings.HasPrefix(n, "__") {
			return "", false
		}
		names[n] = true
		b.WriteString("\xff" + n + "\xff" + lp.GetValue())
	}
	return b.String(), true
}

// gathered is one of the plugin's series, passed through as the plugin's registry encoded it.
type gathered struct {
	desc *prometheus.Desc
	m    *dto.Metric
}

func (g gathered) Desc() *prometheus.Desc { return g.desc }

func (g gathered) Write(out *dto.Metric) error {
	proto.Merge(out, g.m)
	return nil
}
