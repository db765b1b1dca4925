package hub

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what every Conn sharing it sends and receives. Counters are atomics read at scrape
// time, so the message path does no Prometheus work. A nil *Metrics counts nothing.
type Metrics struct {
	conns             atomic.Int64
	messages, frames  [2]atomic.Uint64 // [in, out]
	bytes             [2]atomic.Uint64
	decodeErrors      [len(reasonNames) + 1]atomic.Uint64 // last: "other"
	heartbeatTimeouts atomic.Uint64
	pings             atomic.Uint64
	rejected          [len(rejectReasons)]atomic.Uint64
}

const (
	in  = 0
	out = 1
)

var reasonNames = [...]string{"header", "version", "type", "flags", "too_large", "length", "truncated",
	"wire_type", "malformed", "content", "compressed", "invalid"}

// Why Accept turned a client away (label of kedge_hub_rejected_total).
var rejectReasons = [...]string{"path", "no_cert", "cert", "identity", "header", "upgrade", "gquic"}

const (
	rejectPath = iota
	rejectNoCert
	rejectCert
	rejectIdentity
	rejectHeader
	rejectUpgrade
	rejectGQUIC // a Google QUIC client (KubeEdge's edgecore on its QUIC lane), see quic.go
)

var (
	connsDesc = prometheus.NewDesc("kedge_hub_connections",
		"Hub connections currently open.", nil, nil)
	messagesDesc = prometheus.NewDesc("kedge_hub_messages_total",
		"Messages sent (out) or received and decoded (in).", []string{"direction"}, nil)
	framesDesc = prometheus.NewDesc("kedge_hub_frames_total",
		"Websocket data frames sent or received (two per message: header and payload).", []string{"direction"}, nil)
	bytesDesc = prometheus.NewDesc("kedge_hub_bytes_total",
		"Websocket message bytes sent or received, headers and payloads.", []string{"direction"}, nil)
	decodeErrorsDesc = prometheus.NewDesc("kedge_hub_decode_errors_total",
		"Frames rejected (and their connection closed), by the rule they broke.", []string{"reason"}, nil)
	heartbeatDesc = prometheus.NewDesc("kedge_hub_heartbeat_timeouts_total",
		"Connections closed because the peer sent nothing, not even a pong, for two heartbeat intervals.", nil, nil)
	pingsDesc = prometheus.NewDesc("kedge_hub_pings_total",
		"Heartbeat pings sent. On the Kedge lane a side pings only after a heartbeat interval in which it heard nothing from its peer: a link that carries messages needs none.", nil, nil)
	rejectedDesc = prometheus.NewDesc("kedge_hub_rejected_total",
		"Connection attempts refused by Accept, by reason.", []string{"reason"}, nil)
)

// NewMetrics returns Metrics registered on reg (none if reg is nil). If reg already holds a hub's
// Metrics, that one is returned, so several hubs in one process share the series.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{}
	if reg == nil {
		return m, nil
	}
	if err := reg.Register(m); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*Metrics); ok {
				return existing, nil
			}
		}
		return nil, fmt.Errorf("register hub metrics: %w", err)
	}
	return m, nil
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{connsDesc, messagesDesc, framesDesc, bytesDesc, decodeErrorsDesc, heartbeatDesc, pingsDesc, rejectedDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	s := m.Stats()
	ch <- prometheus.MustNewConstMetric(connsDesc, prometheus.GaugeValue, float64(s.Connections))
	for dir, name := range []string{"in", "out"} {
		ch <- prometheus.MustNewConstMetric(messagesDesc, prometheus.CounterValue, float64(s.Messages[dir]), name)
		ch <- prometheus.MustNewConstMetric(framesDesc, prometheus.CounterValue, float64(s.Frames[dir]), name)
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(s.Bytes[dir]), name)
	}
	for reason, n := range s.DecodeErrors {
		ch <- prometheus.MustNewConstMetric(decodeErrorsDesc, prometheus.CounterValue, float64(n), reason)
	}
	ch <- prometheus.MustNewConstMetric(heartbeatDesc, prometheus.CounterValue, float64(s.HeartbeatTimeouts))
	ch <- prometheus.MustNewConstMetric(pingsDesc, prometheus.CounterValue, float64(s.Pings))
	for reason, n := range s.Rejected {
		ch <- prometheus.MustNewConstMetric(rejectedDesc, prometheus.CounterValue, float64(n), reason)
	}
}

// Stats is a snapshot of Metrics; index 0 of the pairs is "in", 1 is "out".
type Stats struct {
	Connections       int64
	Messages, Frames  [2]uint64
	Bytes             [2]uint64
	DecodeErrors      map[string]uint64 // by reason, every reason present
	HeartbeatTimeouts uint64
	Pings             uint64
	Rejected          map[string]uint64 // by reason, every reason present
}

// Stats returns the current counts (zero for a nil m).
func (m *Metrics) Stats() Stats {
	s := Stats{DecodeErrors: map[string]uint64{}, Rejected: map[string]uint64{}}
	if m == nil {
		return s
	}
	s.Connections = m.conns.Load()
	for dir := range 2 {
		s.Messages[dir] = m.messages[dir].Load()
		s.Frames[dir] = m.frames[dir].Load()
		s.Bytes[dir] = m.bytes[dir].Load()
	}
	for i := range m.decodeErrors {
		name := "other"
		if i < len(reasonNames) {
			name = reasonNames[i]
		}
		s.DecodeErrors[name] = m.decodeErrors[i].Load()
	}
	s.HeartbeatTimeouts = m.heartbeatTimeouts.Load()
	s.Pings = m.pings.Load()
	for i, name := range rejectReasons {
		s.Rejected[name] = m.rejected[i].Load()
	}
	return s
}

func (m *Metrics) message(dir int, bytes int) { m.messageFrames(dir, 2, bytes) }

func (m *Metrics) messageFrames(dir, frames int, bytes int) {
	if m == nil {
		return
	}
	m.messages[dir].Add(1)
	m.frames[dir].Add(uint64(frames))
	m.bytes[dir].Add(uint64(bytes))
}

func (m *Metrics) decodeError(e *FrameError) {
	if m == nil {
		return
	}
	i := reasonIndex(e.Err)
	if i < 0 {
		i = len(reasonNames)
	}
	m.decodeErrors[i].Add(1)
}

func (m *Metrics) heartbeatTimeout() {
	if m != nil {
		m.heartbeatTimeouts.Add(1)
	}
}

func (m *Metrics) ping() {
	if m != nil {
		m.pings.Add(1)
	}
}

func (m *Metrics) reject(reason int) {
	if m != nil {
		m.rejected[reason].Add(1)
	}
}

func (m *Metrics) connOpened(delta int64) {
	if m != nil {
		m.conns.Add(delta)
	}
}
