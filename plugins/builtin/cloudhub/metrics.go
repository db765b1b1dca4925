package cloudhub

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	startWaits                                                                                         prometheus.Counter
	eventsHeld                                                                                         prometheus.Counter
	connects, rejected, replaced, queued, coalesced, sent, resent, acked, lateAcks, forgotten, drained prometheus.Counter
	up                                                                                                 *prometheus.CounterVec
	rejectedBy                                                                                         *prometheus.CounterVec // rejected is its "upgrade" series
	recordLookups                                                                                      *prometheus.CounterVec
	admissionFull                                                                                      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, m *Module) (*metrics, error) {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_cloudhub_" + name, Help: help})
	}
	rejectedBy := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_cloudhub_rejected_total",
		Help: "Node connections refused on the hub port, by reason: upgrade (the websocket upgrade refused: path, identity, headers; details in kedge_hub_rejected_total) or tls_* (the TLS handshake failed: tls_no_cert, tls_bad_cert, tls_plain_http, tls_aborted, tls_handshake)."}, []string{"reason"})
	x := &metrics{
		connects:   c("connects_total", "Node connections accepted."),
		rejected:   rejectedBy.WithLabelValues("upgrade"),
		replaced:   c("replaced_total", "Connections closed because the same node connected again."),
		queued:     c("downstream_queued_total", "Messages queued for nodes."),
		coalesced:  c("downstream_coalesced_total", "Queued messages replaced by a newer version of the same object before being delivered."),
		sent:       c("downstream_sent_total", "Messages sent to nodes (including resends)."),
		resent:     c("downstream_resent_total", "Messages sent again after no acknowledgement."),
		acked:      c("downstream_acked_total", "Acknowledgements from nodes."),
		lateAcks:   c("late_acks_total", "Acknowledgements for versions no longer on the wire (after a resend or reconnect)."),
		forgotten:  c("forgotten_nodes_total", "Nodes forgotten after being disconnected with an empty queue for forgetAfter."),
		startWaits: c("upstream_start_waits_total", "Messages from nodes that waited for their cloud module to start (cloudcore was starting its modules) instead of being refused."),
		eventsHeld: c("events_held_total", "Node events (connected, inventory, disconnected) held, in order, until cloudcore had started every module of the events group instead of being lost."),
		drained:    c("drained_total", "Node sessions closed by the drain on stop, so the nodes reconnect to another replica."),
		up:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_cloudhub_upstream_total", Help: "Messages from nodes by result (ok, repeat, keepalive, inventory, invalid, no_handler, slow, stopping: left unanswered because the module stopped with cloudcore)."}, []string{"result"}),
	}
	x.rejectedBy = rejectedBy
	x.admissionFull = c("admission_full_total", "Times the hub listener found maxHandshakes connections being admitted and stopped accepting until one was done (new connections meanwhile wait in the kernel's accept queue).")
	admitting := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kedge_cloudhub_admitting_connections", Help: "Hub connections being admitted now (accepted, not yet serving a session); at most maxHandshakes."}, func() float64 {
		if l := m.admitted(); l != nil {
			return float64(l.pending())
		}
		return 0
	})
	x.recordLookups = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_cloudhub_record_lookups_total",
		Help: "Node join-record checks on connect (is this certificate revoked?), by result: hit (from memory) or miss (read from the records)."}, []string{"result"})
	connected := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kedge_cloudhub_connected_nodes", Help: "Nodes connected now."}, func() float64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		n := 0
		for _, x := range m.nodes {
			x.mu.Lock()
			if x.sess != nil {
				n++
			}
			x.mu.Unlock()
		}
		return float64(n)
	})
	known := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kedge_cloudhub_known_nodes", Help: "Nodes cloudhub keeps state for (connected, or with a queue, or not yet forgotten)."}, func() float64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		return float64(len(m.nodes))
	})
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kedge_cloudhub_downstream_pending", Help: "Entries in the nodes' queues: not sent yet, or sent and waiting for the node's acknowledgement."}, func() float64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		n := 0
		for _, x := range m.nodes {
			x.mu.Lock()
			n += len(x.entries)
			x.mu.Unlock()
		}
		return float64(n)
	})
	for _, col := range []prometheus.Collector{x.connects, x.rejectedBy, x.replaced, x.queued, x.coalesced, x.sent, x.resent, x.acked, x.lateAcks, x.forgotten, x.drained, x.up, x.recordLookups, x.admissionFull, x.startWaits, x.eventsHeld, admitting, connected, known, pending} {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return x, nil
}
