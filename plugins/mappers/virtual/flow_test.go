package virtual_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/devicetwin"
	"github.com/kedge-io/kedge/plugins/builtin/dmi"
	"github.com/kedge-io/kedge/plugins/builtin/metamanager"
	"github.com/kedge-io/kedge/plugins/mappers/virtual"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

func sockDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "vm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// rig is the virtual mapper module beside the real edge side of DMI: dmi, devicetwin, metamanager.
type rig struct{ h *sdktest.Harness }

func newRig(t testing.TB) *rig {
	t.Helper()
	dir := sockDir(t)
	dmiSock := filepath.Join(dir, "dmi.sock")
	mmInfo, ok := sdk.Lookup(metamanager.Name)
	if !ok {
		t.Fatal("metamanager not registered")
	}
	h := sdktest.Run(t, virtual.Info, map[string]any{
		"dmiSocket": dmiSock, "socket": filepath.Join(dir, "mappers", "virtual.sock"),
		"collectCycle": "20ms", "healthCycle": "50ms", "backoffMin": "10ms", "backoffMax": "100ms", "callTimeout": "2s"},
		sdktest.Beside(dmi.Info, map[string]any{"socket": dmiSock, "reconcileInterval": "50ms", "callTimeout": "2s"}),
		sdktest.Beside(mmInfo, map[string]any{"cloudSource": "edgehub", "metaServer": map[string]any{"enable": false}}),
		sdktest.Beside(devicetwin.Info, map[string]any{"flushInterval": "200ms"}),
		sdktest.Capture("edgehub", "eventbus"))
	return &rig{h: h}
}

func (r *rig) fromCloud(t testing.TB, op, resource, rv, content string) {
	t.Helper()
	m := message.New("edgehub", "resource", op, resource)
	m.Header.ResourceVersion = rv
	m.Content = json.RawMessage(content)
	if err := r.h.Router.Send(context.Background(), metamanager.Name, m); err != nil {
		t.Fatal(err)
	}
}

const model = `{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"DeviceModel","metadata":{"name":"sim","namespace":"default","resourceVersion":"1"},
 "spec":{"protocol":"virtual","properties":[
  {"name":"temperature","type":"FLOAT","accessMode":"ReadOnly","minimum":"-40","maximum":"125","unit":"C"},
  {"name":"target","type":"INT","accessMode":"ReadWrite","minimum":"0","maximum":"100"},
  {"name":"mode","type":"STRING","accessMode":"ReadWrite"},
  {"name":"door","type":"BOOLEAN","accessMode":"ReadOnly"}]}}`

