package opcua_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/kedge-io/kedge/plugins/mappers/opcua"
	"github.com/kedge-io/kedge/plugins/mappers/opcua/uaserver"
	"github.com/kedge-io/kedge/sdk/mapper"
)

func visitorProp(name, typ, visitor string) mapper.Property {
	return mapper.Property{Name: name, Type: typ, AccessMode: "ReadWrite", VisitorProtocol: "opcua", Visitor: json.RawMessage(visitor)}
}

// metric returns the value of the OPC-UA metric name whose labels include want (nil: not there).
func metric(t *testing.T, name string, want map[string]string) *float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(opcua.Metrics()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue next
				}
			}
			v := value(m)
			return &v
		}
	}
	return nil
}

func value(m *dto.Metric) float64 {
	if m.GetCounter() != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

// A browse path (from the Objects folder, namespace-qualified names) addresses the same node as its
// node id: reads polled and subscribed, and a write that the server then holds; a path that matches
// nothing is an error naming the path and the server's status.
func TestBrowsePathVisitorsReadAndWriteTheNodeTheyName(t *testing.T) {
	srv := uaserver.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, subscribe := range []bool{false, true} {
		t.Run(fmt.Sprintf("subscribe=%v", subscribe), func(t *testing.T) {
			d := initDriver(t, fmt.Sprintf(`{"url":%q,"timeout":"60s","subscribe":%v,"publishingInterval":"20ms"}`, srv.URL(), subscribe))
			label := visitorProp("label", "STRING", `{"browsePath":"1:Plant/1:Label"}`)
			if got, err := readString(ctx, d, label); err != nil || got != "boiler-1" {
				t.Fatalf("label by browse path = %q, %v; want boiler-1", got, err)
			}
			running := visitorProp("running", "BOOLEAN", `{"browsePath":"/1:Plant/1:Running","startNodeID":"i=85"}`)
			if got, err := readString(ctx, d, running); err != nil || got != "true" {
				t.Fatalf("running by browse path from i=85 = %q, %v; want true", got, err)
			}
			_, err := d.Read(ctx, dev, visitorProp("x", "BOOLEAN", `{"browsePath":"1:Running","startNodeID":"ns=1;s=NoSuchFolder"}`))
			if err == nil || !strings.Contains(err.Error(), "resolving browsePath 1:Running from ns=1;s=NoSuchFolder") {
				t.Fatalf("a path from a node that does not exist: %v", err)
			}
			setpoint := visitorProp("setpoint", "FLOAT", `{"browsePath":"1:Plant/1:Setpoint"}`)
			want := 17.25
			if subscribe {
				want = 18.5
			}
			if err := d.Write(ctx, dev, setpoint, want); err != nil {
				t.Fatal(err)
			}
			if got := srv.Value("Setpoint"); got != fmt.Sprint(want) {
				t.Fatalf("server Setpoint = %s after a write by browse path, want %v", got, want)
			}
			_, err = d.Read(ctx, dev, visitorProp("nothing", "FLOAT", `{"browsePath":"1:Plant/1:Nothing"}`))
			if err == nil || !strings.Contains(err.Error(), "resolving browsePath 1:Plant/1:Nothing from i=85") || !strings.Contains(err.Error(), "BadNoMatch") {
				t.Fatalf("a path that matches nothing: %v", err)
			}
		})
	}
}

// samplingInterval and queueSize of a visitor are asked of the server for that property's monitored
// item: the server grants them (node-opcua keeps 500 ms and 7; the defaults are its own sampling and a
// queue of 10), the metrics show what was granted, and each item delivers values.
func TestSamplingIntervalAndQueueSizeAreAskedOfTheServerPerProperty(t *testing.T) {
	srv := uaserver.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d := initDriver(t, fmt.Sprintf(`{"url":%q,"timeout":"60s","publishingInterval":"50ms"}`, srv.URL()))
	slow := visitorProp("temperature", "FLOAT", `{"nodeID":"ns=1;s=Temperature","samplingInterval":"500ms","queueSize":7}`)
	plain := visitorProp("label", "STRING", `{"browsePath":"1:Plant/1:Label"}`)
	for _, p := range []mapper.Property{slow, plain} {
		if _, err := readString(ctx, d, p); err != nil {
			t.Fatal(err)
		}
	}
	dv := dev.String()
	for _, tc := range []struct {
		node, name string
		want       float64
	}{
		{"ns=1;s=Temperature", "kedge_opcua_monitored_item_sampling_seconds", 0.5},
		{"ns=1;s=Temperature", "kedge_opcua_monitored_item_queue_size", 7},
		{"ns=1;s=Label", "kedge_opcua_monitored_item_queue_size", 10},
	} {
		got := metric(t, tc.name, map[string]string{"device": dv, "node": tc.node})
		if got == nil || *got != tc.want {
			t.Errorf("%s{node=%s} = %v, want %v", tc.name, tc.node, got, tc.want)
		}
	}
	if got := metric(t, "kedge_opcua_monitored_item_sampling_seconds", map[string]string{"device": dv, "node": "ns=1;s=Label"}); got == nil || *got <= 0 || *got == 0.5 {
		t.Errorf("Label's granted sampling interval %v: want the server's own (positive, not the 500 ms asked for Temperature)", got)
	}
	for _, tc := range []string{`{"nodeID":"i=85","queueSize":0}`, `{"nodeID":"i=85","samplingInterval":"-1s"}`, `{"nodeID":"i=85","samplingInterval":"soon"}`} {
		if _, err := d.Read(ctx, dev, visitorProp("bad", "STRING", tc)); err == nil {
			t.Errorf("visitor %s accepted", tc)
		}
	}
}

// The OPC-UA metrics follow the session: connected, a reconnect after the server came back,
// notifications counted as they arrive, and failed reads and writes by status code.
func TestOPCUAMetricsShowSessionStateReconnectsNotificationsAndErrorsByStatus(t *testing.T) {
	srv := uaserver.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := initDriver(t, fmt.Sprintf(`{"url":%q,"timeout":"10s","publishingInterval":"20ms"}`, srv.URL()))
	dv := dev.String()
	temp := prop("temperature", "FLOAT", "ns=1;s=Temperature")
	if _, err := readString(ctx, d, temp); err != nil {
		t.Fatal(err)
	}
	is := func(name string, labels map[string]string, ok func(float64) bool) func() error {
		return func() error {
			v := metric(t, name, labels)
			if v == nil || !ok(*v) {
				return fmt.Errorf("%s%v = %v (errors: %s)", name, labels, v, errorLabels(t))
			}
			return nil
		}
	}
	eventually(t, time.Minute, "state connected", is("kedge_opcua_session_state", map[string]string{"device": dv, "state": "connected"}, func(v float64) bool { return v == 1 }))
	eventually(t, time.Minute, "notifications", is("kedge_opcua_notifications_total", map[string]string{"device": dv}, func(v float64) bool { return v >= 3 }))
	if err := d.Write(ctx, dev, prop("temperature", "FLOAT", "ns=1;s=Temperature"), 1.0); err == nil {
		t.Fatal("a write to the read-only Temperature succeeded")
	}
	if _, err := d.Read(ctx, dev, visitorProp("none", "FLOAT", `{"nodeID":"ns=1;s=NoSuchNode"}`)); err == nil {
		t.Fatal("a read of a node that does not exist succeeded")
	}
	eventually(t, time.Minute, "write error by status", is("kedge_opcua_errors_total", map[string]string{"device": dv, "op": "write", "status": "BadNotWritable"}, func(v float64) bool { return v == 1 }))
	eventually(t, time.Minute, "monitor error by status", is("kedge_opcua_errors_total", map[string]string{"device": dv, "op": "monitor", "status": "BadNodeIDUnknown"}, func(v float64) bool { return v == 1 }))
	poller := mapper.DeviceRef{Namespace: "default", Name: "poller", Model: "boiler"}
	d2 := opcua.NewDriver()
	if err := d2.Init(ctx, mapper.ProtocolConfig{Device: poller, ConfigData: json.RawMessage(fmt.Sprintf(`{"url":%q,"timeout":"10s","subscribe":false}`, srv.URL()))}); err != nil {
		t.Fatal(err)
	}
	if _, err := d2.Read(ctx, poller, visitorProp("none", "FLOAT", `{"nodeID":"ns=1;s=NoSuchNode"}`)); err == nil {
		t.Fatal("a polled read of a node that does not exist succeeded")
	}
	eventually(t, time.Minute, "read error by status", is("kedge_opcua_errors_total", map[string]string{"device": poller.String(), "op": "read", "status": "BadNodeIDUnknown"}, func(v float64) bool { return v == 1 }))
	d2.Close()
	if v := metric(t, "kedge_opcua_reconnects_total", map[string]string{"device": dv}); v == nil || *v != 0 {
		t.Fatalf("reconnects before any loss = %v, want 0", v)
	}
	notified := *metric(t, "kedge_opcua_notifications_total", map[string]string{"device": dv})
	srv.Stop()
	eventually(t, time.Minute, "state not connected", is("kedge_opcua_session_state", map[string]string{"device": dv, "state": "connected"}, func(v float64) bool { return v == 0 }))
	srv.Restart()
	eventually(t, 2*time.Minute, "a reconnect", is("kedge_opcua_reconnects_total", map[string]string{"device": dv}, func(v float64) bool { return v == 1 }))
	eventually(t, time.Minute, "state connected again", is("kedge_opcua_session_state", map[string]string{"device": dv, "state": "connected"}, func(v float64) bool { return v == 1 }))
	eventually(t, time.Minute, "notifications from the restored subscription", is("kedge_opcua_notifications_total", map[string]string{"device": dv}, func(v float64) bool { return v > notified }))
	d.Close()
	if v := metric(t, "kedge_opcua_session_state", map[string]string{"device": dv}); v != nil {
		t.Fatalf("a closed driver still has metrics")
	}
}

func errorLabels(t *testing.T) string {
	reg := prometheus.NewRegistry()
	reg.MustRegister(opcua.Metrics())
	mfs, _ := reg.Gather()
	var out []string
	for _, mf := range mfs {
		if mf.GetName() == "kedge_opcua_errors_total" {
			for _, m := range mf.GetMetric() {
				out = append(out, m.String())
			}
		}
	}
	return strings.Join(out, "; ")
}
