package edgestream

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/kedge-io/kedge/plugins/builtin/cloudstream/wire"
)

// statusError is a refusal with the HTTP status the cloud should answer.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string { return e.msg }

func refuse(code int, format string, args ...any) error {
	return &statusError{code: code, msg: fmt.Sprintf(format, args...)}
}

// serveSession dials the session connection, reads the cloud's request and serves it.
func (m *Module) serveSession(ctx context.Context, conf *tls.Config, id string) {
	conn, rd, err := m.dialSession(ctx, conf, id)
	if err != nil {
		m.metrics.sessions.WithLabelValues("unknown", "dial_error").Inc()
		m.host.Logger().Warn("stream session not opened", "session", id, "err", err)
		return
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	var req wire.Request
	if err := wire.ReadLine(rd, &req); err != nil {
		m.metrics.sessions.WithLabelValues("unknown", "bad_request").Inc()
		m.host.Logger().Warn("stream session: bad request", "session", id, "err", err)
		return
	}
	var serr error
	switch req.Kind {
	case wire.KindLogs:
		serr = m.serveLogs(ctx, conn, rd, req)
	case wire.KindExec, wire.KindAttach, wire.KindPortForward:
		serr = m.serveStream(ctx, conn, rd, req)
	case wire.KindStats:
		serr = m.serveStats(ctx, conn)
	default:
		serr = refuse(http.StatusBadRequest, "unknown session kind %q (want logs, exec, attach, portforward or stats)", req.Kind)
	}
	var se *statusError
	switch {
	case serr == nil:
		m.metrics.sessions.WithLabelValues(req.Kind, "ok").Inc()
	case errors.As(serr, &se):
		m.metrics.sessions.WithLabelValues(req.Kind, "refused").Inc()
		_ = wire.WriteLine(conn, wire.Status{Code: se.code, Error: se.msg})
		m.host.Logger().Info("stream session refused", "kind", req.Kind, "pod", req.Namespace+"/"+req.Pod, "container", req.Container, "err", se.msg)
	default:
		m.metrics.sessions.WithLabelValues(req.Kind, "error").Inc()
		m.host.Logger().Debug("stream session ended", "kind", req.Kind, "pod", req.Namespace+"/"+req.Pod, "err", serr)
	}
}

// dialSession opens the connection of one session: TLS with the node certificate, then an HTTP/1.1
// upgrade on /session/<id>.
func (m *Module) dialSession(ctx context.Context, conf *tls.Config, id string) (net.Conn, *bufio.Reader, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: m.DialTimeout}, Config: conf}
	dctx, cancel := context.WithTimeout(ctx, m.DialTimeout)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", m.Server)
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (net.Conn, *bufio.Reader, error) { _ = conn.Close(); return nil, nil, err }
	stop := context.AfterFunc(dctx, func() { _ = conn.Close() })
	defer stop()
	if _, err := fmt.Fprintf(conn, "GET %s%s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n",
		wire.SessionPrefix, url.PathEscape(id), m.Server, wire.UpgradeProto); err != nil {
		return fail(err)
	}
	rd := bufio.NewReader(conn)
	resp, err := http.ReadResponse(rd, nil)
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fail(fmt.Errorf("session %s: %s: %s", id, resp.Status, strings.TrimSpace(string(body))))
	}
	return conn, rd, nil
}

