package devicetwin_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

type upCondition struct {
	Type, Status, Reason, Message string
}

// nextCondition reads what devicetwin sends upstream until a devicestatus carries a condition, and
// returns it.
func nextCondition(t *testing.T, r *rig) upCondition {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		m := r.h.Captured("metamanager").Next(t, time.Until(deadline))
		var st struct {
			Condition *upCondition `json:"condition"`
		}
		if err := json.Unmarshal(m.Content, &st); err != nil {
			t.Fatalf("upstream %s: %v", m.Content, err)
		}
		if st.Condition != nil {
			if m.Route.Resource != "default/devicestatus/thermo-1" {
				t.Fatalf("condition sent for %s", m.Route.Resource)
			}
			return *st.Condition
		}
	}
	t.Fatal("no condition upstream within 20s")
	return upCondition{}
}

func TestRefusedReadingsAndOfflineStateGoUpstreamAsHealthyFalseAndAGoodReadingClearsIt(t *testing.T) {
	r := newRig(t, map[string]any{"flushInterval": "20ms"})
	r.addThermo(t, "thermo-1", "")
	state := "$hw/events/device/thermo-1/state/update"
	steps := []struct {
		name, topic, payload      string
		status, reason, wantInMsg string
	}{
		{"the first accepted reading says healthy", upd, `{"event_id":"a","twin":{"temperature":{"actual":{"value":"21.5"}}}}`,
			"True", "ReadingsAccepted", ""},
		{"a reading above the model's maximum", upd, `{"event_id":"b","twin":{"temperature":{"actual":{"value":"1102970880"}}}}`,
			"False", "ReadingRefused", `edgecore refused readings: property "temperature": 1102970880 is above the maximum 125`},
		{"a reading of the wrong type", upd, `{"event_id":"c","twin":{"target":{"actual":{"value":"warm"}}}}`,
			"False", "ReadingRefused", `edgecore refused readings: property "target" is INT: "warm" is not an integer; property "temperature": 1102970880`},
		{"good readings of both clear it", upd, `{"event_id":"d","twin":{"temperature":{"actual":{"value":"23.75"}},"target":{"actual":{"value":"7"}}}}`,
			"True", "ReadingsAccepted", ""},
		{"the mapper reports the device offline", state, `{"event_id":"e","state":"offline"}`,
			"False", "DeviceOffline", "the mapper reports the device offline"},
		{"online again", state, `{"event_id":"f","state":"online"}`,
			"True", "ReadingsAccepted", ""},
	}
	for _, s := range steps {
		r.mapper.publish(t, s.topic, s.payload)
		c := nextCondition(t, r)
		if c.Type != "Healthy" || c.Status != s.status || c.Reason != s.reason || !strings.Contains(c.Message, s.wantInMsg) {
			t.Fatalf("%s: condition %+v; want Healthy %s %s with %q in the message", s.name, c, s.status, s.reason, s.wantInMsg)
		}
	}
	// An unchanged condition is not sent again.
	r.mapper.publish(t, upd, `{"event_id":"g","twin":{"temperature":{"actual":{"value":"24"}}}}`)
	r.mapper.await(t, result, `"g"`)
	if got := metricValue(t, r.h, "kedge_devicetwin_refused_total"); got != 2 {
		t.Fatalf("kedge_devicetwin_refused_total = %v, want 2", got)
	}
	if err := r.h.Stop(); err != nil {
		t.Fatal(err)
	}
	for r.h.Captured("metamanager").Len() > 0 {
		if m := r.h.Captured("metamanager").Next(t, time.Second); strings.Contains(string(m.Content), `"condition"`) {
			t.Fatalf("an unchanged condition was sent again: %s", m.Content)
		}
	}
}
