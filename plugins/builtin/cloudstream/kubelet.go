package cloudstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/plugins/builtin/cloudstream/wire"
)

// upgradeHeaders are the request headers an exec, attach or port-forward upgrade needs at the
// runtime's streaming server: SPDY (Upgrade: SPDY/3.1 with X-Stream-Protocol-Version, e.g.
// v4.channel.k8s.io or portforward.k8s.io) or websocket (Sec-WebSocket-Protocol names the same).
var upgradeHeaders = []string{"Connection", "Upgrade", "X-Stream-Protocol-Version",
	"Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Protocol", "Sec-Websocket-Extensions"}

// streamKinds are the kinds whose session becomes a raw two-way relay after the edge's 200.
var streamKinds = map[string]bool{wire.KindExec: true, wire.KindAttach: true, wire.KindPortForward: true}

// parsePath splits a kubelet API path into kind, namespace, pod and container.
// Served: /containerLogs/{ns}/{pod}/{container}, /exec/{ns}/{pod}[/{uid}]/{container},
// /attach/{ns}/{pod}[/{uid}]/{container} and /portForward/{ns}/{pod}[/{uid}] (no container).
func parsePath(p string) (kind, ns, pod, container string, err error) {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	switch {
	case len(parts) == 4 && parts[0] == "containerLogs":
		kind = wire.KindLogs
	case (len(parts) == 4 || len(parts) == 5) && parts[0] == "exec":
		kind = wire.KindExec
	case (len(parts) == 4 || len(parts) == 5) && parts[0] == "attach":
		kind = wire.KindAttach
	case (len(parts) == 3 || len(parts) == 4) && parts[0] == "portForward":
		if parts[1] == "" || parts[2] == "" {
			return "", "", "", "", fmt.Errorf("%s: namespace and pod must not be empty", p)
		}
		return wire.KindPortForward, parts[1], parts[2], "", nil
	case len(parts) > 0 && (parts[0] == "stats" || parts[0] == "metrics" || parts[0] == "run"):
		return "", "", "", "", fmt.Errorf("/%s is not served for edge nodes yet (only /containerLogs, /exec, /attach and /portForward)", parts[0])
	default:
		return "", "", "", "", fmt.Errorf("%s is not a kubelet API path this server knows (want /containerLogs, /exec or /attach/{namespace}/{pod}/{container}, or /portForward/{namespace}/{pod})", p)
	}
	ns, pod, container = parts[1], parts[2], parts[len(parts)-1]
	if ns == "" || pod == "" || container == "" {
		return "", "", "", "", fmt.Errorf("%s: namespace, pod and container must not be empty", p)
	}
	return kind, ns, pod, container, nil
}

// serveKubelet is the kubelet API the kube-apiserver calls for edge nodes.
func (m *Module) serveKubelet(w http.ResponseWriter, r *http.Request) {
	if forwardedBy(r) == "" && !m.allowed(w, r) { // a forwarded request was authenticated by the replica that took it
		return
	}
	kind, ns, pod, container, err := parsePath(r.URL.Path)
	if err != nil {
		m.metrics.sessions.WithLabelValues("unknown", "bad_request").Inc()
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	p, err := m.client.CoreV1().Pods(ns).Get(r.Context(), pod, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		m.metrics.sessions.WithLabelValues(kind, "not_found").Inc()
		http.Error(w, fmt.Sprintf("pod %s/%s not found", ns, pod), http.StatusNotFound)
		return
	}
	if err != nil {
		m.metrics.sessions.WithLabelValues(kind, "error").Inc()
		http.Error(w, fmt.Sprintf("looking up pod %s/%s: %v", ns, pod, err), http.StatusBadGateway)
		return
	}
	node := p.Spec.NodeName
	if node == "" {
		m.metrics.sessions.WithLabelValues(kind, "not_found").Inc()
		http.Error(w, fmt.Sprintf("pod %s/%s is not scheduled to a node", ns, pod), http.StatusNotFound)
		return
	}
	if m.fwd != nil && forwardedBy(r) == "" && !m.hasTunnel(node) && m.fwd.forward(w, r, node, kind) {
		return // another replica holds the node's tunnel and answered
	}
	sc, err := m.open(node, m.SessionTimeout)
	if err != nil {
		m.metrics.sessions.WithLabelValues(kind, "no_tunnel").Inc()
		http.Error(w, fmt.Sprintf("pod %s/%s: %v", ns, pod, err), http.StatusServiceUnavailable)
		return
	}
	done := m.track(sc.conn)
	defer done()
	req := wire.Request{Kind: kind, Namespace: ns, Pod: pod, Container: container, Query: r.URL.RawQuery}
	if streamKinds[kind] {
		req.Header = http.Header{}
		for _, h := range upgradeHeaders {
			if v := r.Header.Values(h); len(v) > 0 {
				req.Header[http.CanonicalHeaderKey(h)] = v
			}
		}
	}
	if err := wire.WriteLine(sc.conn, req); err != nil {
		m.metrics.sessions.WithLabelValues(kind, "error").Inc()
		http.Error(w, fmt.Sprintf("node %s: sending the request: %v", node, err), http.StatusBadGateway)
		return
	}
	var st wire.Status
	if err := wire.ReadLine(sc.rd, &st); err != nil {
		m.metrics.sessions.WithLabelValues(kind, "error").Inc()
		http.Error(w, fmt.Sprintf("node %s: reading its answer: %v", node, err), http.StatusBadGateway)
		return
	}
	if st.Code != http.StatusOK {
		m.metrics.sessions.WithLabelValues(kind, "refused").Inc()
		code := st.Code
		if code < 400 || code > 599 {
			code = http.StatusBadGateway
		}
		http.Error(w, st.Error, code)
		return
	}
	m.metrics.sessions.WithLabelValues(kind, "ok").Inc()
	if kind == wire.KindLogs {
		m.relayLogs(w, r, sc)
		return
	}
	m.relayStream(w, sc)
}

// relayLogs copies the log text from the edge to the client, flushing every chunk, until either
// side ends.
func (m *Module) relayLogs(w http.ResponseWriter, r *http.Request, sc sessionConn) {
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	if fl != nil {
		fl.Flush()
	}
	stop := context.AfterFunc(r.Context(), func() { _ = sc.conn.Close() })
	defer stop()
	buf := make([]byte, 32<<10)
	for {
		n, err := sc.rd.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}

// relayStream (exec, attach, port-forward) takes over the client's connection and relays raw bytes
// both ways: the edge replays the upgrade request at the runtime's streaming server, whose 101 answer
// and stream come back as they are. The session ends when either side closes.
func (m *Module) relayStream(w http.ResponseWriter, sc sessionConn) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "stream: the connection cannot be taken over (HTTP/2?)", http.StatusInternalServerError)
		return
	}
	client, crw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer client.Close()
	ended := make(chan struct{}, 2)
	go func() { // client -> edge
		_, _ = io.Copy(sc.conn, crw.Reader)
		ended <- struct{}{}
	}()
	go func() { // edge -> client
		_, err := io.Copy(client, sc.rd)
		if err != nil && !errors.Is(err, io.EOF) {
			m.host.Logger().Debug("stream relay ended", "err", err)
		}
		ended <- struct{}{}
	}()
	<-ended
	_ = client.Close()
	_ = sc.conn.Close()
	<-ended
}
