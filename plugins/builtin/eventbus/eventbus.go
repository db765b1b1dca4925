// Package eventbus is the edge's only MQTT client: it bridges MQTT topics to the router and router
// messages to MQTT, so devices and mappers talk to devicetwin (and, if asked, to the cloud) without
// any other module knowing MQTT. By default it runs its own broker (mochi-mqtt) on loopback, so
// nothing else must be installed; an external broker such as mosquitto works too, or both at once.
package eventbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// Name is the module's routing address; its group is "bus".
const Name = "eventbus"

// Group is the routing group of eventbus and of the messages it sends.
const Group = "bus"

// MQTT modes.
const (
	ModeInternal = "internal" // the embedded broker only (default)
	ModeExternal = "external" // an external broker only, e.g. mosquitto
	ModeBoth     = "both"     // the embedded broker and an external one, bridged both ways through the router
)

// Info registers eventbus; tests wrap Info.New to reach the instance (BrokerAddr).
var Info = sdk.Info{
	Name:    Name,
	Group:   Group,
	Doc:     "MQTT bridge: an embedded broker (or an external one) <-> the router; devicetwin's device topics, user topics to the cloud.",
	Enabled: true,
	Mailbox: 8192,
	New:     func() sdk.Module { return New() },
}

func init() { sdk.Register(Info) }

// Module is eventbus; its exported fields are its settings.
type Module struct {
	MQTTMode        string `yaml:"mqttMode" doc:"internal (the embedded broker, default), external (e.g. mosquitto at externalURL) or both."`
	InternalAddress string `yaml:"internalAddress" doc:"host:port the embedded broker listens on. Loopback only by default: without broker.passwordFile or broker.clientCAFile it accepts every client."`
	ExternalURL     string `yaml:"externalURL" doc:"The external broker, tcp://host:port (mode external or both)."`
	ClientID        string `yaml:"clientID" doc:"MQTT client id; empty means kedge-eventbus-<node>."`
	// Topics are subscribed on every broker.
	Topics []string `yaml:"topics" doc:"Topic filters subscribed on every broker; what arrives goes to the router."`
	// TwinModule receives the device topics ($hw/events/..., $ke/events/...).
	TwinModule string `yaml:"twinModule" doc:"Module that receives messages on $hw/events/# and $ke/events/#."`
	// UserTopics are forwarded to HubGroup when ForwardUserTopics is on.
	UserTopics        []string `yaml:"userTopics" doc:"Topic filters whose messages go to the cloud when forwardUserTopics is on."`
	ForwardUserTopics bool     `yaml:"forwardUserTopics" doc:"Send messages on userTopics to hubGroup (the cloud)."`
	HubGroup          string   `yaml:"hubGroup" doc:"Group that carries messages to the cloud."`

	KeepAlive            time.Duration `yaml:"keepAlive" doc:"MQTT keepalive of the client."`
	ConnectTimeout       time.Duration `yaml:"connectTimeout" doc:"Bound on one connection attempt; Start waits this long for the embedded broker's client."`
	MaxReconnectInterval time.Duration `yaml:"maxReconnectInterval" doc:"Longest wait between reconnection attempts (the client backs off up to it)."`
	WriteTimeout         time.Duration `yaml:"writeTimeout" doc:"Bound on handing one publish to the connection."`
	SendTimeout          time.Duration `yaml:"sendTimeout" doc:"Bound on queueing an MQTT message for a module whose mailbox is full; then it is dropped and counted."`
	AckTimeout           time.Duration `yaml:"ackTimeout" doc:"Embedded broker: how long a QoS 1/2 twin update waits for devicetwin to store it before its PUBACK; then the client's connection is closed without it (the client publishes again)."`

	// Broker secures the embedded broker: passwords, TLS, client certificates (brokerauth.go).
	Broker BrokerSecurity `yaml:"broker" doc:"Who may connect to the embedded broker: a password file, TLS, client certificates (all optional; none set: every client)."`

	host       sdk.Host
	ctx        context.Context
	log        *slog.Logger
	broker     *broker
	durable    *durableHook // embedded broker: twin updates acknowledged once stored (durable.go)
	clients    []*client
	metrics    *metrics
	tokens     chan pendingToken
	stopTokens chan struct{}
	wg         sync.WaitGroup
}

var (
	_ sdk.Module        = (*Module)(nil)
	_ sdk.HealthChecker = (*Module)(nil)
)

// New returns eventbus with its defaults.
func New() *Module {
	return &Module{
		MQTTMode:             ModeInternal,
		InternalAddress:      "127.0.0.1:1884",
		ExternalURL:          "tcp://127.0.0.1:1883",
		Topics:               []string{"$hw/events/#", "$ke/events/#", "+/user/#"},
		TwinModule:           "devicetwin",
		UserTopics:           []string{"+/user/#"},
		HubGroup:             "hub",
		KeepAlive:            30 * time.Second,
		ConnectTimeout:       10 * time.Second,
		MaxReconnectInterval: 10 * time.Second,
		WriteTimeout:         10 * time.Second,
		SendTimeout:          5 * time.Second,
		AckTimeout:           10 * time.Second,
	}
}

