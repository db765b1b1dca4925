package mapper_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/devicetwin"
	"github.com/kedge-io/kedge/plugins/builtin/dmi"
	"github.com/kedge-io/kedge/plugins/builtin/metamanager"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/mapper"
	"github.com/kedge-io/kedge/sdk/message"
)

// counter is a device whose every read returns the next number; it records what it served.
type counter struct {
	mu     sync.Mutex
	next   int
	served []int
}

func (c *counter) read() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next++
	c.served = append(c.served, c.next)
	return c.next
}

func (c *counter) Served() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.served...)
}

type countDriver struct{ c *counter }

func (d countDriver) Init(context.Context, mapper.ProtocolConfig) error { return nil }
func (d countDriver) Read(context.Context, mapper.DeviceRef, mapper.Property) (mapper.Value, error) {
	time.Sleep(2 * time.Millisecond) // a read takes a moment: a handover meets one in hand
	return int64(d.c.read()), nil
}
func (d countDriver) Write(context.Context, mapper.DeviceRef, mapper.Property, mapper.Value) error {
	return nil
}
func (d countDriver) Health(context.Context, mapper.DeviceRef) error { return nil }
func (d countDriver) Close() error                                   { return nil }

// hostOf is a module that only hands out its sdk.Host, to start a mapper instance by hand.
type hostOf struct{ h chan sdk.Host }

func (m *hostOf) Start(_ context.Context, h sdk.Host) error { m.h <- h; return nil }
func (m *hostOf) Handle(context.Context, sdk.Message) error { return nil }
func (m *hostOf) Stop(context.Context) error                { return nil }

