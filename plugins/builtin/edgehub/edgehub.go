// Package edgehub is the edge end of the cloud link. It dials cloudhub over mTLS with backoff and full
// jitter, hands what the cloud sends to the module that owns it and acknowledges it only once that
// module answered (metamanager answers after the object is on disk), and carries what edge modules
// send to the cloud through the node's durable outbox, so nothing is lost while offline.
package edgehub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// Name is the module's routing address; its group is "hub".
const Name = "edgehub"

func init() {
	sdk.Register(sdk.Info{
		Name:     Name,
		Group:    "hub",
		Doc:      "The link to cloudcore: mTLS websocket, reliable delivery both ways, offline outbox, certificate rotation.",
		Requires: []string{sdk.DefaultMetaManager},
		Enabled:  false, // needs a cloud to talk to: `edgecore join` writes its block with enable: true
		New:      func() sdk.Module { return New() },
	})
}

// Module is edgehub; its exported fields are its settings.
type Module struct {
	Server        string        `yaml:"server" doc:"cloudhub's address, host:port (port 10000)." cfg:"min"`
	CertServer    string        `yaml:"certServer" doc:"cloudcore's certificate server, host:port (port 10002), for certificate rotation; empty disables rotation."`
	ProjectID     string        `yaml:"projectID" doc:"Project ID in the hub URL and the project_id header."`
	CAFile        string        `yaml:"caFile" doc:"The cloud's CA certificate (written by edgecore join)." cfg:"min"`
	CertFile      string        `yaml:"certFile" doc:"This node's certificate (CN system:node:<name>)." cfg:"min"`
	KeyFile       string        `yaml:"keyFile" doc:"This node's private key." cfg:"min"`
	Heartbeat     time.Duration `yaml:"heartbeat" doc:"Ping period both ways; a link silent for two periods is declared dead and redialed."`
	BackoffMin    time.Duration `yaml:"backoffMin" doc:"First redial wait (full jitter: a random wait up to the current bound)."`
	BackoffMax    time.Duration `yaml:"backoffMax" doc:"Upper bound of the redial wait."`
	HealthyAfter  time.Duration `yaml:"healthyAfter" doc:"A link counts as healthy once the cloud sent a message it could read or it stayed up this long; only a healthy link resets the redial backoff, so a cloud that closes right after the handshake is redialed with growing waits, never in a tight loop."`
	Window        int           `yaml:"window" doc:"Upstream messages sent but not yet acknowledged, at most."`
	AckTimeout    time.Duration `yaml:"ackTimeout" doc:"An upstream message not acknowledged within this is sent again (same ID; the cloud drops repeats); each further resend on the same connection waits twice as long, up to 16 times this. A reconnect resends at once."`
	HandleTimeout time.Duration `yaml:"handleTimeout" doc:"How long a message from the cloud may wait for the edge module handling it before the next is taken (it stays queued for that module)."`
	// Dispatch maps a message group from the cloud to the edge module that handles it.
	Dispatch      map[string]string `yaml:"dispatch" doc:"Message group from the cloud -> edge module that handles and acknowledges it."`
	AsyncGroups   []string          `yaml:"asyncGroups" doc:"Message groups from the cloud whose messages are independent requests (servicebus calls): handled beside the others, so a slow one never holds up the node's objects."`
	AsyncLimit    int               `yaml:"asyncLimit" doc:"Messages of asyncGroups handled at once; more wait."`
	EventsGroup   string            `yaml:"eventsGroup" doc:"Group told when the link goes up or down (nobody in it is fine)."`
	QUIC          QUIC              `yaml:"quic" doc:"Dial the cloud over QUIC instead of the websocket (quic.go)."`
	SendInventory bool              `yaml:"sendInventory" doc:"On connect, send the cloud the list of objects this node holds (a Kedge cloudhub resends what is missing); turn off for a KubeEdge cloudcore."`
	MetaManager   string            `yaml:"metaManager" doc:"Module asked, on connect, for the list of objects this node holds (sendInventory)."`
	LeaseDuration time.Duration     `yaml:"leaseDuration" doc:"Under KubeEdge's cloudcore: duration of the node's Lease in kube-node-lease, which edgehub renews every quarter of it through the hub as KubeEdge's edged does (a Kedge cloudcore keeps the Lease itself); 0 keeps no Lease."`

	host     sdk.Host
	outbox   sdk.Outbox
	tls      *tls.Config
	renewer  *pki.Renewer
	kick     chan struct{} // an upstream message was queued
	wg       sync.WaitGroup
	online   atomic.Bool
	proven   atomic.Bool // the current link carried a message from the cloud (it speaks our protocol)
	metrics  *metrics
	recent   *hub.Recent // IDs of messages from the cloud already handled (repeats are re-acked, not redone)
	async    map[string]bool
	dialHook func(ctx context.Context) (*hub.Conn, error)
}