// Start runs the embedded broker (modes internal and both) and connects the clients. It waits for
// the embedded broker's client; an external broker that is down is retried in the background.
func (m *Module) Start(ctx context.Context, h sdk.Host) (err error) {
	if err := m.Validate(); err != nil { // the host checked already; a direct caller gets the same answer
		return err
	}
	m.host, m.ctx, m.log = h, ctx, h.Logger()
	if m.ClientID == "" {
		m.ClientID = "kedge-eventbus-" + h.NodeName()
	}
	if m.metrics, err = newMetrics(h.Metrics()); err != nil {
		return err
	}
	tokens := make(chan pendingToken, 4096)
	m.tokens = tokens
	stop := make(chan struct{})
	m.stopTokens = stop
	m.wg.Go(func() { m.watchTokens(tokens, stop) })
	defer func() {
		if err != nil { // Stop is not called after a failed Start: release what started
			_ = m.Stop(ctx)
		}
	}()

	if m.MQTTMode != ModeExternal {
		auth, err := newBrokerAuth(m.Broker, h.Metrics(), m.log)
		if err != nil {
			return fmt.Errorf("embedded broker: %w", err)
		}
		m.durable = newDurableHook(m)
		b, err := startBroker(m.InternalAddress, m.log, auth, m.durable)
		if err != nil {
			return fmt.Errorf("embedded broker on %s: %w", m.InternalAddress, err)
		}
		m.broker = b
		m.durable.server = b.server
		c := m.newClient("internal", b.selfURL())
		m.clients = append(m.clients, c)
		if !c.connect(m.ConnectTimeout) {
			return fmt.Errorf("connect to the embedded broker at %s: no connection within %s", b.Addr(), m.ConnectTimeout)
		}
	}
	if m.MQTTMode != ModeInternal {
		c := m.newClient("external", m.ExternalURL)
		m.clients = append(m.clients, c)
		if !c.connect(m.ConnectTimeout) {
			m.log.Warn("external MQTT broker not reachable yet; retrying in the background", "url", m.ExternalURL)
		}
	}
	return nil
}

// BrokerAddr is the address the embedded broker is bound to (empty in external mode).
func (m *Module) BrokerAddr() string {
	if m.broker == nil {
		return ""
	}
	return m.broker.Addr()
}

// Healthy reports whether every client is connected and subscribed.
func (m *Module) Healthy(context.Context) error {
	for _, c := range m.clients {
		if !c.ready() {
			return fmt.Errorf("MQTT client for the %s broker (%s) is not connected and subscribed", c.broker, c.url)
		}
	}
	return nil
}

// Stop disconnects the clients and closes the embedded broker.
func (m *Module) Stop(context.Context) error {
	for _, c := range m.clients {
		c.close()
	}
	m.clients = nil
	if m.broker != nil {
		m.broker.close()
		m.broker = nil
	}
	if m.durable != nil {
		m.durable.stop()
	}
	if m.tokens != nil {
		close(m.stopTokens)
		close(m.tokens)
		m.tokens = nil
	}
	m.wg.Wait()
	return nil
}

// Handle publishes a router message to MQTT: operation "publish", Route.Resource = topic, Content =
// the payload (a JSON string when Header.Type is mqtt/raw, published as its text).
func (m *Module) Handle(ctx context.Context, msg sdk.Message) error {
	if op := msg.Route.Operation; (op == message.OpResponse || op == message.OpError) && msg.IsReply() {
		if m.durable == nil || !m.durable.answer(msg) {
			m.metrics.durable.WithLabelValues("late_answer").Inc()
		}
		return nil
	}
	if msg.Route.Operation != message.OpPublish {
		return fmt.Errorf("operation %q from %s: eventbus only handles %q (resource = MQTT topic)", msg.Route.Operation, msg.Route.Source, message.OpPublish)
	}
	topic := msg.Route.Resource
	if topic == "" || strings.ContainsAny(topic, "+#") {
		m.metrics.dropped.WithLabelValues("bad_topic").Inc()
		return fmt.Errorf("publish from %s: topic %q must be non-empty and hold no wildcard", msg.Route.Source, topic)
	}
	kind, qos, err := parseType(msg.Header.Type)
	if err != nil {
		m.metrics.dropped.WithLabelValues("bad_type").Inc()
		return fmt.Errorf("publish to %s from %s: %w", topic, msg.Route.Source, err)
	}
	payload := []byte(msg.Content)
	switch kind {
	case "", TypeJSON:
	case TypeRaw:
		var s string
		if err := json.Unmarshal(msg.Content, &s); err != nil {
			m.metrics.dropped.WithLabelValues("bad_payload").Inc()
			return fmt.Errorf("publish to %s from %s: type %s needs a JSON string as content: %w", topic, msg.Route.Source, TypeRaw, err)
		}
		payload = []byte(s)
	default:
		m.metrics.dropped.WithLabelValues("bad_type").Inc()
		return fmt.Errorf("publish to %s from %s: header type %q: want %s or %s", topic, msg.Route.Source, kind, TypeJSON, TypeRaw)
	}
	if qos < 0 {
		qos = int(defaultQoS(topic))
	}
	class := classify(topic)
	for _, c := range m.clients {
		c.publish(topic, byte(qos), payload, class)
	}
	return nil
}

