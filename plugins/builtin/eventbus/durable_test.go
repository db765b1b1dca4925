package eventbus_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/sdk"
)

// The embedded broker holds a QoS 1 twin update's PUBACK until devicetwin (here a captured mailbox
// standing in for it) answers the sync message; answers coming in any order release the PUBACKs in
// publish order, and the update then reaches the other subscribers.
func TestQoS1TwinUpdateIsAcknowledgedOnlyAfterDevicetwinAnswersInPublishOrder(t *testing.T) {
	h, eb := runEventbus(t, internalCfg(nil), sdktest.Capture("devicetwin"))
	watcher := newPaho(t, eb.BrokerAddr(), "watcher")
	watcher.subscribe(t, "$hw/events/device/+/twin/update", 1)
	dev := newPaho(t, eb.BrokerAddr(), "mapper")

	const n = 5
	toks := make([]mqtt.Token, n)
	got := make([]sdk.Message, n)
	for i := range n {
		toks[i] = dev.c.Publish("$hw/events/device/d1/twin/update", 1, false, fmt.Sprintf(`{"event_id":"e%d"}`, i))
	}
	for i := range n {
		got[i] = h.Captured("devicetwin").Next(t, 10*time.Second)
		if !got[i].Header.Sync || string(got[i].Content) != fmt.Sprintf(`{"event_id":"e%d"}`, i) {
			t.Fatalf("devicetwin got %s sync=%v as update %d; want e%d as a sync message, in publish order", got[i].Content, got[i].Header.Sync, i, i)
		}
	}
	// Answer all but the first: no PUBACK may come, the first is still not stored.
	for i := n - 1; i >= 1; i-- {
		answer(t, h, got[i])
	}
	waitFor(t, 10*time.Second, "the answers taken", func() error {
		if v := metricValue(t, h, "kedge_eventbus_routed_total", "twin"); v != n {
			return fmt.Errorf("routed %v", v)
		}
		return nil
	})
	for i, tok := range toks {
		if tok.WaitTimeout(300 * time.Millisecond) {
			t.Fatalf("update %d acknowledged before update 0 was stored", i)
		}
	}
	if m := watcher.tryNext(); m != nil {
		t.Fatalf("a subscriber got %s before the update was stored", m.Payload())
	}
	answer(t, h, got[0])
	for i, tok := range toks {
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("update %d: no PUBACK after it was stored: %v", i, tok.Error())
		}
	}
	for i := range n {
		m := watcher.next(t, 10*time.Second)
		if string(m.Payload()) != fmt.Sprintf(`{"event_id":"e%d"}`, i) {
			t.Fatalf("subscriber got %s as message %d", m.Payload(), i)
		}
	}
	if v := metricValue(t, h, "kedge_eventbus_twin_acks_total", "acknowledged"); v != n {
		t.Fatalf("twin_acks_total{acknowledged} = %v, want %d", v, n)
	}
	if h.Captured("devicetwin").Len() != 0 {
		t.Fatalf("devicetwin got %d more messages: the broker's copy to eventbus's own subscription must not be routed again", h.Captured("devicetwin").Len())
	}
}

// An update devicetwin could not store (error answer), or does not confirm within ackTimeout, gets
// no PUBACK: the broker closes the publisher's connection so it publishes again.
func TestTwinUpdateNotStoredOrNotConfirmedClosesTheConnectionWithoutPUBACK(t *testing.T) {
	cases := []struct {
		name    string
		respond func(t *testing.T, h *sdktest.Harness, m sdk.Message)
		outcome string
	}{
		{"devicetwin answers with an error", func(t *testing.T, h *sdktest.Harness, m sdk.Message) {
			if err := h.Reply(m.ErrorReply("devicetwin", errors.New("disk I/O error"))); err != nil {
				t.Fatal(err)
			}
		}, "not_stored"},
		{"devicetwin does not answer within ackTimeout", func(*testing.T, *sdktest.Harness, sdk.Message) {}, "timeout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, eb := runEventbus(t, internalCfg(map[string]any{"ackTimeout": "500ms"}), sdktest.Capture("devicetwin"))
			lost := make(chan error, 1)
			opts := mqtt.NewClientOptions().AddBroker("tcp://" + eb.BrokerAddr()).SetClientID("mapper").
				SetAutoReconnect(false).SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err })
			cl := mqtt.NewClient(opts)
			if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatal(tok.Error())
			}
			t.Cleanup(func() { cl.Disconnect(0) })
			tok := cl.Publish("$hw/events/device/d1/twin/update", 1, false, `{"event_id":"x"}`)
			c.respond(t, h, h.Captured("devicetwin").Next(t, 10*time.Second))
			select {
			case <-lost:
			case <-time.After(20 * time.Second):
				t.Fatal("the connection stayed open")
			}
			if tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
				t.Fatal("the update was acknowledged")
			}
			waitFor(t, 10*time.Second, "outcome counted", func() error {
				if v := metricValue(t, h, "kedge_eventbus_twin_acks_total", c.outcome); v != 1 {
					return fmt.Errorf("twin_acks_total{%s} = %v", c.outcome, v)
				}
				return nil
			})
		})
	}
}

// A QoS 0 twin update is handed to devicetwin once (by the broker's hook, not again through
// eventbus's own subscription) and needs no answer.
func TestQoS0TwinUpdateReachesDevicetwinOnceWithoutWaiting(t *testing.T) {
	h, eb := runEventbus(t, internalCfg(nil), sdktest.Capture("devicetwin"))
	dev := newPaho(t, eb.BrokerAddr(), "mapper")
	dev.publish(t, "$hw/events/device/d1/twin/update", 0, `{"event_id":"q0"}`)
	dev.publish(t, "$hw/events/device/d1/state/update", 1, `{"state":"online"}`) // a marker after it
	first := h.Captured("devicetwin").Next(t, 10*time.Second)
	if first.Route.Resource != "$hw/events/device/d1/twin/update" || first.Header.Sync {
		t.Fatalf("devicetwin got %s sync=%v first; want the QoS 0 twin update, not sync", first.Route.Resource, first.Header.Sync)
	}
	if m := h.Captured("devicetwin").Next(t, 10*time.Second); m.Route.Resource != "$hw/events/device/d1/state/update" {
		t.Fatalf("devicetwin got %s %s second; want the marker (the twin update only once)", m.Route.Resource, m.Content)
	}
}

// tryNext returns a message already received, or nil.
func (p *pahoClient) tryNext() mqtt.Message {
	select {
	case m := <-p.msgs:
		return m
	default:
		return nil
	}
}

// QoS 2 works the same way: the PUBREC (and so the whole exchange) waits for devicetwin's answer.
func TestQoS2TwinUpdateCompletesOnlyAfterDevicetwinAnswers(t *testing.T) {
	h, eb := runEventbus(t, internalCfg(nil), sdktest.Capture("devicetwin"))
	dev := newPaho(t, eb.BrokerAddr(), "mapper")
	tok := dev.c.Publish("$hw/events/device/d1/twin/update", 2, false, `{"event_id":"q2"}`)
	m := h.Captured("devicetwin").Next(t, 10*time.Second)
	if !m.Header.Sync {
		t.Fatal("a QoS 2 twin update must reach devicetwin as a sync message")
	}
	if tok.WaitTimeout(300 * time.Millisecond) {
		t.Fatal("the QoS 2 exchange completed before devicetwin answered")
	}
	answer(t, h, m)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("no completion after the answer: %v", tok.Error())
	}
}