var (
	_ sdk.Module        = (*Module)(nil)
	_ sdk.HealthChecker = (*Module)(nil)
	_ sdk.LinkChecker   = (*Module)(nil)
)

// New returns edgehub with its defaults.
func New() *Module {
	return &Module{
		ProjectID:     hub.DefaultProjectID,
		Heartbeat:     15 * time.Second,
		BackoffMin:    time.Second,
		BackoffMax:    time.Minute,
		HealthyAfter:  30 * time.Second,
		Window:        64,
		AckTimeout:    15 * time.Second,
		HandleTimeout: time.Minute,
		Dispatch: map[string]string{
			"resource": sdk.DefaultMetaManager, "meta": sdk.DefaultMetaManager,
			"twin": "devicetwin", "user": "eventbus", "func": "servicebus",
		},
		AsyncGroups:   []string{"func"},
		AsyncLimit:    16,
		EventsGroup:   "hubevents",
		SendInventory: true,
		MetaManager:   sdk.DefaultMetaManager,
		LeaseDuration: 40 * time.Second,
	}
}

func (m *Module) Start(ctx context.Context, h sdk.Host) error {
	m.host = h
	op, ok := h.(sdk.OutboxProvider)
	if !ok {
		return errors.New("edgehub needs the host's durable outbox; run it builtin")
	}
	m.outbox = op.Outbox()
	if err := m.Validate(); err != nil { // the host checked already; a direct caller gets the same answer
		return err
	}
	if m.QUIC.Enable && quicDial == nil {
		return errNoQUIC
	}
	if m.dialHook == nil {
		if err := m.loadTLS(); err != nil {
			return err
		}
	}
	var err error
	if m.metrics, err = newMetrics(h.Metrics(), m); err != nil {
		return err
	}
	m.async = map[string]bool{}
	for _, g := range m.AsyncGroups {
		m.async[g] = true
	}
	m.kick = make(chan struct{}, 1)
	m.recent = hub.NewRecent(4096)
	if m.renewer != nil {
		m.wg.Go(func() { _ = m.renewer.Run(ctx) })
	}
	m.wg.Go(func() { m.connectLoop(ctx) })
	return nil
}

func (m *Module) loadTLS() error {
	if m.Server == "" || m.CAFile == "" || m.CertFile == "" || m.KeyFile == "" {
		return errors.New("server, caFile, certFile and keyFile must be set (edgecore join writes them)")
	}
	host, _, err := net.SplitHostPort(m.Server)
	if err != nil {
		return fmt.Errorf("server %q: want host:port: %w", m.Server, err)
	}
	if m.CertServer != "" {
		r, err := pki.NewRenewer(pki.RenewerOptions{CertServer: m.CertServer, CAFile: m.CAFile, CertFile: m.CertFile, KeyFile: m.KeyFile, Logger: m.host.Logger()})
		if err != nil {
			return err
		}
		m.renewer = r
		m.tls = r.ClientTLSConfig()
	} else {
		pem, err := os.ReadFile(m.CAFile)
		if err != nil {
			return fmt.Errorf("caFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("caFile %s holds no PEM certificate", m.CAFile)
		}
		cert, err := tls.LoadX509KeyPair(m.CertFile, m.KeyFile)
		if err != nil {
			return fmt.Errorf("certFile/keyFile: %w", err)
		}
		m.tls = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{cert}}
	}
	m.tls.ServerName = host
	return nil
}

func (m *Module) Stop(context.Context) error {
	m.wg.Wait()
	return nil
}

