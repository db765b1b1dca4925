package cloudhub

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// admitListener bounds the hub connections being admitted at once: accepted but not yet serving a
// session (TLS handshake, websocket upgrade, the record check). In a reconnect storm every edge dials
// at once; past maxHandshakes a new connection is closed at once and counted
// (kedge_cloudhub_rejected_total{reason="busy"}) rather than queued: its edge redials after its
// jittered backoff, while the handshakes under way finish without being starved of CPU. Connections
// already serving a session are not counted: the bound is on work in flight, not on nodes.
type admitListener struct {
	net.Listener
	max     int64
	pending atomic.Int64
	refused func()
}

func (l *admitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.pending.Add(1) > l.max {
			l.pending.Add(-1)
			l.refused()
			_ = c.Close()
			continue
		}
		return &admitConn{Conn: c, l: l}, nil
	}
}

type admitConn struct {
	net.Conn
	l    *admitListener
	once sync.Once
}

// admitted frees the connection's admission slot (once).
func (c *admitConn) admitted() { c.once.Do(func() { c.l.pending.Add(-1) }) }

func (c *admitConn) Close() error {
	c.admitted()
	return c.Conn.Close()
}

// admissionDone is the hub server's ConnState hook: a connection taken over by the websocket
// (hijacked), closed, or idle (answered with an HTTP error, keep-alive) is no longer being admitted.
func admissionDone(c net.Conn, st http.ConnState) {
	if st != http.StateHijacked && st != http.StateClosed && st != http.StateIdle {
		return
	}
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if ac, ok := c.(*admitConn); ok {
		ac.admitted()
	}
}

// admitted is the hub listener's admission state (nil before Start); for tests.
func (m *Module) admitted() *admitListener {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.admit
}
