package modbus

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbrtu"
)

// lines exports the counters of every open RTU serial line, labelled by its port.
var lines = &lineCollector{clients: map[*mbrtu.Client]struct{}{}}

type lineCollector struct {
	mu      sync.Mutex
	clients map[*mbrtu.Client]struct{}
}

var (
	lineRequests  = prometheus.NewDesc("kedge_modbus_rtu_requests_total", "Request frames sent on a Modbus RTU serial line, retries included.", []string{"port"}, nil)
	lineCRC       = prometheus.NewDesc("kedge_modbus_rtu_crc_errors_total", "Answers on a Modbus RTU serial line whose CRC did not match (line noise, collisions).", []string{"port"}, nil)
	lineBadFrames = prometheus.NewDesc("kedge_modbus_rtu_bad_frames_total", "Answers with a valid CRC that did not fit the request (wrong unit, function or length).", []string{"port"}, nil)
	lineRetries   = prometheus.NewDesc("kedge_modbus_rtu_retries_total", "Requests sent again after a damaged answer.", []string{"port"}, nil)
	lineTimeouts  = prometheus.NewDesc("kedge_modbus_rtu_timeouts_total", "Requests no slave answered within the device's timeout.", []string{"port"}, nil)
)

func (l *lineCollector) add(c *mbrtu.Client) {
	l.mu.Lock()
	l.clients[c] = struct{}{}
	l.mu.Unlock()
}

func (l *lineCollector) remove(c *mbrtu.Client) {
	l.mu.Lock()
	delete(l.clients, c)
	l.mu.Unlock()
}

func (l *lineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{lineRequests, lineCRC, lineBadFrames, lineRetries, lineTimeouts} {
		ch <- d
	}
}

func (l *lineCollector) Collect(ch chan<- prometheus.Metric) {
	l.mu.Lock()
	clients := make([]*mbrtu.Client, 0, len(l.clients))
	for c := range l.clients {
		clients = append(clients, c)
	}
	l.mu.Unlock()
	for _, c := range clients {
		s, port := c.Stats(), c.Line().Port
		for d, v := range map[*prometheus.Desc]uint64{lineRequests: s.Requests, lineCRC: s.CRCErrors, lineBadFrames: s.BadFrames, lineRetries: s.Retries, lineTimeouts: s.Timeouts} {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), port)
		}
	}
}

// LineMetrics is the collector of the RTU lines' counters the module registers (for tests and
// embedders).
func LineMetrics() prometheus.Collector { return lines }
