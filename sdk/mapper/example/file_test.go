package example_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/devicetwin"
	"github.com/kedge-io/kedge/plugins/builtin/dmi"
	"github.com/kedge-io/kedge/plugins/builtin/metamanager"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/mapper/example"
	"github.com/kedge-io/kedge/sdk/message"
)

const model = `{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"DeviceModel","metadata":{"name":"files","namespace":"default","resourceVersion":"1"},
 "spec":{"protocol":"file","properties":[
  {"name":"value","type":"FLOAT","accessMode":"ReadOnly"},
  {"name":"setpoint","type":"INT","accessMode":"ReadWrite","minimum":"0","maximum":"100"}]}}`

func device(name, dir, path, rv string) string {
	return fmt.Sprintf(`{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{"name":%q,"namespace":"default","resourceVersion":%q},
 "spec":{"deviceModelRef":{"name":"files"},"nodeName":%q,"protocol":{"protocolName":"file","configData":{"dir":%q}},
  "properties":[
   {"name":"value","reportToCloud":true,"collectCycle":20,"visitors":{"protocolName":"file","configData":{"path":%q,"field":0}}},
   {"name":"setpoint","reportToCloud":true,"collectCycle":20,"desired":{"value":"30"},"visitors":{"protocolName":"file","configData":{"path":"setpoint","field":0}}}]}}`,
		name, rv, sdktest.NodeName, dir, path)
}

// The example mapper runs as a module beside edgecore's DMI, devicetwin and metamanager: file
// contents become reported twin values, and a desired value is written into its file.
func TestFileMapperReportsFileFieldsAndWritesDesiredValues(t *testing.T) {
	dir, err := os.MkdirTemp("", "fm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	for f, s := range map[string]string{"sensor": "21.5 other\n", "setpoint": "10\n"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mm, _ := sdk.Lookup(metamanager.Name)
	h := sdktest.Run(t, example.Info, map[string]any{"dmiSocket": filepath.Join(dir, "dmi.sock"), "socket": filepath.Join(dir, "file.sock"),
		"collectCycle": "20ms", "healthCycle": "50ms", "backoffMin": "10ms", "backoffMax": "100ms"},
		sdktest.Beside(dmi.Info, map[string]any{"socket": filepath.Join(dir, "dmi.sock"), "reconcileInterval": "50ms"}),
		sdktest.Beside(mm, map[string]any{"cloudSource": "edgehub", "metaServer": map[string]any{"enable": false}}),
		sdktest.Beside(devicetwin.Info, map[string]any{"flushInterval": "20ms"}),
		sdktest.Capture("edgehub", "eventbus"))
	send := func(resource, rv, content string) {
		m := message.New("edgehub", "resource", message.OpInsert, resource)
		m.Header.ResourceVersion, m.Content = rv, json.RawMessage(content)
		if err := h.Router.Send(context.Background(), metamanager.Name, m); err != nil {
			t.Fatal(err)
		}
	}
	send("default/devicemodel/files", "1", model)
	send("default/device/tempfile", "2", device("tempfile", dir, "sensor", "2"))
	if _, err := os.Stat("/proc/loadavg"); err == nil {
		send("default/device/load", "3", device("load", "/proc", "loadavg", "3"))
	}
	for _, tc := range []struct{ device, prop, want string }{
		{"tempfile", "value", "21.5"},
		{"tempfile", "setpoint", "30"}, // desired 30 written to the file, read back
		{"load", "value", ""},          // any FLOAT from /proc/loadavg
	} {
		if _, err := os.Stat("/proc/loadavg"); err != nil && tc.device == "load" {
			continue
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			o, err := h.DB.Objects(devicetwin.Name).Get(context.Background(), sdk.Key{Type: "twin", Namespace: "default", Name: tc.device + "/" + tc.prop})
			var tw struct {
				Actual *struct{ Value string } `json:"actual"`
			}
			if err == nil && json.Unmarshal(o.Value, &tw) == nil && tw.Actual != nil {
				if _, ferr := strconv.ParseFloat(tw.Actual.Value, 64); (tc.want == "" && ferr == nil) || tw.Actual.Value == tc.want {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s/%s: want %q in devicetwin; twin %v (%v)", tc.device, tc.prop, tc.want, o.Value, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "setpoint"))
	if err != nil || strings.TrimSpace(string(b)) != "30" {
		t.Fatalf("setpoint file = %q (%v), want 30", b, err)
	}
}