// Healthy is nil: an edge node works offline, so a link that is down is no fault of the module (it
// queues upstream messages in the outbox); LinkUp reports the link for /readyz/cloud.
func (m *Module) Healthy(context.Context) error { return nil }

// LinkUp reports whether the cloud link is up (sdk.LinkChecker; /readyz/cloud, `module ls`).
func (m *Module) LinkUp(context.Context) error {
	if !m.online.Load() {
		return errors.New("not connected to the cloud (working offline; upstream messages wait in the outbox)")
	}
	return nil
}

// Handle queues a message from an edge module for the cloud. It returns once the message is durable.
// A sync query while the link is down is refused at once instead: an answer arriving after
// reconnecting would reach nobody, so offline the edge answers only from its own store.
func (m *Module) Handle(ctx context.Context, msg sdk.Message) error {
	if msg.Header.Sync && msg.Route.Operation == message.OpQuery && !m.online.Load() {
		return fmt.Errorf("offline: query %s from %s not sent to the cloud; while the cloud link is down queries are answered only from the edge's store", msg.Route.Resource, msg.Route.Source)
	}
	payload, err := message.Encode(msg)
	if err != nil {
		return fmt.Errorf("upstream message from %s: %w", msg.Route.Source, err)
	}
	if _, err := m.outbox.Enqueue(ctx, payload); err != nil {
		return fmt.Errorf("queue upstream message from %s: %w", msg.Route.Source, err)
	}
	m.metrics.queued.Inc()
	select {
	case m.kick <- struct{}{}:
	default:
	}
	return nil
}

// connectLoop dials until ctx ends, serving each connection until it breaks. The redial wait (full
// jitter, doubling up to backoffMax) resets only after a healthy link: one that carried a message
// from the cloud or stayed up healthyAfter. A link that dies unproven — a cloud that accepts and
// closes, or speaks another protocol — counts as a failed dial, so it is never redialed in a loop.
func (m *Module) connectLoop(ctx context.Context) {
	bound := m.BackoffMin
	wait := func(reason string, err error) bool {
		d := time.Duration(rand.Int64N(int64(bound)) + 1) // full jitter: anywhere in (0, bound]
		m.host.Logger().Warn(reason, "server", m.Server, "retry_in", d.Round(time.Millisecond), "err", err)
		bound = min(bound*2, m.BackoffMax)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	for ctx.Err() == nil {
		conn, err := m.dial(ctx)
		if err != nil {
			m.metrics.dials.WithLabelValues("error").Inc()
			if !wait("cannot reach the cloud; working offline", err) {
				return
			}
			continue
		}
		m.metrics.dials.WithLabelValues("ok").Inc()
		m.proven.Store(false)
		began := time.Now()
		err = m.serve(ctx, conn)
		if ctx.Err() != nil {
			return
		}
		up := time.Since(began)
		if m.proven.Load() || up >= m.HealthyAfter {
			bound = m.BackoffMin
			m.host.Logger().Warn("cloud link lost; redialing", "after", up.Round(time.Millisecond), "err", err)
			continue
		}
		m.metrics.links.WithLabelValues("unproven").Inc()
		if !wait("cloud link closed before the cloud sent anything; backing off", fmt.Errorf("after %s: %w", up.Round(time.Millisecond), err)) {
			return
		}
	}
}

func (m *Module) dial(ctx context.Context) (*hub.Conn, error) {
	if m.dialHook != nil {
		return m.dialHook(ctx)
	}
	if m.QUIC.Enable {
		return m.dialQUIC(ctx)
	}
	return hub.Dial(ctx, hub.DialOptions{
		URL:       "wss://" + m.Server,
		TLS:       m.tls,
		NodeID:    m.host.NodeName(),
		ProjectID: m.ProjectID,
		Options:   hub.Options{Heartbeat: m.Heartbeat, Logger: m.host.Logger()},
	})
}

// event tells the events group that the link changed; nobody listening is fine.
func (m *Module) event(ctx context.Context, op string) {
	msg := message.New(Name, "hub", op, "")
	if err := m.host.SendToGroup(ctx, m.EventsGroup, msg); err != nil && !errors.Is(err, sdk.ErrUnknownModule) {
		m.host.Logger().Warn("link event not delivered", "event", op, "err", err)
	}
}
