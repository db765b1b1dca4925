package devicetwin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

const (
	upd    = "$hw/events/device/thermo-1/twin/update"
	result = upd + "/result"
	doc    = upd + "/document"
	delta  = upd + "/delta"
)

func storedTwin(t *testing.T, r *rig, prop string) (map[string]any, bool) {
	t.Helper()
	o, err := r.h.Store().Get(context.Background(), sdk.Key{Type: "twin", Namespace: "default", Name: "thermo-1/" + prop})
	if errors.Is(err, sdk.ErrNotFound) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(o.Value, &v); err != nil {
		t.Fatal(err)
	}
	return v, true
}

func TestAReportedValueIsStoredAndAnsweredOnResultAndDocument(t *testing.T) {
	r := newRig(t, nil)
	r.addThermo(t, "thermo-1", "20")
	r.mapper.publish(t, upd, `{"event_id":"e1","timestamp":1700000000000,"twin":{"temperature":{"actual":{"value":"21.5","metadata":{"timestamp":1700000000000}}}}}`)

	res := r.mapper.await(t, result, `"e1"`)
	if v := path(res, "twin", "temperature", "actual", "value"); v != "21.5" {
		t.Fatalf("result twin.temperature.actual.value = %v; result %v", v, res)
	}
	if v := path(res, "twin", "temperature", "metadata", "type"); v != "float" {
		t.Fatalf("result type = %v", v)
	}
	d := r.mapper.await(t, doc, `"e1"`)
	if path(d, "twin", "temperature", "last") != nil || path(d, "twin", "temperature", "current", "actual", "value") != "21.5" {
		t.Fatalf("document %v: want last null, current actual 21.5", d)
	}
	tw, ok := storedTwin(t, r, "temperature")
	if !ok || path(tw, "actual", "value") != "21.5" {
		t.Fatalf("stored twin %v", tw)
	}
	// A bare JSON number is taken as its text too.
	r.mapper.publish(t, upd, `{"event_id":"e2","twin":{"temperature":{"actual":{"value":22}}}}`)
	if v := path(r.mapper.await(t, result, `"e2"`), "twin", "temperature", "actual", "value"); v != "22" {
		t.Fatalf("bare number: value %v", v)
	}
}

func TestADesiredValueFromTheCloudIsPublishedAsDeltaForTheMapper(t *testing.T) {
	r := newRig(t, nil)
	r.addThermo(t, "thermo-1", "20")
	dl := r.mapper.await(t, delta, `"target"`)
	if v := path(dl, "delta", "target"); v != "20" {
		t.Fatalf("delta.target = %v; delta %v", v, dl)
	}
	if v := path(dl, "twin", "target", "expected", "value"); v != "20" {
		t.Fatalf("delta twin.target.expected.value = %v", v)
	}
	tw, ok := storedTwin(t, r, "target")
	if !ok || path(tw, "expected", "value") != "20" {
		t.Fatalf("stored twin %v", tw)
	}
	// A newer Device with another desired value: a new delta; an older resourceVersion: nothing.
	r.send(t, message.OpUpdate, "default/device/thermo-1", "3", json.RawMessage(thermoDevice("thermo-1", "30", "3")))
	if v := path(r.mapper.await(t, delta, `"30"`), "delta", "target"); v != "30" {
		t.Fatalf("second delta.target = %v", v)
	}
	r.send(t, message.OpUpdate, "default/device/thermo-1", "2", json.RawMessage(thermoDevice("thermo-1", "5", "2")))
	// The mapper reaching the desired value ends the delta.
	r.mapper.publish(t, upd, `{"event_id":"reach","twin":{"target":{"actual":{"value":"30"}}}}`)
	r.mapper.await(t, result, `"reach"`)
	if tw, _ := storedTwin(t, r, "target"); path(tw, "expected", "value") != "30" {
		t.Fatalf("a stale Device (resourceVersion 2 after 3) changed the expected value: %v", tw)
	}
	// Upstream, the status carries the observed desired value.
	r.h.Stop()
	st := upstream(t, r)["default/devicestatus/thermo-1"]
	if st == nil || !strings.Contains(string(st.Content), `"observedDesired":{"value":"30"`) {
		t.Fatalf("upstream status %v does not carry observedDesired 30", st)
	}
}

// upstream reads every message devicetwin sent to metamanager, by resource (the last one wins).
func upstream(t *testing.T, r *rig) map[string]*sdk.Message {
	t.Helper()
	out := map[string]*sdk.Message{}
	for r.h.Captured("metamanager").Len() > 0 {
		m := r.h.Captured("metamanager").Next(t, time.Second)
		if m.Route.Group != "twin" || m.Route.Operation != message.OpUpdate {
			t.Fatalf("upstream message %s: want group twin, operation update", m)
		}
		out[m.Route.Resource] = &m
	}
	return out
}

