package router

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// The metrics are read from each mailbox's atomic counters at scrape time, so the send path does
// no Prometheus work at all, not even a label lookup.
var (
	queuedDesc = prometheus.NewDesc("kedge_router_queued",
		"Messages waiting in the module's mailbox.", []string{"module"}, nil)
	sentDesc = prometheus.NewDesc("kedge_router_sent_total",
		"Messages accepted into the module's mailbox.", []string{"module"}, nil)
	deliveredDesc = prometheus.NewDesc("kedge_router_delivered_total",
		"Messages handed out by the module's Receive.", []string{"module"}, nil)
	failedDesc = prometheus.NewDesc("kedge_router_failed_total",
		"Sends to the module refused: mailbox full, caller's context done, timeout or mailbox closed.", []string{"module"}, nil)
)

// collector exports the modules of one or more routers. Several routers on one registry share the
// first one's collector (a registry refuses two collectors with the same metrics); a module name
// present in several routers is reported as the sum.
type collector struct {
	mu      sync.Mutex
	routers []*Router
}

func register(reg prometheus.Registerer, r *Router) {
	err := reg.Register(&collector{routers: []*Router{r}})
	if err == nil {
		return
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if c, ok := are.ExistingCollector.(*collector); ok {
			c.mu.Lock()
			c.routers = append(c.routers, r)
			c.mu.Unlock()
			return
		}
	}
	panic(fmt.Sprintf("router: register metrics: %v", err))
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queuedDesc
	ch <- sentDesc
	ch <- deliveredDesc
	ch <- failedDesc
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	routers := slices.Clone(c.routers)
	c.mu.Unlock()

	var names []string // first-seen order, for a stable exposition
	sums := map[string]*ModuleInfo{}
	for _, r := range routers {
		for _, mi := range r.Modules() {
			s, ok := sums[mi.Name]
			if !ok {
				s = &ModuleInfo{}
				sums[mi.Name] = s
				names = append(names, mi.Name)
			}
			s.Queued += mi.Queued
			s.Sent += mi.Sent
			s.Delivered += mi.Delivered
			s.Failed += mi.Failed
		}
	}
	for _, name := range names {
		s := sums[name]
		ch <- prometheus.MustNewConstMetric(queuedDesc, prometheus.GaugeValue, float64(s.Queued), name)
		ch <- prometheus.MustNewConstMetric(sentDesc, prometheus.CounterValue, float64(s.Sent), name)
		ch <- prometheus.MustNewConstMetric(deliveredDesc, prometheus.CounterValue, float64(s.Delivered), name)
		ch <- prometheus.MustNewConstMetric(failedDesc, prometheus.CounterValue, float64(s.Failed), name)
	}
}
