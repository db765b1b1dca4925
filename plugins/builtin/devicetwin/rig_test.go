package devicetwin_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/devicetwin"
	"github.com/kedge-io/kedge/plugins/builtin/eventbus"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// rig is devicetwin with eventbus beside it (embedded broker on a free loopback port), metamanager
// captured, and a test MQTT client standing in for a mapper.
type rig struct {
	h      *sdktest.Harness
	broker string
	mapper *client
}

func newRig(t testing.TB, twinCfg map[string]any, opts ...sdktest.Option) *rig {
	t.Helper()
	return newRigOn(t, map[string]any{"internalAddress": "127.0.0.1:0"}, twinCfg, opts...)
}

// newRigOn is newRig with eventbus configured by ebCfg (e.g. an external mosquitto); the mapper
// client connects to the broker eventbus uses.
func newRigOn(t testing.TB, ebCfg, twinCfg map[string]any, opts ...sdktest.Option) *rig {
	t.Helper()
	var eb *eventbus.Module
	ebInfo := eventbus.Info
	ebInfo.New = func() sdk.Module { eb = eventbus.New(); return eb }
	cfg := map[string]any{"resyncOnStart": false}
	for k, v := range twinCfg {
		cfg[k] = v
	}
	h := sdktest.Run(t, devicetwin.Info, cfg, append([]sdktest.Option{
		sdktest.Beside(ebInfo, ebCfg),
		sdktest.Capture("metamanager")}, opts...)...)
	waitFor(t, 10*time.Second, "eventbus connected", func() error { return h.Healthy() })
	r := &rig{h: h, broker: eb.BrokerAddr()}
	if u, ok := ebCfg["externalURL"].(string); ok {
		r.broker = strings.TrimPrefix(u, "tcp://")
	}
	r.mapper = newClient(t, r.broker, "mapper")
	r.mapper.subscribe(t, "$hw/events/#")
	r.mapper.subscribe(t, "$ke/events/#")
	return r
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, d, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// send gives devicetwin a change from the cloud, as metamanager passes it on after storing it.
func (r *rig) send(t testing.TB, op, resource, rv string, content any) {
	t.Helper()
	m := message.New("metamanager", "resource", op, resource)
	m.Header.ResourceVersion = rv
	m, err := m.WithContent(content)
	if err != nil {
		t.Fatal(err)
	}
	m.Route.Source = "edgehub" // as metamanager forwards the cloud's message
	if err := r.h.Send(m); err != nil {
		t.Fatal(err)
	}
}

const thermoModel = `{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"DeviceModel","metadata":{"name":"thermo","namespace":"default","resourceVersion":"1"},
 "spec":{"protocol":"virtual","properties":[
  {"name":"temperature","type":"FLOAT","accessMode":"ReadOnly","minimum":"-40","maximum":"125"},
  {"name":"target","type":"INT","accessMode":"ReadWrite","minimum":"0","maximum":"100"},
  {"name":"enabled","type":"BOOLEAN","accessMode":"ReadWrite"},
  {"name":"label","type":"STRING","accessMode":"ReadWrite"}]}}`

func thermoDevice(name, desiredTarget, rv string) string {
	return fmt.Sprintf(`{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{"name":%q,"namespace":"default","resourceVersion":%q},
 "spec":{"deviceModelRef":{"name":"thermo"},"nodeName":%q,"protocol":{"protocolName":"virtual"},
  "properties":[{"name":"temperature","reportToCloud":true},{"name":"target","desired":{"value":%q}}]}}`, name, rv, sdktest.NodeName, desiredTarget)
}

// addThermo sends the model and a device with target desired = desiredTarget.
func (r *rig) addThermo(t testing.TB, name, desiredTarget string) {
	t.Helper()
	r.send(t, message.OpInsert, "default/devicemodel/thermo", "1", json.RawMessage(thermoModel))
	r.send(t, message.OpInsert, "default/device/"+name, "2", json.RawMessage(thermoDevice(name, desiredTarget, "2")))
}

// client is a test MQTT client (a mapper or an application).
type client struct {
	c    mqtt.Client
	mu   sync.Mutex
	msgs []mqtt.Message
	seen []string // the topic of every message received (await does not remove from it)
	cond *sync.Cond
}

func newClient(t testing.TB, addr, id string) *client {
	t.Helper()
	c := &client{}
	c.cond = sync.NewCond(&c.mu)
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(true).SetOrderMatters(false)
	c.c = mqtt.NewClient(opts)
	if tok := c.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", addr, tok.Error())
	}
	t.Cleanup(func() { c.c.Disconnect(50) })
	return c
}

func (c *client) subscribe(t testing.TB, filter string) {
	t.Helper()
	tok := c.c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
		c.mu.Lock()
		c.msgs = append(c.msgs, m)
		c.seen = append(c.seen, m.Topic())
		c.mu.Unlock()
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
}

func (c *client) publish(t testing.TB, topic, payload string) {
	t.Helper()
	tok := c.c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// await returns the first message received on topic whose payload contains want (and removes it).
func (c *client) await(t testing.TB, topic, want string) map[string]any {
	t.Helper()
	var found map[string]any
	waitFor(t, 10*time.Second, fmt.Sprintf("a message on %s containing %s", topic, want), func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, m := range c.msgs {
			if m.Topic() == topic && strings.Contains(string(m.Payload()), want) {
				if err := json.Unmarshal(m.Payload(), &found); err != nil {
					return fmt.Errorf("payload %s: %v", m.Payload(), err)
				}
				c.msgs = append(c.msgs[:i], c.msgs[i+1:]...)
				return nil
			}
		}
		return fmt.Errorf("%d other messages", len(c.msgs))
	})
	return found
}

// count is how many messages arrived on topic so far.
func (c *client) count(topic string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, m := range c.msgs {
		if m.Topic() == topic {
			n++
		}
	}
	return n
}

// path reads a nested value from decoded JSON: path("twin", "temperature", "actual", "value").
func path(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func metricValue(t testing.TB, h *sdktest.Harness, name string) float64 {
	t.Helper()
	fams, err := h.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				if m.Counter != nil {
					sum += m.Counter.GetValue()
				}
			}
		}
	}
	return sum
}

// countWith is how many messages arrived on topic whose payload contains want.
func (c *client) countWith(topic, want string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, m := range c.msgs {
		if m.Topic() == topic && strings.Contains(string(m.Payload()), want) {
			n++
		}
	}
	return n
}
