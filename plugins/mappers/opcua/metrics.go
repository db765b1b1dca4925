package opcua

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"
	"github.com/prometheus/client_golang/prometheus"
)

// sessions exports the OPC-UA metrics of every live driver, labelled by its device.
var sessions = &sessionCollector{drivers: map[*Driver]uint64{}}

// Metrics is the collector of the OPC-UA sessions' metrics the module registers (for tests and
// embedders).
func Metrics() prometheus.Collector { return sessions }

type sessionCollector struct {
	mu      sync.Mutex
	drivers map[*Driver]uint64 // → when it was added (a sequence)
	seq     uint64
}

var (
	sessionState  = prometheus.NewDesc("kedge_opcua_session_state", "The OPC-UA session's state: 1 for the current one (connected, connecting, reconnecting, disconnected, closed).", []string{"device", "state"}, nil)
	reconnectsD   = prometheus.NewDesc("kedge_opcua_reconnects_total", "Times the session came back (connected again after a loss; the subscription is restored with it).", []string{"device"}, nil)
	notificationD = prometheus.NewDesc("kedge_opcua_notifications_total", "Monitored item values the subscription delivered (each data change notification item).", []string{"device"}, nil)
	errorsD       = prometheus.NewDesc("kedge_opcua_errors_total", "Failed reads, writes and monitored item creations, by operation and status code (\"transport\" when no status came back).", []string{"device", "op", "status"}, nil)
	samplingD     = prometheus.NewDesc("kedge_opcua_monitored_item_sampling_seconds", "The sampling interval the server granted a monitored item (it may revise what the visitor asked for).", []string{"device", "node"}, nil)
	queueD        = prometheus.NewDesc("kedge_opcua_monitored_item_queue_size", "The queue size the server granted a monitored item.", []string{"device", "node"}, nil)
)

var states = []opcua.ConnState{opcua.Connected, opcua.Connecting, opcua.Reconnecting, opcua.Disconnected, opcua.Closed}

func (s *sessionCollector) add(d *Driver) {
	s.mu.Lock()
	s.seq++
	s.drivers[d] = s.seq
	s.mu.Unlock()
}

func (s *sessionCollector) remove(d *Driver) {
	s.mu.Lock()
	delete(s.drivers, d)
	s.mu.Unlock()
}

func (s *sessionCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sessionState, reconnectsD, notificationD, errorsD, samplingD, queueD} {
		ch <- d
	}
}

func (s *sessionCollector) Collect(ch chan<- prometheus.Metric) {
	// One driver per device: while a device's driver is replaced (its config changed, or a hot swap
	// hands the device over inside this process) the newest speaks for it, so no series is doubled.
	s.mu.Lock()
	newest := map[string]*Driver{}
	for d, seq := range s.drivers {
		k := d.device.String()
		if o := newest[k]; o == nil || s.drivers[o] < seq {
			newest[k] = d
		}
	}
	s.mu.Unlock()
	for _, d := range newest {
		dev := d.device.String()
		cur := d.state()
		for _, st := range states {
			v := 0.0
			if st == cur {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(sessionState, prometheus.GaugeValue, v, dev, strings.ToLower(st.String()))
		}
		ch <- prometheus.MustNewConstMetric(reconnectsD, prometheus.CounterValue, float64(d.stats.reconnects.Load()), dev)
		ch <- prometheus.MustNewConstMetric(notificationD, prometheus.CounterValue, float64(d.stats.notifications.Load()), dev)
		d.stats.mu.Lock()
		for k, n := range d.stats.errors {
			ch <- prometheus.MustNewConstMetric(errorsD, prometheus.CounterValue, float64(n), dev, k.op, k.status)
		}
		d.stats.mu.Unlock()
		d.mu.Lock()
		for _, it := range d.items {
			node := it.node.String()
			ch <- prometheus.MustNewConstMetric(samplingD, prometheus.GaugeValue, it.revisedSampling.Seconds(), dev, node)
			ch <- prometheus.MustNewConstMetric(queueD, prometheus.GaugeValue, float64(it.revisedQueue), dev, node)
		}
		d.mu.Unlock()
	}
}

// driverStats are one driver's counters.
type driverStats struct {
	reconnects    atomic.Uint64
	notifications atomic.Uint64
	mu            sync.Mutex
	errors        map[errKey]uint64
}

type errKey struct{ op, status string }

// failed counts a failed operation by the status code in err ("transport" when there is none).
func (s *driverStats) failed(op string, err error) {
	st := "transport"
	if code, ok := statusOf(err); ok {
		st = statusName(code)
	}
	s.mu.Lock()
	if s.errors == nil {
		s.errors = map[errKey]uint64{}
	}
	s.errors[errKey{op, st}]++
	s.mu.Unlock()
}

// statusName is the code's name as gopcua writes it (BadNodeIDUnknown, BadNotWritable), without the
// "Status" prefix gopcua adds.
func statusName(code ua.StatusCode) string {
	if n, ok := ua.StatusCodes[code]; ok {
		return strings.TrimPrefix(n.Name, "Status")
	}
	return code.Error()
}

// statusOf finds the OPC-UA status code in err.
func statusOf(err error) (ua.StatusCode, bool) {
	var code ua.StatusCode
	if errors.As(err, &code) {
		return code, true
	}
	return 0, false
}

// watchState follows the client's state changes: reconnections are counted.
func (d *Driver) watchState(ch <-chan opcua.ConnState, stop <-chan struct{}) {
	was, connected := opcua.Closed, false // Connect's own Connecting → Connected is not a reconnect
	for {
		select {
		case <-stop:
			return
		case s := <-ch:
			if s == opcua.Connected && was != opcua.Connected {
				if connected {
					d.stats.reconnects.Add(1)
				}
				connected = true
			}
			was = s
		}
	}
}

// state is the session's state (Closed before Init connected and after Close).
func (d *Driver) state() opcua.ConnState {
	d.mu.Lock()
	c := d.c
	d.mu.Unlock()
	if c == nil {
		return opcua.Closed
	}
	return c.State()
}