func TestBadInputIsAnsweredWithAnErrorOnTheResultTopicAndNothingIsStored(t *testing.T) {
	r := newRig(t, nil)
	r.addThermo(t, "thermo-1", "")
	cases := []struct {
		name, topic, payload string
		resultTopic          string
		code                 float64
		reason               string
	}{
		{"malformed JSON", upd, `{"event_id":"x","twin":`, result, 400, "malformed JSON"},
		{"an unknown device", "$hw/events/device/nope/twin/update", `{"event_id":"b1","twin":{"temperature":{"actual":{"value":"1"}}}}`,
			"$hw/events/device/nope/twin/update/result", 404, `device "nope" is not on this node`},
		{"a value of the wrong type", upd, `{"event_id":"b2","twin":{"target":{"actual":{"value":"warm"}}}}`, result, 400, `"warm" is not an integer`},
		{"a boolean that is not one", upd, `{"event_id":"b3","twin":{"enabled":{"expected":{"value":"yes"}}}}`, result, 400, "not true or false"},
		{"a value below the minimum", upd, `{"event_id":"b4","twin":{"temperature":{"actual":{"value":"-41"}}}}`, result, 400, "below the minimum -40"},
		{"a value above the maximum", upd, `{"event_id":"b5","twin":{"target":{"expected":{"value":"101"}}}}`, result, 400, "above the maximum 100"},
		{"a write to a ReadOnly property", upd, `{"event_id":"b6","twin":{"temperature":{"expected":{"value":"20"}}}}`, result, 403, "ReadOnly"},
		{"a property the model does not have", upd, `{"event_id":"b7","twin":{"humidity":{"actual":{"value":"1"}}}}`, result, 400, `property "humidity" is not in model "thermo"`},
		{"a twin without a value", upd, `{"event_id":"b8","twin":{"label":{"actual":{}}}}`, result, 400, "value is missing"},
		{"no twin at all", upd, `{"event_id":"b9"}`, result, 400, "names no property"},
		{"one bad property spoils the whole update", upd, `{"event_id":"b10","twin":{"label":{"actual":{"value":"ok"}},"target":{"actual":{"value":"1.5"}}}}`, result, 400, "not an integer"},
		{"a state that does not exist", "$hw/events/device/thermo-1/state/update", `{"event_id":"b11","state":"sleepy"}`,
			"$hw/events/device/thermo-1/state/update/result", 400, `state "sleepy"`},
		{"membership of another node", "$hw/events/node/other/membership/get", `{"event_id":"b12"}`,
			"$hw/events/node/other/membership/get/result", 404, "this is node"},
		{"data of the wrong type", "$ke/events/device/thermo-1/data/update", `{"event_id":"b13","data":{"temperature":{"value":"hot"}}}`,
			"$ke/events/device/thermo-1/data/update/result", 400, "not a number"},
		{"a twin get for an unknown device", "$hw/events/device/ghost/twin/get", `{"event_id":"b14"}`,
			"$hw/events/device/ghost/twin/get/result", 404, "not on this node"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := metricValue(t, r.h, "kedge_devicetwin_twin_values_stored_total")
			r.mapper.publish(t, c.topic, c.payload)
			res := r.mapper.await(t, c.resultTopic, `"reason"`)
			if res["code"] != c.code || !strings.Contains(fmt.Sprint(res["reason"]), c.reason) {
				t.Fatalf("result %v: want code %v and a reason with %q", res, c.code, c.reason)
			}
			if after := metricValue(t, r.h, "kedge_devicetwin_twin_values_stored_total"); after != before {
				t.Fatalf("%v twin values stored for a bad request", after-before)
			}
		})
	}
	for _, p := range []string{"temperature", "target", "enabled", "label", "humidity"} {
		if tw, ok := storedTwin(t, r, p); ok {
			t.Errorf("twin %s stored after bad input only: %v", p, tw)
		}
	}
}