func device(name, rv, target string, offline bool) string {
	return fmt.Sprintf(`{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{"name":%q,"namespace":"default","resourceVersion":%q},
 "spec":{"deviceModelRef":{"name":"sim"},"nodeName":%q,"protocol":{"protocolName":"virtual","configData":{"seed":7,"offline":%t}},
  "properties":[
   {"name":"temperature","reportToCloud":true,"collectCycle":20,"visitors":{"protocolName":"virtual","configData":{"start":20,"step":0.5}}},
   {"name":"target","reportToCloud":true,"collectCycle":20,"desired":{"value":%q},"visitors":{"protocolName":"virtual","configData":{"start":10}}},
   {"name":"mode","reportToCloud":true,"desired":{"value":"eco"},"visitors":{"protocolName":"virtual","configData":{"start":"auto"}}},
   {"name":"door","reportToCloud":true,"visitors":{"protocolName":"virtual","configData":{"flip":0.5}}}]}}`, name, rv, sdktest.NodeName, offline, target)
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

// actual is the actual value and its timestamp devicetwin holds for a device property.
func (r *rig) actual(device, prop string) (string, int64, error) {
	o, err := r.h.DB.Objects(devicetwin.Name).Get(context.Background(), sdk.Key{Type: "twin", Namespace: "default", Name: device + "/" + prop})
	if err != nil {
		return "", 0, err
	}
	var tw struct {
		Actual *struct {
			Value    *string `json:"value"`
			Metadata *struct {
				Timestamp int64 `json:"timestamp"`
			} `json:"metadata"`
		} `json:"actual"`
	}
	if err := json.Unmarshal(o.Value, &tw); err != nil {
		return "", 0, err
	}
	if tw.Actual == nil || tw.Actual.Value == nil {
		return "", 0, fmt.Errorf("twin %s/%s has no actual value: %s", device, prop, o.Value)
	}
	var ts int64
	if tw.Actual.Metadata != nil {
		ts = tw.Actual.Metadata.Timestamp
	}
	return *tw.Actual.Value, ts, nil
}

func (r *rig) state(device string) (string, error) {
	o, err := r.h.DB.Objects(devicetwin.Name).Get(context.Background(), sdk.Key{Type: "devicestate", Namespace: "default", Name: device})
	if err != nil {
		return "", err
	}
	var s struct {
		State string `json:"state"`
	}
	err = json.Unmarshal(o.Value, &s)
	return s.State, err
}

func (r *rig) waitState(t testing.TB, device, want string) {
	t.Helper()
	waitFor(t, 15*time.Second, device+" "+want+" in devicetwin", func() error {
		s, err := r.state(device)
		if err != nil {
			return err
		}
		if s != want {
			return fmt.Errorf("state %q", s)
		}
		return nil
	})
}

// waitActual waits until devicetwin holds a value for which ok says nil.
func (r *rig) waitActual(t testing.TB, device, prop string, ok func(v string) error) {
	t.Helper()
	waitFor(t, 15*time.Second, device+"/"+prop+" actual value in devicetwin", func() error {
		v, _, err := r.actual(device, prop)
		if err != nil {
			return err
		}
		return ok(v)
	})
}

func (r *rig) gauge(t testing.TB, name string) float64 {
	t.Helper()
	fams, err := r.h.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

func TestVirtualDeviceValuesReachDevicetwinAndTheCloudStatus(t *testing.T) {
	r := newRig(t)
	// What goes to the cloud is the latest devicestatus metamanager stored; devicetwin sends only what
	// changed in each flush, so the state and the readings may travel in different flushes (under
	// load they do). Watch every version of the record from the start instead of only the last one.
	seen := watchDeviceStatus(t, r, "sim-1")
	r.fromCloud(t, message.OpInsert, "default/devicemodel/sim", "1", model)
	r.fromCloud(t, message.OpInsert, "default/device/sim-1", "2", device("sim-1", "2", "42", false))
	r.waitState(t, "sim-1", "online")
	for _, tc := range []struct {
		prop string
		ok   func(v string) error
	}{
		{"temperature", func(v string) error {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < -40 || f > 125 {
				return fmt.Errorf("temperature %q, want a FLOAT in [-40, 125]", v)
			}
			return nil
		}},
		{"door", func(v string) error {
			if v != "true" && v != "false" {
				return fmt.Errorf("door %q, want a BOOLEAN", v)
			}
			return nil
		}},
	} {
		r.waitActual(t, "sim-1", tc.prop, tc.ok)
	}
	// The walk moves: a later reading with a newer timestamp reaches devicetwin.
	_, ts0, err := r.actual("sim-1", "temperature")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "a newer temperature reading", func() error {
		_, ts, err := r.actual("sim-1", "temperature")
		if err != nil || ts <= ts0 {
			return fmt.Errorf("timestamp %d (was %d), %v", ts, ts0, err)
		}
		return nil
	})
	waitFor(t, 30*time.Second, "reported value and state in the device status for the cloud", func() error {
		if temp, online := seen(); !temp || !online {
			return fmt.Errorf("sent to the cloud so far: a temperature reading %v, state online %v", temp, online)
		}
		return nil
	})
}

func TestDesiredValuesAreWrittenToTheDriverAndReadBack(t *testing.T) {
	r := newRig(t)
	r.fromCloud(t, message.OpInsert, "default/devicemodel/sim", "1", model)
	r.fromCloud(t, message.OpInsert, "default/device/sim-1", "2", device("sim-1", "2", "42", false))
	is := func(want string) func(string) error {
		return func(v string) error {
			if v != want {
				return fmt.Errorf("value %q, want %q", v, want)
			}
			return nil
		}
	}
	for _, tc := range []struct{ name, rv, target string }{
		{"desired value at registration", "", "42"},
		{"desired value changed on the Device", "3", "77"},
		{"desired value changed again", "4", "5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.rv != "" {
				r.fromCloud(t, message.OpUpdate, "default/device/sim-1", tc.rv, device("sim-1", tc.rv, tc.target, false))
			}
			r.waitActual(t, "sim-1", "target", is(tc.target))
			r.waitActual(t, "sim-1", "mode", is("eco"))
		})
	}
}