// A second instance of a running mapper takes its devices over (a hot swap starts the new instance
// beside the old one): the old one finishes and reports its reads in hand and stops polling, the
// new one polls from then on; every number the device served reaches devicetwin once, in order. A
// new instance that cannot register gives the devices back and the old one polls them again.
func TestHandoverToANewInstanceLosesAndDuplicatesNoReading(t *testing.T) {
	dir, err := os.MkdirTemp("", "ho")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	dev := &counter{}
	info := sdk.Info{Name: "counter", Group: "mapper", New: func() sdk.Module {
		return mapper.New("count", func() mapper.Driver { return countDriver{dev} })
	}}
	cfg := map[string]any{"dmiSocket": filepath.Join(dir, "dmi.sock"), "socket": filepath.Join(dir, "count.sock"),
		"callTimeout": "2s", "collectCycle": "5ms", "healthCycle": "1s", "backoffMin": "10ms", "backoffMax": "100ms"}
	mm, _ := sdk.Lookup(metamanager.Name)
	h := sdktest.Run(t, info, cfg,
		sdktest.Beside(dmi.Info, map[string]any{"socket": filepath.Join(dir, "dmi.sock"), "reconcileInterval": "50ms"}),
		sdktest.Beside(mm, map[string]any{"cloudSource": "edgehub", "metaServer": map[string]any{"enable": false}}),
		sdktest.Beside(devicetwin.Info, map[string]any{"flushInterval": "5ms"}),
		sdktest.Capture("edgehub", "eventbus"))
	send := func(resource, content string) {
		m := message.New("edgehub", "resource", message.OpInsert, resource)
		m.Header.ResourceVersion, m.Content = "1", json.RawMessage(content)
		if err := h.Router.Send(context.Background(), metamanager.Name, m); err != nil {
			t.Fatal(err)
		}
	}
	send("default/devicemodel/counts", `{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"DeviceModel","metadata":{"name":"counts","namespace":"default","resourceVersion":"1"},
 "spec":{"protocol":"count","properties":[{"name":"n","type":"INT","accessMode":"ReadOnly"}]}}`)
	send("default/device/c1", fmt.Sprintf(`{"apiVersion":"devices.kubeedge.io/v1beta1","kind":"Device","metadata":{"name":"c1","namespace":"default","resourceVersion":"2"},
 "spec":{"deviceModelRef":{"name":"counts"},"nodeName":%q,"protocol":{"protocolName":"count"},
  "properties":[{"name":"n","reportToCloud":true,"collectCycle":5,"visitors":{"protocolName":"count"}}]}}`, sdktest.NodeName))

	var got []int
	docs := h.Captured("eventbus")
	atLeast := func(n int, what string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for len(got) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d readings in devicetwin's documents, want %d (served %d)", what, len(got), n, len(dev.Served()))
			}
			m, err := docs.Receive(100 * time.Millisecond)
			if err != nil {
				continue
			}
			var doc struct {
				Twin map[string]struct {
					Current *struct {
						Actual *struct{ Value string } `json:"actual"`
					} `json:"current"`
				} `json:"twin"`
			}
			if json.Unmarshal(m.Content, &doc) != nil {
				continue
			}
			if tw, ok := doc.Twin["n"]; ok && tw.Current != nil && tw.Current.Actual != nil {
				v, err := strconv.Atoi(tw.Current.Actual.Value)
				if err != nil {
					t.Fatalf("reading %q is not a number", tw.Current.Actual.Value)
				}
				got = append(got, v)
			}
		}
	}
	atLeast(20, "the first instance")

	// start starts a new instance on a host of its own; stop cancels its context, then stops it, as
	// the host does.
	start := func(dmiSocket string) (m *mapper.Module, stop func(), err error) {
		hosts := make(chan sdk.Host, 1)
		sdktest.Run(t, sdk.Info{Name: "counter", Group: "mapper", New: func() sdk.Module { return &hostOf{h: hosts} }}, nil)
		host := <-hosts
		m = mapper.New("count", func() mapper.Driver { return countDriver{dev} })
		m.DMISocket, m.Socket, m.CallTimeout = dmiSocket, cfg["socket"].(string), 500*time.Millisecond
		m.CollectCycle, m.HealthCycle, m.BackoffMin, m.BackoffMax = 5*time.Millisecond, time.Second, 10*time.Millisecond, 100*time.Millisecond
		ctx, cancel := context.WithCancel(context.Background())
		if err := m.Start(ctx, host); err != nil {
			cancel()
			return nil, nil, err
		}
		return m, func() { cancel(); _ = m.Stop(context.Background()) }, nil
	}

	t.Run("a new instance that cannot register gives the devices back", func(t *testing.T) {
		_, stop, err := start(filepath.Join(dir, "nobody.sock"))
		if err == nil {
			stop()
			t.Fatal("a mapper whose DMI socket nobody serves took the devices over")
		}
		atLeast(len(got)+20, "the first instance again")
	})

	outer := t
	t.Run("a new instance takes the devices over", func(t *testing.T) {
		m, stop, err := start(cfg["dmiSocket"].(string))
		if err != nil {
			t.Fatal(err)
		}
		outer.Cleanup(stop) // polling on while the order is checked
		if err := m.Healthy(context.Background()); err != nil {
			t.Fatalf("right after Start: %v", err)
		}
		atLeast(len(got)+20, "the new instance")
		if len(m.Devices()) != 1 {
			t.Fatalf("the new instance runs %v, want the one device", m.Devices())
		}
	})

	t.Run("every number served reached devicetwin once, in order", func(t *testing.T) {
		served := dev.Served()
		atLeast(len(served), "catching up")
		first := -1
		for i, s := range served {
			if s == got[0] {
				first = i
				break
			}
		}
		if first < 0 || first > 3 {
			t.Fatalf("the first reading, %d, is served read %d", got[0], first)
		}
		for i := range served[first:] {
			if got[i] != served[first+i] {
				t.Fatalf("reading %d is %d, the device served %d: lost, duplicated or reordered\ngot %v\nserved %v", i, got[i], served[first+i], got, served[first:])
			}
		}
	})
}
