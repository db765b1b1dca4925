package eventbus_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/eventbus"
	"github.com/kedge-io/kedge/sdk/message"
)

func internalCfg(extra map[string]any) map[string]any {
	cfg := map[string]any{"internalAddress": "127.0.0.1:0"}
	for k, v := range extra {
		cfg[k] = v
	}
	return cfg
}

func TestMQTTMessagesReachTheirModuleWithJSONOrMarkedRaw(t *testing.T) {
	h, eb := runEventbus(t, internalCfg(map[string]any{"forwardUserTopics": true}), sdktest.Capture("devicetwin"))
	hub := groupMailbox(t, h, "fakehub", "hub")
	dev := newPaho(t, eb.BrokerAddr(), "mapper")

	cases := []struct {
		name, topic, payload  string
		toHub                 bool
		wantContent, wantType string
	}{
		{"a twin update in JSON goes to devicetwin unchanged", "$hw/events/device/d1/twin/update", `{"event_id":"1"}`, false, `{"event_id":"1"}`, ""},
		{"a payload that is not JSON goes as a JSON string marked mqtt/raw", "$hw/events/device/d1/twin/update", `{"event_id":`, false, `"{\"event_id\":"`, eventbus.TypeRaw},
		{"data topics go to devicetwin", "$ke/events/device/d1/data/update", `{"data":{}}`, false, `{"data":{}}`, ""},
		{"a user topic goes to the hub group when forwarding is on", "app1/user/temp", `21.5`, true, `21.5`, ""},
		{"a user topic with plain text goes raw to the hub", "app1/user/note", `hello there`, true, `"hello there"`, eventbus.TypeRaw},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok := dev.c.Publish(c.topic, 1, false, c.payload)
			var m = func() (msgContent string, typ, res, op, src string) {
				if c.toHub {
					x := receive(t, hub, 5*time.Second)
					return string(x.Content), x.Header.Type, x.Route.Resource, x.Route.Operation, x.Route.Source
				}
				x := h.Captured("devicetwin").Next(t, 5*time.Second)
				if x.Header.Sync { // a QoS 1 twin update waits for devicetwin's answer before its PUBACK
					answer(t, h, x)
				}
				return string(x.Content), x.Header.Type, x.Route.Resource, x.Route.Operation, x.Route.Source
			}
			content, typ, res, op, src := m()
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("publish %s: no PUBACK: %v", c.topic, tok.Error())
			}
			if content != c.wantContent || typ != c.wantType || res != c.topic || op != message.OpPublish || src != eventbus.Name {
				t.Fatalf("got content %s type %q resource %q op %q source %q; want %s %q %q publish eventbus",
					content, typ, res, op, src, c.wantContent, c.wantType, c.topic)
			}
		})
	}
}

func TestUserTopicsAreNotForwardedWhenForwardingIsOff(t *testing.T) {
	h, eb := runEventbus(t, internalCfg(nil), sdktest.Capture("devicetwin"))
	hub := groupMailbox(t, h, "fakehub", "hub")
	dev := newPaho(t, eb.BrokerAddr(), "app")
	dev.publish(t, "app1/user/x", 1, `1`)
	dev.publish(t, "$hw/events/device/d1/state/update", 1, `{"state":"online"}`) // a marker after it
	m := h.Captured("devicetwin").Next(t, 5*time.Second)
	if m.Route.Resource != "$hw/events/device/d1/state/update" {
		t.Fatalf("devicetwin got %s", m.Route.Resource)
	}
	if hub.Len() != 0 {
		t.Fatalf("the hub got %d messages; forwarding is off", hub.Len())
	}
	waitFor(t, 5*time.Second, "no_route counted", func() error {
		if v := metricValue(t, h, "kedge_eventbus_dropped_total", "no_route"); v != 1 {
			return fmt.Errorf("dropped{no_route} = %v", v)
		}
		return nil
	})
}