func TestFailingDeviceGoesOfflineWhileOthersKeepReporting(t *testing.T) {
	r := newRig(t)
	r.fromCloud(t, message.OpInsert, "default/devicemodel/sim", "1", model)
	r.fromCloud(t, message.OpInsert, "default/device/good", "2", device("good", "2", "1", false))
	r.fromCloud(t, message.OpInsert, "default/device/bad", "3", device("bad", "3", "1", false))
	r.waitState(t, "bad", "online")
	r.waitState(t, "good", "online")

	// bad's reads now fail (the virtual device is switched offline in its protocol config).
	r.fromCloud(t, message.OpUpdate, "default/device/bad", "4", device("bad", "4", "1", true))
	r.waitState(t, "bad", "offline")
	_, ts0, err := r.actual("good", "temperature")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		waitFor(t, 15*time.Second, "good keeps reporting", func() error {
			_, ts, err := r.actual("good", "temperature")
			if err != nil || ts <= ts0 {
				return fmt.Errorf("timestamp %d (was %d), %v", ts, ts0, err)
			}
			ts0 = ts
			return nil
		})
	}
	if s, err := r.state("good"); err != nil || s != "online" {
		t.Fatalf("good is %q (%v), want online", s, err)
	}
	// back online when it answers again
	r.fromCloud(t, message.OpUpdate, "default/device/bad", "5", device("bad", "5", "1", false))
	r.waitState(t, "bad", "online")
}

func TestRemovedDevicesStopTheirGoroutines(t *testing.T) {
	r := newRig(t)
	r.fromCloud(t, message.OpInsert, "default/devicemodel/sim", "1", model)
	const n = 20
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("sim-%d", i)
		r.fromCloud(t, message.OpInsert, "default/device/"+name, strconv.Itoa(2+i), device(name, strconv.Itoa(2+i), "1", false))
	}
	waitFor(t, 15*time.Second, "mapper runs every device", func() error {
		if g := r.gauge(t, "kedge_mapper_devices"); g != n {
			return fmt.Errorf("kedge_mapper_devices %v", g)
		}
		return nil
	})
	r.waitActual(t, fmt.Sprintf("sim-%d", n-1), "temperature", func(string) error { return nil })
	waitFor(t, 15*time.Second, "a goroutine per device", func() error {
		if got := deviceGoroutines(); got != n {
			return fmt.Errorf("%d device goroutines running, want %d", got, n)
		}
		return nil
	})
	for i := 0; i < n; i++ {
		r.fromCloud(t, message.OpDelete, fmt.Sprintf("default/device/sim-%d", i), strconv.Itoa(100+i), "{}")
	}
	waitFor(t, 15*time.Second, "mapper runs no device", func() error {
		if g := r.gauge(t, "kedge_mapper_devices"); g != 0 {
			return fmt.Errorf("kedge_mapper_devices %v", g)
		}
		return nil
	})
	waitFor(t, 15*time.Second, "device goroutines gone", func() error {
		if got := deviceGoroutines(); got != 0 {
			return fmt.Errorf("%d device goroutines still running", got)
		}
		if g := r.gauge(t, "kedge_mapper_device_goroutines"); g != 0 {
			return fmt.Errorf("kedge_mapper_device_goroutines %v", g)
		}
		return nil
	})
}

// deviceGoroutines counts the mapper runtime's per-device goroutines in this process.
func deviceGoroutines() int {
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	return strings.Count(b.String(), "mapper.(*runner).run(")
}

// watchDeviceStatus polls metamanager's stored devicestatus of name until the test ends and returns
// what any version of it carried: a temperature twin, the state online.
func watchDeviceStatus(t *testing.T, r *rig, name string) func() (temp, online bool) {
	var mu sync.Mutex
	var temp, online bool
	done := make(chan struct{})
	stopped := make(chan struct{})
	t.Cleanup(func() { close(done); <-stopped })
	go func() {
		defer close(stopped)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			o, err := r.h.DB.Objects(metamanager.Name).Get(context.Background(), sdk.Key{Type: "devicestatus", Namespace: "default", Name: name})
			if err != nil {
				continue
			}
			var st struct {
				Twins []struct {
					PropertyName string `json:"propertyName"`
				} `json:"twins"`
				State string `json:"state"`
			}
			if json.Unmarshal(o.Value, &st) != nil {
				continue
			}
			mu.Lock()
			for _, tw := range st.Twins {
				temp = temp || tw.PropertyName == "temperature"
			}
			online = online || st.State == "online"
			mu.Unlock()
		}
	}()
	return func() (bool, bool) {
		mu.Lock()
		defer mu.Unlock()
		return temp, online
	}
}