// streamURL asks the runtime for the streaming URL of an exec, attach or port-forward session: the
// three differ only in the CRI call that makes it.
func (m *Module) streamURL(ctx context.Context, req wire.Request) (string, error) {
	q, err := url.ParseQuery(req.Query)
	if err != nil {
		return "", refuse(http.StatusBadRequest, "%s query %q: %v", req.Kind, req.Query, err)
	}
	if req.Kind == wire.KindPortForward {
		id, err := m.rt.sandbox(ctx, req.Namespace, req.Pod)
		if err != nil {
			return "", err
		}
		target, err := m.rt.portForwardURL(ctx, id)
		if err != nil {
			return "", refuse(http.StatusInternalServerError, "port-forward to %s/%s: the runtime refused: %v", req.Namespace, req.Pod, err)
		}
		return target, nil
	}
	var cmd []string
	if req.Kind == wire.KindExec {
		if cmd = q["command"]; len(cmd) == 0 {
			return "", refuse(http.StatusBadRequest, "exec into %s/%s/%s: no command given", req.Namespace, req.Pod, req.Container)
		}
	}
	id, err := m.rt.find(ctx, req.Namespace, req.Pod, req.Container, false)
	if err != nil {
		return "", err
	}
	// The API server names them input/output/error (the kubelet's parameters); stdin/stdout/stderr also accepted.
	stdin, stdout, stderr := flag(q, "input") || flag(q, "stdin"), flag(q, "output") || flag(q, "stdout"), flag(q, "error") || flag(q, "stderr")
	if !stdin && !stdout && !stderr {
		return "", refuse(http.StatusBadRequest, "%s %s/%s/%s: one of input, output or error must be set", req.Kind, req.Namespace, req.Pod, req.Container)
	}
	var target string
	if req.Kind == wire.KindAttach {
		target, err = m.rt.attachURL(ctx, id, flag(q, "tty"), stdin, stdout, stderr)
	} else {
		target, err = m.rt.execURL(ctx, id, cmd, flag(q, "tty"), stdin, stdout, stderr)
	}
	if err != nil {
		return "", refuse(http.StatusInternalServerError, "%s %s/%s/%s: the runtime refused: %v", req.Kind, req.Namespace, req.Pod, req.Container, err)
	}
	return target, nil
}

// serveStream (exec, attach, port-forward) asks the runtime for a streaming URL, dials it, and
// replays the API server's upgrade request there; from then on bytes flow unchanged both ways until
// either side closes.
func (m *Module) serveStream(ctx context.Context, conn net.Conn, rd *bufio.Reader, req wire.Request) error {
	target, err := m.streamURL(ctx, req)
	if err != nil {
		return err
	}
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		return refuse(http.StatusInternalServerError, "%s: the runtime's streaming URL %q is not absolute", req.Kind, target)
	}
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, m.DialTimeout)
	rt, err := d.DialContext(dctx, "tcp", u.Host)
	cancel()
	if err != nil {
		return refuse(http.StatusBadGateway, "%s: dialing the runtime's streaming server %s: %v", req.Kind, u.Host, err)
	}
	if u.Scheme == "https" {
		rt = tls.Client(rt, &tls.Config{InsecureSkipVerify: true}) // #nosec: a loopback server the runtime names, not a peer we choose
	}
	defer rt.Close()
	// A websocket upgrade must be a GET; SPDY upgrades (what the API server sends the kubelet) are POSTs.
	method := http.MethodPost
	if req.Header.Get("Sec-Websocket-Key") != "" {
		method = http.MethodGet
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, u.RequestURI(), u.Host)
	for k, vs := range req.Header {
		for _, v := range vs {
			if strings.ContainsAny(k+v, "\r\n") {
				return refuse(http.StatusBadRequest, "%s: upgrade header %q has a line break", req.Kind, k)
			}
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	if err := wire.WriteLine(conn, wire.Status{Code: http.StatusOK}); err != nil {
		return err
	}
	if _, err := io.WriteString(rt, b.String()); err != nil {
		return err
	}
	ended := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(rt, rd); ended <- struct{}{} }()
	go func() { _, _ = io.Copy(conn, rt); ended <- struct{}{} }()
	<-ended
	_ = conn.Close()
	_ = rt.Close()
	<-ended
	return nil
}

func flag(q url.Values, name string) bool {
	v := q.Get(name)
	return v == "1" || strings.EqualFold(v, "true")
}