func TestAnOlderUpdateNeverOverwritesANewerOne(t *testing.T) {
	r := newRig(t, nil)
	r.addThermo(t, "thermo-1", "")
	cases := []struct {
		name, payload string
		wantErr       string // empty: applied
		wantStored    string
	}{
		{"the first value is stored", `{"event_id":"v1","twin":{"temperature":{"actual":{"value":"22","metadata":{"timestamp":2000}}}}}`, "", "22"},
		{"an older timestamp is refused", `{"event_id":"v2","twin":{"temperature":{"actual":{"value":"10","metadata":{"timestamp":1000}}}}}`, "stale actual value ignored: its timestamp 1000 is older than the stored 2000", "22"},
		{"a newer timestamp wins", `{"event_id":"v3","twin":{"temperature":{"actual":{"value":"23","metadata":{"timestamp":3000}}}}}`, "", "23"},
		{"a version is taken", `{"event_id":"v4","twin":{"temperature":{"actual":{"value":"24","metadata":{"timestamp":4000}},"actual_version":{"cloud":0,"edge":10}}}}`, "", "24"},
		{"an older version is refused", `{"event_id":"v5","twin":{"temperature":{"actual":{"value":"5","metadata":{"timestamp":5000}},"actual_version":{"cloud":0,"edge":9}}}}`, "is older than the stored {cloud 0, edge 10}", "24"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var id struct {
				EventID string `json:"event_id"`
			}
			_ = json.Unmarshal([]byte(c.payload), &id)
			r.mapper.publish(t, upd, c.payload)
			res := r.mapper.await(t, result, `"`+id.EventID+`"`)
			if c.wantErr == "" && res["reason"] != nil || c.wantErr != "" && !strings.Contains(fmt.Sprint(res["reason"]), c.wantErr) {
				t.Fatalf("result %v: want error %q", res, c.wantErr)
			}
			if c.wantErr != "" && res["code"] != float64(409) {
				t.Fatalf("code %v, want 409", res["code"])
			}
			if tw, _ := storedTwin(t, r, "temperature"); path(tw, "actual", "value") != c.wantStored {
				t.Fatalf("stored %v, want %s", path(tw, "actual", "value"), c.wantStored)
			}
		})
	}
}

func TestReportedValuesAreBatchedUpstreamLatestValueOnly(t *testing.T) {
	// A flush interval longer than the test: the only flush is the one at Stop, so every update below
	// falls inside one interval whatever the machine's speed.
	r := newRig(t, map[string]any{"flushInterval": "1h"})
	r.addThermo(t, "thermo-1", "")
	const n = 25
	for i := range n {
		r.mapper.publish(t, upd, fmt.Sprintf(`{"event_id":"n%d","twin":{"temperature":{"actual":{"value":"%d.5"}}}}`, i, i))
	}
	r.mapper.await(t, result, fmt.Sprintf(`"n%d"`, n-1))
	// "ok" is what KubeEdge's mapper framework reports for online.
	r.mapper.publish(t, "$hw/events/device/thermo-1/state/update", `{"event_id":"s","state":"ok"}`)
	r.mapper.await(t, "$hw/events/device/thermo-1/state/update/result", `"s"`)
	if got := r.h.Captured("metamanager").Len(); got != 0 {
		t.Fatalf("%d upstream messages before the flush", got)
	}
	if err := r.h.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := r.h.Captured("metamanager").Len(); got != 1 {
		t.Fatalf("%d upstream messages for %d updates of one device, want 1", got, n)
	}
	m := r.h.Captured("metamanager").Next(t, time.Second)
	var st struct {
		Twins []struct {
			PropertyName string `json:"propertyName"`
			Reported     struct {
				Value    string            `json:"value"`
				Metadata map[string]string `json:"metadata"`
			} `json:"reported"`
		} `json:"twins"`
		State          string `json:"state"`
		LastOnlineTime string `json:"lastOnlineTime"`
	}
	if err := json.Unmarshal(m.Content, &st); err != nil {
		t.Fatal(err)
	}
	if m.Route.Resource != "default/devicestatus/thermo-1" || len(st.Twins) != 1 || st.Twins[0].Reported.Value != fmt.Sprintf("%d.5", n-1) ||
		st.Twins[0].Reported.Metadata["type"] != "FLOAT" || st.Twins[0].Reported.Metadata["timestamp"] == "" {
		t.Fatalf("upstream %s %s: want one twin, temperature = %d.5 (FLOAT, with a timestamp)", m.Route.Resource, m.Content, n-1)
	}
	if _, err := time.Parse(time.RFC3339, st.LastOnlineTime); st.State != "online" || err != nil { // KubeEdge v1.23.1's format
		t.Fatalf("upstream state %q lastOnlineTime %q", st.State, st.LastOnlineTime)
	}
}

func TestStatusIsSentEveryFlushInterval(t *testing.T) {
	r := newRig(t, map[string]any{"flushInterval": "20ms"})
	r.addThermo(t, "thermo-1", "")
	r.mapper.publish(t, upd, `{"event_id":"f1","twin":{"temperature":{"actual":{"value":"1"}}}}`)
	m := r.h.Captured("metamanager").Next(t, 10*time.Second)
	if m.Route.Resource != "default/devicestatus/thermo-1" || !strings.Contains(string(m.Content), `"value":"1"`) {
		t.Fatalf("upstream %s %s", m.Route.Resource, m.Content)
	}
}

