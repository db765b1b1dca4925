package probe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// handler runs one probe attempt within ctx (which carries the timeout).
type handler interface {
	probe(ctx context.Context, w *worker, timeout time.Duration) (outcome, string)
}

const (
	maxBody      = 10 * 1024
	maxRedirects = 10
	userAgent    = "kube-probe/1.36"
)

func (m *Manager) newHandler(podIP string, c *corev1.Container, p *corev1.Probe) (handler, error) {
	n := 0
	h := p.ProbeHandler
	for _, set := range []bool{h.Exec != nil, h.HTTPGet != nil, h.TCPSocket != nil, h.GRPC != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("needs exactly one of exec, httpGet, tcpSocket, grpc (has %d)", n)
	}
	switch {
	case h.Exec != nil:
		if len(h.Exec.Command) == 0 {
			return nil, errors.New("exec command is empty")
		}
		if m.exec == nil {
			return nil, errors.New("exec probes need an Execer and the manager has none")
		}
		return execHandler{cmd: h.Exec.Command}, nil
	case h.HTTPGet != nil:
		g := h.HTTPGet
		port, err := resolvePort(g.Port, c)
		if err != nil {
			return nil, fmt.Errorf("httpGet: %w", err)
		}
		host := g.Host
		if host == "" {
			host = podIP
		}
		if host == "" {
			return nil, errors.New("httpGet: no host and the pod has no IP yet")
		}
		scheme := strings.ToLower(string(g.Scheme))
		if scheme == "" {
			scheme = "http"
		}
		if scheme != "http" && scheme != "https" {
			return nil, fmt.Errorf("httpGet: scheme %q is not HTTP or HTTPS", g.Scheme)
		}
		p := g.Path
		if p == "" || p[0] != '/' {
			p = "/" + p
		}
		u, err := url.Parse(scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port)) + p)
		if err != nil {
			return nil, fmt.Errorf("httpGet: bad URL: %w", err)
		}
		hdr := http.Header{}
		for _, hh := range g.HTTPHeaders {
			hdr.Add(hh.Name, hh.Value)
		}
		if hdr.Get("User-Agent") == "" {
			hdr.Set("User-Agent", userAgent)
		}
		if hdr.Get("Accept") == "" {
			hdr.Set("Accept", "*/*")
		}
		return httpHandler{url: u, header: hdr}, nil
	case h.TCPSocket != nil:
		port, err := resolvePort(h.TCPSocket.Port, c)
		if err != nil {
			return nil, fmt.Errorf("tcpSocket: %w", err)
		}
		host := h.TCPSocket.Host
		if host == "" {
			host = podIP
		}
		if host == "" {
			return nil, errors.New("tcpSocket: no host and the pod has no IP yet")
		}
		return tcpHandler{addr: net.JoinHostPort(host, strconv.Itoa(port))}, nil
	default:
		g := h.GRPC
		if g.Port <= 0 || g.Port > 65535 {
			return nil, fmt.Errorf("grpc: port %d is out of range", g.Port)
		}
		if podIP == "" {
			return nil, errors.New("grpc: the pod has no IP yet")
		}
		svc := ""
		if g.Service != nil {
			svc = *g.Service
		}
		return grpcHandler{addr: net.JoinHostPort(podIP, strconv.Itoa(int(g.Port))), service: svc}, nil
	}
}

// resolvePort turns a number or a named container port into a port number.
func resolvePort(p intstr.IntOrString, c *corev1.Container) (int, error) {
	if p.Type == intstr.String {
		if n, err := strconv.Atoi(p.StrVal); err == nil {
			p = intstr.FromInt32(int32(n))
		} else {
			var names []string
			for _, cp := range c.Ports {
				if cp.Name == p.StrVal {
					return int(cp.ContainerPort), nil
				}
				if cp.Name != "" {
					names = append(names, cp.Name)
				}
			}
			if len(names) == 0 {
				return 0, fmt.Errorf("port %q is not a named port of container %q (it names no ports)", p.StrVal, c.Name)
			}
			return 0, fmt.Errorf("port %q is not a named port of container %q (named ports: %s)", p.StrVal, c.Name, strings.Join(names, ", "))
		}
	}
	if p.IntVal <= 0 || p.IntVal > 65535 {
		return 0, fmt.Errorf("port %d is out of range 1-65535", p.IntVal)
	}
	return int(p.IntVal), nil
}

