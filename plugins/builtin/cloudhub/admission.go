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
// at once; while maxHandshakes are being admitted the listener does not accept more: they wait in the
// kernel's accept queue (the listen backlog, net.core.somaxconn) and are taken in arrival order as
// slots free, so the handshakes under way finish without being starved of CPU and no edge is turned
// away to wait out a growing redial backoff. (Closing them at accept instead, measured at 10,000
// nodes: 31,766 refusals, each edge's backoff doubling towards 30 s, all connected after 48–83 s.)
// An edge whose connection waits longer than its handshake timeout redials after its jittered backoff.
// Connections already serving a session are not counted: the bound is on work in flight, not on nodes.
type admitListener struct {
	net.Listener
	slots  chan struct{} // one token per connection being admitted
	closed chan struct{}
	once   sync.Once
	// full is called when Accept finds every slot taken (it then waits for one).
	full func()
	// accepting: Accept holds a slot for the connection it waits for (not one being admitted).
	accepting atomic.Bool
}

func newAdmitListener(ln net.Listener, max int, full func()) *admitListener {
	return &admitListener{Listener: ln, slots: make(chan struct{}, max), closed: make(chan struct{}), full: full}
}

func (l *admitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	default:
		l.full()
		select {
		case l.slots <- struct{}{}:
		case <-l.closed:
			return nil, net.ErrClosed
		}
	}
	l.accepting.Store(true)
	c, err := l.Listener.Accept()
	l.accepting.Store(false)
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &admitConn{Conn: c, l: l}, nil
}

func (l *admitListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// pending is how many connections are being admitted.
func (l *admitListener) pending() int {
	n := len(l.slots)
	if l.accepting.Load() {
		n--
	}
	return max(n, 0)
}

type admitConn struct {
	net.Conn
	l    *admitListener
	once sync.Once
}

// admitted frees the connection's admission slot (once).
func (c *admitConn) admitted() { c.once.Do(func() { <-c.l.slots }) }

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