func TestTwinGetMembershipAndData(t *testing.T) {
	r := newRig(t, map[string]any{"flushInterval": "1h"})
	r.addThermo(t, "thermo-1", "20")
	node := sdktest.NodeName

	r.send(t, message.OpUpdate, "default/membership/"+node, "", map[string]any{"devices": []map[string]string{{"namespace": "default", "name": "thermo-1"}}})
	up := r.mapper.await(t, "$hw/events/node/"+node+"/membership/updated", `"added_devices"`)
	if v := path(up, "added_devices"); fmt.Sprint(v) == "[]" || !strings.Contains(fmt.Sprint(v), "thermo-1") {
		t.Fatalf("membership/updated %v", up)
	}

	r.mapper.publish(t, "$hw/events/node/"+node+"/membership/get", `{"event_id":"m1"}`)
	mg := r.mapper.await(t, "$hw/events/node/"+node+"/membership/get/result", `"m1"`)
	devs, _ := mg["devices"].([]any)
	if len(devs) != 1 || path(devs[0], "id") != "default/thermo-1" || path(devs[0], "twin", "target", "expected", "value") != "20" {
		t.Fatalf("membership/get/result %v", mg)
	}

	r.mapper.publish(t, "$hw/events/device/thermo-1/twin/get", `{"event_id":"g1"}`)
	g := r.mapper.await(t, "$hw/events/device/thermo-1/twin/get/result", `"g1"`)
	if path(g, "twin", "target", "expected", "value") != "20" || path(g, "twin", "temperature", "metadata", "type") != "float" {
		t.Fatalf("twin/get/result %v", g)
	}

	// Data for a reportToCloud property goes upstream; others are ignored.
	r.mapper.publish(t, "$ke/events/device/thermo-1/data/update", `{"event_id":"d1","data":{"temperature":{"value":"30.5","metadata":{"timestamp":1700000000123}},"label":{"value":"x"}}}`)
	// A marker behind it: once answered, the data update was handled.
	r.mapper.publish(t, "$hw/events/device/thermo-1/twin/get", `{"event_id":"g2"}`)
	r.mapper.await(t, "$hw/events/device/thermo-1/twin/get/result", `"g2"`)

	// The device removed from the node: membership/updated lists it as removed.
	r.send(t, message.OpUpdate, "default/membership/"+node, "", map[string]any{"devices": []any{}})
	rm := r.mapper.await(t, "$hw/events/node/"+node+"/membership/updated", `"removed_devices":[`)
	if !strings.Contains(fmt.Sprint(rm["removed_devices"]), "thermo-1") {
		t.Fatalf("membership/updated %v", rm)
	}
	r.send(t, message.OpDelete, "default/device/thermo-1", "", nil)
	r.mapper.publish(t, "$hw/events/device/thermo-1/twin/get", `{"event_id":"g3"}`)
	if res := r.mapper.await(t, "$hw/events/device/thermo-1/twin/get/result", `"g3"`); res["code"] != float64(404) {
		t.Fatalf("twin/get after delete: %v", res)
	}
	if _, ok := storedTwin(t, r, "target"); ok {
		t.Fatal("twins of a deleted device are still stored")
	}
	r.h.Stop()
	st := upstream(t, r)["default/devicestatus/thermo-1"]
	if st != nil {
		t.Fatalf("status of a deleted device sent upstream: %s", st.Content)
	}
}

func TestDataForReportToCloudPropertiesGoesUpstream(t *testing.T) {
	r := newRig(t, map[string]any{"flushInterval": "1h"})
	r.addThermo(t, "thermo-1", "")
	r.mapper.publish(t, "$ke/events/device/thermo-1/data/update", `{"event_id":"d1","data":{"temperature":{"value":"30.5","metadata":{"timestamp":1700000000123}},"label":{"value":"x"}}}`)
	r.mapper.publish(t, "$hw/events/device/thermo-1/twin/get", `{"event_id":"g2"}`)
	r.mapper.await(t, "$hw/events/device/thermo-1/twin/get/result", `"g2"`)
	r.h.Stop()
	st := upstream(t, r)["default/devicestatus/thermo-1"]
	if st == nil || !strings.Contains(string(st.Content), `"reported":{"value":"30.5","metadata":{"timestamp":"1700000000123","type":"FLOAT"}}`) ||
		strings.Contains(string(st.Content), "label") {
		t.Fatalf("upstream %v", st)
	}
}