type execHandler struct{ cmd []string }

func (h execHandler) probe(ctx context.Context, w *worker, timeout time.Duration) (outcome, string) {
	code, out, err := w.m.exec.ExecSync(ctx, w.c.id, h.cmd, timeout)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return failure, fmt.Sprintf("command %q timed out after %s", h.cmd, timeout)
		}
		return unknown, err.Error()
	}
	msg := strings.TrimSpace(string(out))
	if len(msg) > maxBody {
		msg = msg[:maxBody]
	}
	if code != 0 {
		return failure, fmt.Sprintf("command %q exited with %d: %s", h.cmd, code, msg)
	}
	return success, msg
}

func newHTTPClient() (*http.Transport, *http.Client) {
	tr := &http.Transport{
		Proxy:               nil,
		DisableKeepAlives:   true,                                  // one connection per probe, none left idle
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as the kubelet: probes do not verify
		TLSHandshakeTimeout: 0,
	}
	c := &http.Client{Transport: tr, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if req.URL.Hostname() != via[0].URL.Hostname() {
			return http.ErrUseLastResponse // another host: not followed, the redirect itself counts
		}
		if len(via) >= maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		return nil
	}}
	return tr, c
}

type httpHandler struct {
	url    *url.URL
	header http.Header
}

func (h httpHandler) probe(ctx context.Context, w *worker, timeout time.Duration) (outcome, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url.String(), nil)
	if err != nil {
		return failure, err.Error()
	}
	req.Header = h.header.Clone()
	if host := req.Header.Get("Host"); host != "" {
		req.Host = host
	}
	resp, err := w.m.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return failure, fmt.Sprintf("GET %s timed out after %s", h.url, timeout)
		}
		return failure, fmt.Sprintf("GET %s: %v", h.url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if resp.StatusCode >= 200 && resp.StatusCode < 400 {
		if resp.StatusCode >= 300 {
			return success, fmt.Sprintf("GET %s: redirect to another host not followed (%d to %s)", h.url, resp.StatusCode, resp.Header.Get("Location"))
		}
		return success, strings.TrimSpace(string(body))
	}
	return failure, fmt.Sprintf("GET %s: HTTP probe failed with status code %d: %s", h.url, resp.StatusCode, strings.TrimSpace(string(body)))
}

type tcpHandler struct{ addr string }

func (h tcpHandler) probe(ctx context.Context, _ *worker, timeout time.Duration) (outcome, string) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", h.addr)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return failure, fmt.Sprintf("connect to %s timed out after %s", h.addr, timeout)
		}
		return failure, fmt.Sprintf("connect to %s: %v", h.addr, err)
	}
	conn.Close()
	return success, ""
}

type grpcHandler struct {
	addr    string
	service string
}

func (h grpcHandler) probe(ctx context.Context, _ *worker, timeout time.Duration) (outcome, string) {
	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithUserAgent(userAgent))
	if err != nil {
		return failure, fmt.Sprintf("grpc %s: %v", h.addr, err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: h.service})
	if err != nil {
		if status.Code(err) == codes.DeadlineExceeded || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return failure, fmt.Sprintf("grpc health check of %s timed out after %s", h.addr, timeout)
		}
		return failure, fmt.Sprintf("grpc health check of %s: %v", h.addr, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return failure, fmt.Sprintf("grpc service %q at %s is %s", h.service, h.addr, resp.GetStatus())
	}
	return success, ""
}
