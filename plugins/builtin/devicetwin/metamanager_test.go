package devicetwin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/devicetwin"
	"github.com/kedge-io/kedge/plugins/builtin/eventbus"
	"github.com/kedge-io/kedge/plugins/builtin/metamanager"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// With the real metamanager beside it: the cloud's Device reaches devicetwin after metamanager
// stored it, the desired value reaches the mapper as a delta, and the reported value comes back to
// metamanager's store as the device status for the cloud.
func TestWithMetamanagerTheCloudsDeviceReachesTheMapperAndTheStatusIsStoredForTheCloud(t *testing.T) {
	var eb *eventbus.Module
	ebInfo := eventbus.Info
	ebInfo.New = func() sdk.Module { eb = eventbus.New(); return eb }
	mmInfo, ok := sdk.Lookup(metamanager.Name)
	if !ok {
		t.Fatal("metamanager not registered")
	}
	h := sdktest.Run(t, devicetwin.Info, map[string]any{"flushInterval": "20ms"},
		sdktest.Beside(mmInfo, map[string]any{"cloudSource": "edgehub", "metaServer": map[string]any{"enable": false}}),
		sdktest.Beside(ebInfo, map[string]any{"internalAddress": "127.0.0.1:0"}),
		sdktest.Capture("edgehub"))
	waitFor(t, 10*time.Second, "modules healthy", func() error { return h.Healthy() })
	mapper := newClient(t, eb.BrokerAddr(), "mapper")
	mapper.subscribe(t, "$hw/events/#")

	fromCloud := func(resource, rv string, content string) {
		m := message.New("edgehub", "resource", message.OpInsert, resource)
		m.Header.ResourceVersion = rv
		m.Content = json.RawMessage(content)
		if err := h.Router.Send(context.Background(), metamanager.Name, m); err != nil {
			t.Fatal(err)
		}
	}
	fromCloud("default/devicemodel/thermo", "1", thermoModel)
	fromCloud("default/device/thermo-1", "2", thermoDevice("thermo-1", "42", "2"))
	if v := path(mapper.await(t, "$hw/events/device/thermo-1/twin/update/delta", `"42"`), "delta", "target"); v != "42" {
		t.Fatalf("delta.target = %v", v)
	}
	mapper.publish(t, upd, `{"event_id":"r1","twin":{"temperature":{"actual":{"value":"18.25"}}}}`)
	mapper.await(t, result, `"r1"`)
	waitFor(t, 10*time.Second, "device status stored by metamanager", func() error {
		o, err := h.DB.Objects(metamanager.Name).Get(context.Background(), sdk.Key{Type: "devicestatus", Namespace: "default", Name: "thermo-1"})
		if err != nil {
			return err
		}
		if !strings.Contains(string(o.Value), `"value":"18.25"`) {
			return fmt.Errorf("stored status %s", o.Value)
		}
		return nil
	})
}
