package eventbus

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// client is one paho connection to one broker. It reconnects by itself and subscribes again on
// every connect (clean sessions), so a broker restart loses no subscription.
type client struct {
	m          *Module
	broker     string // internal or external
	url        string
	c          mqtt.Client
	subscribed atomic.Bool

	// echoes counts what this client published on topics it also subscribes to, so the copy the
	// broker sends back is not taken for a new message (MQTT 3.1.1 has no "no local").
	echoMu sync.Mutex
	echoes map[uint64]int
}

// maxEchoes bounds the echo table; QoS 0 copies that never come back would otherwise pile up.
const maxEchoes = 1 << 16

var echoSeed = maphash.MakeSeed()

func (m *Module) newClient(broker, url string) *client {
	c := &client{m: m, broker: broker, url: url, echoes: map[uint64]int{}}
	opts := mqtt.NewClientOptions().
		AddBroker(url).
		SetClientID(m.ClientID).
		SetCleanSession(true).
		SetOrderMatters(true). // deliver in arrival order: twin versions depend on it
		SetKeepAlive(m.KeepAlive).
		SetConnectTimeout(m.ConnectTimeout).
		SetWriteTimeout(m.WriteTimeout).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(m.MaxReconnectInterval).
		SetResumeSubs(false). // subscribed again in onConnect
		SetOnConnectHandler(c.onConnect).
		SetConnectionLostHandler(c.onLost).
		SetReconnectingHandler(func(mqtt.Client, *mqtt.ClientOptions) {
			m.metrics.reconnect.WithLabelValues(broker).Inc()
		})
	if broker == "internal" && m.broker != nil {
		m.broker.auth.clientOptions(opts) // the embedded broker's per-process credential
	}
	c.c = mqtt.NewClient(opts)
	return c
}

// connect starts connecting (retried in the background) and waits up to d for the first success.
func (c *client) connect(d time.Duration) bool {
	tok := c.c.Connect()
	if !tok.WaitTimeout(d) {
		return false
	}
	return tok.Error() == nil && c.waitSubscribed(d)
}

func (c *client) waitSubscribed(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !c.subscribed.Load() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

func (c *client) onConnect(cl mqtt.Client) {
	filters := make(map[string]byte, len(c.m.Topics))
	for _, f := range c.m.Topics {
		filters[f] = 1 // the subscription's QoS is a maximum: QoS 0 publications stay QoS 0
	}
	tok := cl.SubscribeMultiple(filters, func(_ mqtt.Client, msg mqtt.Message) {
		if c.isEcho(msg.Topic(), msg.Payload()) {
			c.m.metrics.dropped.WithLabelValues("echo").Inc()
			return
		}
		if c.broker == "internal" && c.m.durable != nil && isTwinUpdate(msg.Topic()) {
			return // the embedded broker's hook handed it to devicetwin already (durable.go)
		}
		c.m.deliver(msg.Topic(), msg.Payload())
	})
	if !tok.WaitTimeout(c.m.ConnectTimeout) || tok.Error() != nil {
		c.m.log.Error("MQTT subscribe failed; reconnecting", "broker", c.broker, "url", c.url, "err", tok.Error())
		// Drop the connection so the client reconnects and tries again.
		go cl.Disconnect(0)
		return
	}
	c.subscribed.Store(true)
	c.m.metrics.connected.WithLabelValues(c.broker).Set(1)
	c.m.log.Info("MQTT connected and subscribed", "broker", c.broker, "url", c.url, "topics", c.m.Topics)
}

func (c *client) onLost(_ mqtt.Client, err error) {
	c.subscribed.Store(false)
	c.m.metrics.connected.WithLabelValues(c.broker).Set(0)
	c.m.log.Warn("MQTT connection lost; reconnecting", "broker", c.broker, "url", c.url, "err", err)
}

func (c *client) ready() bool { return c.c.IsConnectionOpen() && c.subscribed.Load() }

func (c *client) close() {
	c.c.Disconnect(250)
	c.subscribed.Store(false)
}

func echoKey(topic string, payload []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(echoSeed)
	h.WriteString(topic)
	h.WriteByte(0)
	h.Write(payload)
	return h.Sum64()
}

// publish sends one message; failures are counted by the module's token watcher.
func (c *client) publish(topic string, qos byte, payload []byte, class string) {
	// The embedded broker never sends eventbus its own messages back (no local, durable.go).
	noLocal := c.broker == "internal" && c.m.durable != nil
	for _, f := range c.m.Topics {
		if !noLocal && MatchTopic(f, topic) {
			k := echoKey(topic, payload)
			c.echoMu.Lock()
			if len(c.echoes) >= maxEchoes {
				clear(c.echoes)
			}
			c.echoes[k]++
			c.echoMu.Unlock()
			break
		}
	}
	tok := c.c.Publish(topic, qos, false, payload)
	c.m.metrics.published.WithLabelValues(class).Inc()
	select {
	case c.m.tokens <- pendingToken{tok: tok, topic: topic, class: class}:
	default: // the watcher is behind; this one's outcome is not counted
	}
}

// isEcho reports (once) whether a received message is the copy of one this client published.
func (c *client) isEcho(topic string, payload []byte) bool {
	k := echoKey(topic, payload)
	c.echoMu.Lock()
	defer c.echoMu.Unlock()
	n := c.echoes[k]
	if n == 0 {
		return false
	}
	if n == 1 {
		delete(c.echoes, k)
	} else {
		c.echoes[k] = n - 1
	}
	return true
}
