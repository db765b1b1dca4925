package devicetwin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// storedActualTS is the metadata timestamp of the stored actual value of device/prop (0: none).
func storedActualTS(t testing.TB, h *sdktest.Harness, device, prop string) int64 {
	t.Helper()
	o, err := h.Store().Get(context.Background(), sdk.Key{Type: "twin", Namespace: "default", Name: device + "/" + prop})
	if err != nil {
		return 0
	}
	var tw struct {
		Actual struct {
			Metadata struct {
				Timestamp int64 `json:"timestamp"`
			} `json:"metadata"`
		} `json:"actual"`
	}
	if err := json.Unmarshal(o.Value, &tw); err != nil {
		t.Fatal(err)
	}
	return tw.Actual.Metadata.Timestamp
}

// histogram returns the sample count and sum of a histogram.
func histogram(t testing.TB, h *sdktest.Harness, name string) (count uint64, sum float64) {
	t.Helper()
	fams, err := h.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				if hg := m.GetHistogram(); hg != nil {
					count += hg.GetSampleCount()
					sum += hg.GetSampleSum()
				}
			}
		}
	}
	return count, sum
}

// Through the real embedded broker, eventbus, devicetwin and SQLite (synchronous=FULL): one client
// keeps 400 QoS 1 updates in flight; when the PUBACK of update i arrives, the store already holds
// update i or a later one. The updates in flight share transactions (fewer commits than updates).
func TestTwinUpdatePUBACKComesOnlyOnceTheValueIsCommittedAndUpdatesShareCommits(t *testing.T) {
	r := newRig(t, nil, sdktest.StoreAt(filepath.Join(t.TempDir(), "edge.db"), "full"))
	r.addThermo(t, "thermo-1", "")
	r.mapper.publish(t, "$hw/events/device/thermo-1/twin/get", `{"event_id":"ready"}`)
	r.mapper.await(t, "$hw/events/device/thermo-1/twin/get/result", `"ready"`)
	pub := newClient(t, r.broker, "durable-mapper")

	const n = 400
	base := time.Now().UnixMilli()
	toks := make([]mqtt.Token, n)
	for i := range n {
		ts := base + int64(i)
		toks[i] = pub.c.Publish(upd, 1, false, fmt.Sprintf(`{"event_id":"d%d","twin":{"temperature":{"actual":{"value":"%d.5","metadata":{"timestamp":%d}}}}}`, i, i%100, ts))
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(60*time.Second) || tok.Error() != nil {
			t.Fatalf("update %d: no PUBACK: %v", i, tok.Error())
		}
		if got := storedActualTS(t, r.h, "thermo-1", "temperature"); got < base+int64(i) {
			held := "no value"
			if got >= base {
				held = fmt.Sprintf("update %d", got-base)
			}
			t.Fatalf("update %d was acknowledged but the store holds %s", i, held)
		}
	}
	commits, requests := histogram(t, r.h, "kedge_devicetwin_commit_requests")
	if requests < n || commits >= uint64(requests) {
		t.Fatalf("%v requests in %d commits: want the %d updates in flight to share transactions", requests, commits, n)
	}
	t.Logf("%v requests in %d group commits", requests, commits)
}

// The batch of values waiting to go upstream is in memory only. After a restart devicetwin sends the
// latest stored value of every twin (and device state) again, so nothing a crash cut off before the
// flush is missing in the cloud.
func TestStoredTwinValuesAreReportedUpstreamAgainAfterARestart(t *testing.T) {
	db := filepath.Join(t.TempDir(), "edge.db")
	first := newRig(t, map[string]any{"flushInterval": "1h"}, sdktest.StoreAt(db, "full"))
	first.addThermo(t, "thermo-1", "")
	first.mapper.publish(t, upd, `{"event_id":"e1","twin":{"temperature":{"actual":{"value":"42.5","metadata":{"timestamp":1700000000123}}}}}`)
	first.mapper.await(t, result, `"e1"`)
	first.mapper.publish(t, "$hw/events/device/thermo-1/state/update", `{"event_id":"s1","state":"online"}`)
	first.mapper.await(t, "$hw/events/device/thermo-1/state/update/result", `"s1"`)
	if err := first.h.Stop(); err != nil {
		t.Fatal(err)
	}
	_ = first.h.DB.Close()

	second := newRig(t, nil, sdktest.StoreAt(db, "full"))
	m := second.h.Captured("metamanager").Next(t, 10*time.Second)
	if m.Route.Operation != message.OpUpdate || m.Route.Resource != "default/devicestatus/thermo-1" {
		t.Fatalf("metamanager got %s %s; want update default/devicestatus/thermo-1", m.Route.Operation, m.Route.Resource)
	}
	for _, want := range []string{`"propertyName":"temperature"`, `"reported":{"value":"42.5","metadata":{"timestamp":"1700000000123","type":"FLOAT"}}`, `"state":"online"`} {
		if !strings.Contains(string(m.Content), want) {
			t.Fatalf("device status %s lacks %s", m.Content, want)
		}
	}
}
