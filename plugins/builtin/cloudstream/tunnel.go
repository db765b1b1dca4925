package cloudstream

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/plugins/builtin/cloudstream/wire"
)

// tunnel is a node's control websocket.
type tunnel struct {
	node string
	ws   *websocket.Conn
	wmu  sync.Mutex
}

func (t *tunnel) send(v any, deadline time.Time) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	_ = t.ws.SetWriteDeadline(deadline)
	return t.ws.WriteJSON(v)
}

// sessionConn is an edge's connection for one session, after the upgrade.
type sessionConn struct {
	conn net.Conn
	rd   *bufio.Reader
}

// pending is a request waiting for its node to dial its session connection.
type pending struct {
	node string
	ch   chan sessionConn // buffered 1
}

var upgrader = websocket.Upgrader{HandshakeTimeout: 10 * time.Second}

// peerNode is the node named by the verified client certificate.
func peerNode(r *http.Request) (string, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", errors.New("no client certificate")
	}
	return pki.NodeNameFromCert(r.TLS.PeerCertificates[0])
}

// serveTunnel serves the edge side: the control websocket and the per-session connections.
func (m *Module) serveTunnel(w http.ResponseWriter, r *http.Request) {
	node, err := peerNode(r)
	if err != nil {
		m.metrics.refused.WithLabelValues("certificate").Inc()
		http.Error(w, "stream tunnel: "+err.Error(), http.StatusForbidden)
		return
	}
	switch {
	case r.URL.Path == wire.TunnelPath:
		m.control(w, r, node)
	case strings.HasPrefix(r.URL.Path, wire.SessionPrefix):
		m.session(w, r, node, strings.TrimPrefix(r.URL.Path, wire.SessionPrefix))
	default:
		http.Error(w, "stream tunnel: no such path "+r.URL.Path, http.StatusNotFound)
	}
}

// control keeps a node's control websocket: it only carries session announcements downward and
// pings; a newer tunnel of the same node replaces the older one.
func (m *Module) control(w http.ResponseWriter, r *http.Request, node string) {
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered the client
	}
	t := &tunnel{node: node, ws: ws}
	m.mu.Lock()
	if old := m.tunnels[node]; old != nil {
		_ = old.ws.Close()
	}
	m.tunnels[node] = t
	m.mu.Unlock()
	m.host.Logger().Info("stream tunnel up", "node", node, "remote", r.RemoteAddr)
	defer func() {
		m.mu.Lock()
		if m.tunnels[node] == t {
			delete(m.tunnels, node)
		}
		m.mu.Unlock()
		_ = ws.Close()
		m.host.Logger().Info("stream tunnel down", "node", node)
	}()
	_ = ws.SetReadDeadline(time.Now().Add(2 * m.Heartbeat))
	ws.SetPongHandler(func(string) error { return ws.SetReadDeadline(time.Now().Add(2 * m.Heartbeat)) })
	ws.SetPingHandler(func(data string) error {
		_ = ws.SetReadDeadline(time.Now().Add(2 * m.Heartbeat))
		t.wmu.Lock()
		defer t.wmu.Unlock()
		return ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(m.Heartbeat))
	})
	done := make(chan struct{})
	defer close(done)
	m.wg.Go(func() {
		tick := time.NewTicker(m.Heartbeat)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-m.life.Done():
				_ = ws.Close()
				return
			case <-tick.C:
				t.wmu.Lock()
				err := ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(m.Heartbeat))
				t.wmu.Unlock()
				if err != nil {
					_ = ws.Close()
					return
				}
			}
		}
	})
	for {
		if _, _, err := ws.ReadMessage(); err != nil { // the edge sends nothing but pings and pongs
			return
		}
	}
}

// session takes the edge's connection for one announced session and hands it to the waiting request.
func (m *Module) session(w http.ResponseWriter, r *http.Request, node, id string) {
	m.mu.Lock()
	p := m.pending[id]
	if p != nil && p.node == node {
		delete(m.pending, id)
	}
	m.mu.Unlock()
	if p == nil {
		m.metrics.refused.WithLabelValues("unknown_session").Inc()
		http.Error(w, fmt.Sprintf("stream tunnel: no session %q is waiting (it timed out or was never announced)", id), http.StatusNotFound)
		return
	}
	if p.node != node {
		m.metrics.refused.WithLabelValues("other_node").Inc()
		m.host.Logger().Warn("stream session claimed by another node", "session", id, "for", p.node, "by", node)
		http.Error(w, fmt.Sprintf("stream tunnel: session %q is not for node %s", id, node), http.StatusForbidden)
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), wire.UpgradeProto) {
		http.Error(w, "stream tunnel: a session connection must ask for Upgrade: "+wire.UpgradeProto, http.StatusBadRequest)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "stream tunnel: connection cannot be taken over", http.StatusInternalServerError)
		return
	}
	conn, rw, err := hj.Hijack()
	if err != nil {
		return
	}
	if _, err := rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + wire.UpgradeProto + "\r\n\r\n"); err != nil || rw.Flush() != nil {
		_ = conn.Close()
		return
	}
	select {
	case p.ch <- sessionConn{conn: conn, rd: rw.Reader}:
	default: // the request gave up meanwhile
		_ = conn.Close()
	}
}

// open announces a session to node and waits for its connection.
func (m *Module) open(node string, timeout time.Duration) (sessionConn, error) {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	p := &pending{node: node, ch: make(chan sessionConn, 1)}
	m.mu.Lock()
	t := m.tunnels[node]
	if t != nil {
		m.pending[id] = p
	}
	m.mu.Unlock()
	if t == nil {
		return sessionConn{}, fmt.Errorf("node %s has no stream tunnel to this cloudcore (is edgestream enabled and connected?)", node)
	}
	cleanup := func() {
		m.mu.Lock()
		delete(m.pending, id)
		m.mu.Unlock()
	}
	deadline := time.Now().Add(timeout)
	if err := t.send(wire.Control{Session: id}, deadline); err != nil {
		cleanup()
		_ = t.ws.Close()
		return sessionConn{}, fmt.Errorf("announcing the session to node %s: %w", node, err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case sc := <-p.ch:
		return sc, nil
	case <-timer.C:
	case <-m.life.Done():
	}
	cleanup()
	select { // it may have arrived just now
	case sc := <-p.ch:
		return sc, nil
	default:
	}
	return sessionConn{}, fmt.Errorf("node %s did not open the session within %s (sessionTimeout)", node, timeout)
}

// track registers a session connection so Stop closes it; the returned func forgets it.
func (m *Module) track(c net.Conn) func() {
	m.mu.Lock()
	m.active[c] = struct{}{}
	m.mu.Unlock()
	m.metrics.active.Inc()
	return func() {
		m.mu.Lock()
		delete(m.active, c)
		m.mu.Unlock()
		m.metrics.active.Dec()
		_ = c.Close()
	}
}