// route is where an MQTT message goes on the router: a module, or a group (toGroup).
func (m *Module) route(topic string) (to string, toGroup bool, ok bool) {
	if strings.HasPrefix(topic, "$hw/events/") || strings.HasPrefix(topic, "$ke/events/") {
		return m.TwinModule, false, true
	}
	if m.ForwardUserTopics {
		for _, f := range m.UserTopics {
			if MatchTopic(f, topic) {
				return m.HubGroup, true, true
			}
		}
	}
	return "", false, false
}

// deliver hands one MQTT message to the router (called by the clients, in arrival order).
func (m *Module) deliver(topic string, payload []byte) {
	m.metrics.received.WithLabelValues(classify(topic)).Inc()
	to, toGroup, ok := m.route(topic)
	if !ok {
		m.metrics.dropped.WithLabelValues("no_route").Inc()
		return
	}
	m.send(to, toGroup, topic, m.routerMessage(topic, payload))
}

// routerMessage is the router's form of an MQTT message.
func (m *Module) routerMessage(topic string, payload []byte) sdk.Message {
	msg := message.New(Name, Group, message.OpPublish, topic)
	if message.ValidJSON(payload) {
		msg.Content = append(json.RawMessage(nil), payload...)
	} else {
		raw, _ := json.Marshal(string(payload)) // a string always encodes (invalid UTF-8 becomes U+FFFD)
		msg.Content = raw
		msg.Header.Type = TypeRaw
	}
	return msg
}

// send queues msg for a module or group, waiting up to sendTimeout for room; a failure is counted.
func (m *Module) send(to string, toGroup bool, topic string, msg sdk.Message) bool {
	ctx, cancel := context.WithTimeout(m.ctx, m.SendTimeout)
	defer cancel()
	var err error
	if toGroup {
		err = m.host.SendToGroup(ctx, to, msg)
	} else {
		err = m.host.Send(ctx, to, msg)
	}
	if err != nil {
		reason := "send_failed"
		if errors.Is(err, sdk.ErrUnknownModule) {
			reason = "no_receiver"
		}
		m.metrics.dropped.WithLabelValues(reason).Inc()
		m.log.Warn("MQTT message dropped", "topic", topic, "to", to, "err", err)
		return false
	}
	m.metrics.routed.WithLabelValues(classify(topic)).Inc()
	return true
}

type pendingToken struct {
	tok interface {
		Done() <-chan struct{}
		Error() error
	}
	topic string
	class string
}

// watchTokens counts publishes that failed after they were handed to a client.
func (m *Module) watchTokens(tokens <-chan pendingToken, stop <-chan struct{}) {
	for p := range tokens {
		wait := time.NewTimer(m.WriteTimeout + m.ConnectTimeout)
		select {
		case <-p.tok.Done():
			wait.Stop()
		case <-wait.C:
			continue // still queued in the client (reconnecting): it is sent later or dropped there
		case <-stop:
			wait.Stop()
			return // stopping: a publish still in flight is the client's to finish or drop, not ours to wait for
		}
		if err := p.tok.Error(); err != nil {
			m.metrics.dropped.WithLabelValues("publish_failed").Inc()
			m.log.Warn("MQTT publish failed", "topic", p.topic, "err", err)
		}
	}
}

type metrics struct {
	received  *prometheus.CounterVec
	routed    *prometheus.CounterVec
	published *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	reconnect *prometheus.CounterVec
	connected *prometheus.GaugeVec
	durable   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_eventbus_received_total",
			Help: "MQTT messages received, by topic class (twin, state, membership, data, user, other)."}, []string{"class"}),
		routed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_eventbus_routed_total",
			Help: "MQTT messages handed to a module or group, by topic class."}, []string{"class"}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_eventbus_published_total",
			Help: "Router messages published to MQTT (one per broker), by topic class."}, []string{"class"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_eventbus_dropped_total",
			Help: "Messages not passed on, by reason (no_route, no_receiver, send_failed, echo, bad_topic, bad_type, bad_payload, publish_failed)."}, []string{"reason"}),
		reconnect: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_eventbus_reconnects_total",
			Help: "Reconnection attempts after a lost connection, by broker (internal, external)."}, []string{"broker"}),
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kedge_eventbus_connected",
			Help: "1 while the client is connected and subscribed, by broker."}, []string{"broker"}),
		durable: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_eventbus_twin_acks_total",
			Help: "Embedded broker, QoS 1/2 twin updates by outcome: acknowledged (stored or refused by devicetwin), not_stored, timeout, no_room, disconnected (the client left first), late_answer."}, []string{"outcome"}),
	}
	for _, c := range []prometheus.Collector{m.received, m.routed, m.published, m.dropped, m.reconnect, m.connected, m.durable} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
