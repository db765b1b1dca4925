package eventbus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/eventbus"
	"github.com/kedge-io/kedge/sdk/message"
)

func mosquittoPub(t *testing.T, mq *mosquitto, topic, payload string, qos int) {
	t.Helper()
	out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", strconv.Itoa(mq.port), "-q", strconv.Itoa(qos),
		"-t", topic, "-m", payload).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub %s: %v\n%s", topic, err, out)
	}
}

// mosquittoSubOne runs mosquitto_sub for one message on topic while send is repeated (the sub may
// not be subscribed yet when the first copy goes out); it returns "<topic> <payload>".
func mosquittoSubOne(t *testing.T, port int, topic string, send func()) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "mosquitto_sub", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-t", topic, "-C", "1", "-v", "-q", "1")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("mosquitto_sub: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("mosquitto_sub %s: %v\n%s", topic, err, out.String())
			}
			return strings.TrimSpace(out.String())
		case <-tick.C:
			send()
		}
	}
}

func TestExternalMosquittoBridgesBothWays(t *testing.T) {
	mq := startMosquitto(t)
	h, _ := runEventbus(t, map[string]any{"mqttMode": "external", "externalURL": "tcp://" + mq.addr()}, sdktest.Capture("devicetwin"))

	t.Run("mosquitto_pub reaches devicetwin", func(t *testing.T) {
		mosquittoPub(t, mq, "$hw/events/device/d1/twin/update", `{"event_id":"m1","twin":{}}`, 1)
		m := h.Captured("devicetwin").Next(t, 10*time.Second)
		if m.Route.Resource != "$hw/events/device/d1/twin/update" || string(m.Content) != `{"event_id":"m1","twin":{}}` {
			t.Fatalf("devicetwin got %s %s", m.Route.Resource, m.Content)
		}
	})
	t.Run("a router publish reaches mosquitto_sub", func(t *testing.T) {
		topic := "$hw/events/device/d1/twin/update/delta"
		got := mosquittoSubOne(t, mq.port, topic, func() {
			m := message.New("devicetwin", "twin", message.OpPublish, topic)
			m.Content = json.RawMessage(`{"delta":{"t":"1"}}`)
			if err := h.Send(m); err != nil {
				t.Error(err)
			}
		})
		if got != topic+` {"delta":{"t":"1"}}` {
			t.Fatalf("mosquitto_sub printed %q", got)
		}
	})
}

func TestReconnectsAndResubscribesAfterTheBrokerRestarts(t *testing.T) {
	mq := startMosquitto(t)
	h, _ := runEventbus(t, map[string]any{"mqttMode": "external", "externalURL": "tcp://" + mq.addr(),
		"maxReconnectInterval": "200ms"}, sdktest.Capture("devicetwin"))
	mq.stop()
	waitFor(t, 10*time.Second, "eventbus notices the broker is gone", func() error {
		if h.Healthy() == nil {
			return fmt.Errorf("still healthy")
		}
		return nil
	})
	mq.start()
	waitFor(t, 15*time.Second, "eventbus connected and subscribed again", func() error { return h.Healthy() })
	mosquittoPub(t, mq, "$hw/events/device/d1/state/update", `{"state":"online"}`, 1)
	m := h.Captured("devicetwin").Next(t, 10*time.Second)
	if m.Route.Resource != "$hw/events/device/d1/state/update" {
		t.Fatalf("devicetwin got %s", m.Route.Resource)
	}
	if n := metricValue(t, h, "kedge_eventbus_reconnects_total", "external"); n < 1 {
		t.Fatalf("reconnects_total{external} = %v, want >= 1", n)
	}
}

func TestBothModeServesTheEmbeddedBrokerAndMosquitto(t *testing.T) {
	mq := startMosquitto(t)
	h, eb := runEventbus(t, map[string]any{"mqttMode": "both", "internalAddress": "127.0.0.1:0",
		"externalURL": "tcp://" + mq.addr()}, sdktest.Capture("devicetwin"))

	mosquittoPub(t, mq, "$hw/events/device/ext/twin/get", `{"event_id":"a"}`, 1)
	if m := h.Captured("devicetwin").Next(t, 10*time.Second); m.Route.Resource != "$hw/events/device/ext/twin/get" {
		t.Fatalf("from mosquitto: devicetwin got %s", m.Route.Resource)
	}
	local := newPaho(t, eb.BrokerAddr(), "local-mapper")
	local.publish(t, "$hw/events/device/int/twin/get", 1, `{"event_id":"b"}`)
	if m := h.Captured("devicetwin").Next(t, 10*time.Second); m.Route.Resource != "$hw/events/device/int/twin/get" {
		t.Fatalf("from the embedded broker: devicetwin got %s", m.Route.Resource)
	}

	// A router publish goes to both brokers.
	local.subscribe(t, "$hw/events/node/+/membership/updated", 1)
	topic := "$hw/events/node/n1/membership/updated"
	send := func() {
		m := message.New("devicetwin", "twin", message.OpPublish, topic)
		m.Content = json.RawMessage(`{"added_devices":[]}`)
		if err := h.Send(m); err != nil {
			t.Error(err)
		}
	}
	if got := mosquittoSubOne(t, mq.port, topic, send); got != topic+` {"added_devices":[]}` {
		t.Fatalf("mosquitto_sub printed %q", got)
	}
	if m := local.next(t, 10*time.Second); m.Topic() != topic {
		t.Fatalf("embedded broker subscriber got %s", m.Topic())
	}
	_ = eventbus.ModeBoth
}
