// Package edgestream is the edge end of the stream tunnel: it keeps a control websocket open to
// cloudstream (mTLS with the node certificate, as edgehub dials the hub) and serves each session the
// cloud announces on a connection of its own: container logs from the CRI log file, exec through the
// runtime's CRI streaming server.
package edgestream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/kedge-io/kedge/plugins/builtin/cloudstream/wire"
	"github.com/kedge-io/kedge/sdk"
)

// Name is the module's routing address.
const Name = "edgestream"

func init() {
	sdk.Register(sdk.Info{
		Name:    Name,
		Group:   "stream",
		Doc:     "kubectl logs and exec for this node's pods: the edge end of cloudstream's stream tunnel, serving sessions from CRI.",
		Enabled: false, // needs cloudstream's tunnel address
		New:     func() sdk.Module { return New() },
	})
}

// Module is edgestream; its exported fields are its settings.
type Module struct {
	Server      string        `yaml:"server" doc:"cloudstream's tunnel address, host:port (port 10004)." cfg:"min"`
	CAFile      string        `yaml:"caFile" doc:"The cloud's CA certificate (edgecore join writes it; the same file as edgehub's)." cfg:"min"`
	CertFile    string        `yaml:"certFile" doc:"This node's certificate (the same file as edgehub's; read again on every dial, so rotation is picked up)." cfg:"min"`
	KeyFile     string        `yaml:"keyFile" doc:"This node's private key." cfg:"min"`
	CRIEndpoint string        `yaml:"criEndpoint" doc:"The container runtime's CRI socket (the same as edged's)."`
	Heartbeat   time.Duration `yaml:"heartbeat" doc:"Ping period on the control tunnel; silent for two periods: redial."`
	BackoffMin  time.Duration `yaml:"backoffMin" doc:"First redial wait (full jitter)."`
	BackoffMax  time.Duration `yaml:"backoffMax" doc:"Upper bound of the redial wait."`
	DialTimeout time.Duration `yaml:"dialTimeout" doc:"Timeout of one dial (tunnel, session, runtime streaming server)."`
	LogPoll     time.Duration `yaml:"logPoll" doc:"How often a followed log file is checked for new lines."`

	host    sdk.Host
	rt      runtime
	wg      sync.WaitGroup
	metrics *metrics
	mu      sync.Mutex
	online  bool
}

var (
	_ sdk.Module        = (*Module)(nil)
	_ sdk.HealthChecker = (*Module)(nil)
)

// New returns edgestream with its defaults.
func New() *Module {
	return &Module{
		CRIEndpoint: "unix:///run/containerd/containerd.sock",
		Heartbeat:   15 * time.Second,
		BackoffMin:  time.Second,
		BackoffMax:  30 * time.Second,
		DialTimeout: 10 * time.Second,
		LogPoll:     200 * time.Millisecond,
	}
}

func (m *Module) Start(ctx context.Context, h sdk.Host) error {
	m.host = h
	if err := m.Validate(); err != nil { // the host checked already; a direct caller gets the same answer
		return err
	}
	if _, err := m.tlsConfig(); err != nil {
		return err
	}
	var err error
	if m.metrics, err = newMetrics(h.Metrics()); err != nil {
		return err
	}
	if m.rt == nil {
		if m.rt, err = dialCRI(m.CRIEndpoint, h.NodeName()); err != nil {
			return err
		}
	}
	m.wg.Go(func() { m.connectLoop(ctx) })
	return nil
}

func (m *Module) Handle(_ context.Context, msg sdk.Message) error {
	return fmt.Errorf("edgestream takes no messages (got %s of %s)", msg.Route.Operation, msg.Route.Resource)
}

func (m *Module) Stop(context.Context) error {
	m.wg.Wait()
	if c, ok := m.rt.(interface{ close() error }); ok {
		_ = c.close()
	}
	return nil
}

// Healthy is nil: a tunnel that is down (the node offline) is no fault of the module; LinkUp
// reports it for /readyz/cloud.
func (m *Module) Healthy(context.Context) error { return nil }

// LinkUp reports whether the tunnel is up (sdk.LinkChecker).
func (m *Module) LinkUp(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.online {
		return errors.New("stream tunnel to " + m.Server + " is down")
	}
	return nil
}

func (m *Module) setOnline(v bool) {
	m.mu.Lock()
	m.online = v
	m.mu.Unlock()
}

// tlsConfig reads the node certificate and the CA afresh.
func (m *Module) tlsConfig() (*tls.Config, error) {
	pem, err := os.ReadFile(m.CAFile)
	if err != nil {
		return nil, fmt.Errorf("caFile: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("caFile %s holds no PEM certificate", m.CAFile)
	}
	cert, err := tls.LoadX509KeyPair(m.CertFile, m.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("certFile/keyFile: %w", err)
	}
	host, _, _ := net.SplitHostPort(m.Server)
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{cert},
		ServerName: host, NextProtos: []string{"http/1.1"}}, nil
}

// connectLoop keeps the control tunnel up until ctx ends.
func (m *Module) connectLoop(ctx context.Context) {
	bound := m.BackoffMin
	for ctx.Err() == nil {
		began := time.Now()
		err := m.serveTunnel(ctx)
		m.setOnline(false)
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) > m.BackoffMax {
			bound = m.BackoffMin
		}
		wait := time.Duration(rand.Int64N(int64(bound)) + 1)
		m.host.Logger().Warn("stream tunnel lost; redialing", "in", wait.Round(time.Millisecond), "err", err)
		bound = min(bound*2, m.BackoffMax)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// serveTunnel dials the control websocket and starts a session for every announcement.
func (m *Module) serveTunnel(ctx context.Context) error {
	conf, err := m.tlsConfig()
	if err != nil {
		m.metrics.dials.WithLabelValues("error").Inc()
		return err
	}
	d := websocket.Dialer{TLSClientConfig: conf, HandshakeTimeout: m.DialTimeout}
	u := url.URL{Scheme: "wss", Host: m.Server, Path: wire.TunnelPath}
	dctx, cancel := context.WithTimeout(ctx, m.DialTimeout)
	ws, resp, err := d.DialContext(dctx, u.String(), nil)
	cancel()
	if err != nil {
		m.metrics.dials.WithLabelValues("error").Inc()
		if resp != nil {
			return fmt.Errorf("dial %s: %s", u.String(), resp.Status)
		}
		return fmt.Errorf("dial %s: %w", u.String(), err)
	}
	m.metrics.dials.WithLabelValues("ok").Inc()
	defer ws.Close()
	m.setOnline(true)
	m.host.Logger().Info("stream tunnel up", "server", m.Server)
	var wmu sync.Mutex
	_ = ws.SetReadDeadline(time.Now().Add(2 * m.Heartbeat))
	ws.SetPongHandler(func(string) error { return ws.SetReadDeadline(time.Now().Add(2 * m.Heartbeat)) })
	ws.SetPingHandler(func(data string) error {
		_ = ws.SetReadDeadline(time.Now().Add(2 * m.Heartbeat))
		wmu.Lock()
		defer wmu.Unlock()
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
			case <-ctx.Done():
				_ = ws.Close()
				return
			case <-tick.C:
				wmu.Lock()
				err := ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(m.Heartbeat))
				wmu.Unlock()
				if err != nil {
					_ = ws.Close()
					return
				}
			}
		}
	})
	for {
		var c wire.Control
		if err := ws.ReadJSON(&c); err != nil {
			return err
		}
		if c.Session == "" {
			continue
		}
		m.wg.Go(func() { m.serveSession(ctx, conf, c.Session) })
	}
}
