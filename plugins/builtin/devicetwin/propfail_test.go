package devicetwin_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/sdk/message"
)

// nextTwinReported reads upstream devicestatus reports until one carries prop's reported value and
// returns its metadata and value.
func nextTwinReported(t *testing.T, r *rig, prop string) (string, map[string]string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		m := r.h.Captured("metamanager").Next(t, time.Until(deadline))
		var st struct {
			Twins []struct {
				PropertyName string `json:"propertyName"`
				Reported     *struct {
					Value    string            `json:"value"`
					Metadata map[string]string `json:"metadata"`
				} `json:"reported"`
			} `json:"twins"`
		}
		if err := json.Unmarshal(m.Content, &st); err != nil {
			t.Fatalf("upstream %s: %v", m.Content, err)
		}
		for _, tw := range st.Twins {
			if tw.PropertyName == prop && tw.Reported != nil {
				return tw.Reported.Value, tw.Reported.Metadata
			}
		}
	}
	t.Fatalf("no reported %s upstream within 20s", prop)
	return "", nil
}

// A mapper's per-property errors (state/update property_errors, what Kedge's DMI fills from the
// kedge-property-errors metadata) make the Healthy condition False with ReadFailed / WriteRefused
// while the device stays online, put the read error on that twin's reported metadata next to its
// last value, and clear when the mapper says none fails.
func TestPropertyErrorsFromTheMapperShowAsConditionAndPerTwinErrorWhileTheDeviceStaysOnline(t *testing.T) {
	r := newRig(t, map[string]any{"flushInterval": "20ms"})
	r.addThermo(t, "thermo-1", "")
	state := "$hw/events/device/thermo-1/state/update"
	r.mapper.publish(t, upd, `{"event_id":"a","twin":{"temperature":{"actual":{"value":"21.5","metadata":{"timestamp":1700000000000}}}}}`)
	if c := nextCondition(t, r); c.Status != "True" {
		t.Fatalf("first reading: %+v", c)
	}
	r.mapper.publish(t, state, `{"event_id":"b","state":"online","property_errors":{"temperature":{"read":"illegal data address"}}}`)
	c := nextCondition(t, r)
	if c.Status != "False" || c.Reason != "ReadFailed" || !strings.Contains(c.Message, `property "temperature": illegal data address`) {
		t.Fatalf("a failing read: condition %+v; want False ReadFailed naming the property and the error", c)
	}
	// nextCondition consumed the report that carried the twin too; the twin error is in a report
	// of that flush or the next: publish again to see one.
	r.mapper.publish(t, state, `{"event_id":"c","state":"online","property_errors":{"temperature":{"read":"timeout"}}}`)
	v, md := nextTwinReported(t, r, "temperature")
	if v != "21.5" || md["error"] != "timeout" || md["timestamp"] != "1700000000000" {
		t.Fatalf("per-twin error: reported %q %v; want the last value 21.5 (its timestamp) with error timeout", v, md)
	}
	// A reading taken before the failure and reported after it (the mapper's report cycle) keeps
	// the error on the twin.
	r.mapper.publish(t, upd, `{"event_id":"c2","twin":{"temperature":{"actual":{"value":"21.7","metadata":{"timestamp":1700000000500}}}}}`)
	if v, md = nextTwinReported(t, r, "temperature"); v != "21.7" || md["error"] != "timeout" {
		t.Fatalf("a late reading of a failing property: reported %q %v; want 21.7 with the error kept", v, md)
	}
	r.mapper.publish(t, state, `{"event_id":"d","state":"online","property_errors":{"temperature":{"read":"timeout"},"target":{"write":"desired value \"7\" not written: property is read-only"}}}`)
	c = nextCondition(t, r)
	if c.Status != "False" || c.Reason != "WriteRefused" || !strings.Contains(c.Message, `property "target": desired value "7" not written`) {
		t.Fatalf("a write the mapper refused: condition %+v", c)
	}
	r.mapper.publish(t, state, `{"event_id":"e","state":"online","property_errors":{}}`)
	m := r.h.Captured("metamanager").Next(t, 20*time.Second)
	var st struct {
		Condition *upCondition `json:"condition"`
		Twins     []struct {
			PropertyName string `json:"propertyName"`
			Reported     *struct {
				Value    string            `json:"value"`
				Metadata map[string]string `json:"metadata"`
			} `json:"reported"`
		} `json:"twins"`
	}
	if err := json.Unmarshal(m.Content, &st); err != nil {
		t.Fatal(err)
	}
	if st.Condition == nil || st.Condition.Status != "True" || len(st.Twins) != 1 || st.Twins[0].Reported == nil ||
		st.Twins[0].Reported.Value != "21.7" || st.Twins[0].Reported.Metadata["error"] != "" {
		t.Fatalf("no property fails any more: upstream %s; want Healthy True and temperature's last value without an error", m.Content)
	}
	r.mapper.publish(t, state, `{"event_id":"f","state":"offline","property_errors":{"temperature":{"read":"connection refused"}}}`)
	if c = nextCondition(t, r); c.Reason != "DeviceOffline" || !strings.Contains(c.Message, "connection refused") {
		t.Fatalf("offline with failing reads: condition %+v; want DeviceOffline first, the read error in the message", c)
	}
}

// A desired value from the cloud that devicetwin refuses (out of the model's range, not of its
// type) turns Healthy False with WriteRefused naming the property; an acceptable one clears it.
func TestDesiredValueRefusedByDevicetwinIsAWriteRefusedConditionUntilAGoodOneArrives(t *testing.T) {
	r := newRig(t, map[string]any{"flushInterval": "20ms"})
	r.addThermo(t, "thermo-1", "50")
	r.send(t, message.OpUpdate, "default/device/thermo-1", "3", json.RawMessage(thermoDevice("thermo-1", "500", "3")))
	c := nextCondition(t, r)
	if c.Status != "False" || c.Reason != "WriteRefused" || !strings.Contains(c.Message, `property "target": 500 is above the maximum 100`) {
		t.Fatalf("desired 500 for target (max 100): condition %+v", c)
	}
	r.send(t, message.OpUpdate, "default/device/thermo-1", "4", json.RawMessage(thermoDevice("thermo-1", "warm", "4")))
	c = nextCondition(t, r)
	if c.Reason != "WriteRefused" || !strings.Contains(c.Message, `"warm" is not an integer`) || strings.Contains(c.Message, "500") {
		t.Fatalf("desired warm for an INT: condition %+v; want the latest refusal only", c)
	}
	r.send(t, message.OpUpdate, "default/device/thermo-1", "5", json.RawMessage(thermoDevice("thermo-1", "60", "5")))
	if c = nextCondition(t, r); c.Status != "True" {
		t.Fatalf("an acceptable desired value: condition %+v; want True", c)
	}
}