func TestRouterMessagesArePublishedWithTheContractQoS(t *testing.T) {
	h, eb := runEventbus(t, internalCfg(nil))
	sub := newPaho(t, eb.BrokerAddr(), "watcher")
	sub.subscribe(t, "app/#", 2)
	sub.subscribe(t, "$hw/#", 2)
	cases := []struct {
		name, topic, typ, content string
		wantPayload               string
		wantQoS                   byte
	}{
		{"twin results go at QoS 1", "$hw/events/device/d1/twin/update/result", "", `{"event_id":"e"}`, `{"event_id":"e"}`, 1},
		{"membership results go at QoS 1", "$hw/events/node/n1/membership/get/result", "", `{"devices":[]}`, `{"devices":[]}`, 1},
		{"other topics go at QoS 0", "app/user/out", "", `{"a":1}`, `{"a":1}`, 0},
		{"the header type can raise the QoS", "app/user/important", "mqtt/json;qos=1", `{"a":2}`, `{"a":2}`, 1},
		{"raw content is published as its text", "app/user/text", eventbus.TypeRaw, `"plain text"`, `plain text`, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := message.New(sdktest.Source, "bus", message.OpPublish, c.topic)
			m.Header.Type = c.typ
			m.Content = json.RawMessage(c.content)
			if err := h.Send(m); err != nil {
				t.Fatal(err)
			}
			got := sub.next(t, 5*time.Second)
			if got.Topic() != c.topic || string(got.Payload()) != c.wantPayload || got.Qos() != c.wantQoS {
				t.Fatalf("got %s %q qos %d; want %s %q qos %d", got.Topic(), got.Payload(), got.Qos(), c.topic, c.wantPayload, c.wantQoS)
			}
		})
	}
}

func TestBadPublishRequestsAreRefusedWithAClearError(t *testing.T) {
	h, _ := runEventbus(t, internalCfg(nil))
	cases := []struct {
		name, op, topic, typ, content, wantErr string
	}{
		{"a wildcard topic", message.OpPublish, "a/+/b", "", `{}`, "wildcard"},
		{"an empty topic", message.OpPublish, "", "", `{}`, "non-empty"},
		{"another operation", message.OpUpdate, "a/b", "", `{}`, "only handles"},
		{"raw content that is not a string", message.OpPublish, "a/b", eventbus.TypeRaw, `{"x":1}`, "JSON string"},
		{"an unknown header type", message.OpPublish, "a/b", "mqtt/xml", `{}`, "mqtt/xml"},
		{"a bad QoS", message.OpPublish, "a/b", "mqtt/json;qos=3", `{}`, "qos must be"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := message.New(sdktest.Source, "bus", c.op, c.topic)
			m.Header.Type = c.typ
			m.Content = json.RawMessage(c.content)
			m.Header.Sync = true
			r, err := h.SendSync(m, 5*time.Second)
			if err == nil && r.Route.Operation != message.OpError {
				t.Fatalf("no error; reply %s", r.Content)
			}
			text := string(r.Content)
			if err != nil {
				text = err.Error()
			}
			if !strings.Contains(text, c.wantErr) {
				t.Fatalf("error %q does not mention %q", text, c.wantErr)
			}
		})
	}
}

func TestItsOwnPublicationsAreNotFedBackToTheRouter(t *testing.T) {
	h, eb := runEventbus(t, internalCfg(nil), sdktest.Capture("devicetwin"))
	m := message.New("devicetwin", "twin", message.OpPublish, "$hw/events/device/d1/twin/update/result")
	m.Content = json.RawMessage(`{"event_id":"x"}`)
	if err := h.Send(m); err != nil {
		t.Fatal(err)
	}
	dev := newPaho(t, eb.BrokerAddr(), "mapper")
	dev.publish(t, "$hw/events/device/d1/twin/get", 1, `{"event_id":"marker"}`)
	got := h.Captured("devicetwin").Next(t, 5*time.Second)
	if got.Route.Resource != "$hw/events/device/d1/twin/get" {
		t.Fatalf("devicetwin got its own result back: %s %s", got.Route.Resource, got.Content)
	}
}

func TestSettingsAreChecked(t *testing.T) {
	cases := []struct {
		name string
		set  func(m *eventbus.Module)
	}{
		{"an unknown mode", func(m *eventbus.Module) { m.MQTTMode = "bridge" }},
		{"a bad external URL", func(m *eventbus.Module) { m.MQTTMode = eventbus.ModeExternal; m.ExternalURL = "http://x" }},
		{"a broken topic filter", func(m *eventbus.Module) { m.Topics = []string{"a/#/b"} }},
		{"no topics", func(m *eventbus.Module) { m.Topics = nil }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := eventbus.New()
			c.set(m)
			if err := m.Start(t.Context(), nil); err == nil {
				t.Fatal("Start accepted it")
			}
		})
	}
}

func TestMatchTopic(t *testing.T) {
	cases := []struct {
		filter, topic string
		want          bool
	}{
		{"$hw/events/#", "$hw/events/device/d/twin/update", true},
		{"+/user/#", "app/user/a/b", true},
		{"+/user/#", "$hw/user/x", false},
		{"#", "$SYS/x", false},
		{"a/+/c", "a/b/c", true},
		{"a/+/c", "a/b/d", false},
		{"a/#", "a", true},
		{"a/b", "a/b/c", false},
	}
	for _, c := range cases {
		if got := eventbus.MatchTopic(c.filter, c.topic); got != c.want {
			t.Errorf("MatchTopic(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}
