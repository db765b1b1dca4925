// Package mapperbench measures the Modbus mapper (plugins/mappers/modbus: the SDK runtime of
// sdk/mapper around the Modbus driver) against a real libmodbus server, beside the real edge side of
// DMI: dmi, devicetwin and metamanager (sdk/sdktest), all in this process. See README.md.
package mapperbench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/devicetwin"
	"github.com/kedge-io/kedge/plugins/builtin/dmi"
	"github.com/kedge-io/kedge/plugins/builtin/metamanager"
	"github.com/kedge-io/kedge/plugins/mappers/modbus"
	"github.com/kedge-io/kedge/sdk"
)

// serverBin is the libmodbus server compiled once per test binary.
var (
	serverOnce sync.Once
	serverBin  string
	serverErr  error
)

// buildServer compiles plugins/mappers/modbus/testdata/server.c (a libmodbus server, 100 registers
// of each table) with gcc against Debian's libmodbus, installing gcc and libmodbus-dev when missing.
func buildServer() (string, error) {
	serverOnce.Do(func() {
		if _, err := os.Stat("/usr/include/modbus/modbus.h"); err != nil {
			install := func() ([]byte, error) {
				return exec.Command("apt-get", "install", "-y", "gcc", "libmodbus-dev").CombinedOutput()
			}
			out, err := install()
			if err != nil {
				_ = exec.Command("apt-get", "update").Run()
				out, err = install()
			}
			if err != nil {
				serverErr = fmt.Errorf("gcc and libmodbus-dev are needed (apt-get install -y gcc libmodbus-dev): %v\n%s", err, out)
				return
			}
		}
		dir, err := os.MkdirTemp("", "mapperbench")
		if err != nil {
			serverErr = err
			return
		}
		src := filepath.Join("..", "..", "plugins", "mappers", "modbus", "testdata", "server.c")
		serverBin = filepath.Join(dir, "mbserver")
		if out, err := exec.Command("gcc", "-O2", "-Wall", "-I/usr/include/modbus", "-o", serverBin, src, "-lmodbus").CombinedOutput(); err != nil {
			serverErr = fmt.Errorf("compiling %s with gcc -lmodbus: %v\n%s", src, err, out)
		}
	})
	return serverBin, serverErr
}

// startServer runs the libmodbus server on a free loopback port until tb ends; it returns its address.
func startServer(tb testing.TB) string {
	tb.Helper()
	bin, err := buildServer()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, "0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting the libmodbus server: %v", err)
	}
	line, done := make(chan string, 1), make(chan struct{})
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- l
		_ = cmd.Wait()
		close(done)
	}()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill() // the server this benchmark started, by its id
		<-done
	})
	select {
	case l := <-line:
		var port int
		if _, err := fmt.Sscanf(strings.TrimSpace(l), "LISTENING %d", &port); err != nil {
			tb.Fatalf("the libmodbus server did not report its port (got %q)", l)
		}
		return "127.0.0.1:" + strconv.Itoa(port)
	case <-time.After(30 * time.Second):
		tb.Fatal("the libmodbus server did not start within 30s")
	}
	return ""
}

// rig is the modbus mapper module beside dmi, devicetwin and metamanager; eventbus is captured, so
// each twin document devicetwin publishes after storing a reported value arrives here.
type rig struct {
	h *sdktest.Harness
}

func newRig(tb testing.TB) *rig {
	tb.Helper()
	dir, err := os.MkdirTemp("", "mb") // unix socket paths are limited to 108 bytes
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	dmiSock := filepath.Join(dir, "dmi.sock")
	mmInfo, ok := sdk.Lookup(metamanager.Name)
	if !ok {
		tb.Fatal("metamanager not registered")
	}
	h := sdktest.Run(tb, modbus.Info, map[string]any{
		"dmiSocket": dmiSock, "socket": filepath.Join(dir, "mappers", "modbus.sock"),
		"collectCycle": "1s", "healthCycle": "1s", "backoffMin": "10ms", "backoffMax": "200ms", "callTimeout": "2s"},
		// The DMI rate limit lifted: one property read every 10 ms is 100 reports/s, dmi's default limit.
		sdktest.Beside(dmi.Info, map[string]any{"socket": dmiSock, "reconcileInterval": "200ms", "callTimeout": "2s", "qps": 1e6, "burst": 1e6}),
		sdktest.Beside(mmInfo, map[string]any{"cloudSource": "edgehub", "metaServer": map[string]any{"enable": false}}),
		sdktest.Beside(devicetwin.Info, map[string]any{"flushInterval": "200ms"}),
		sdktest.Capture("edgehub", "eventbus"),
		sdktest.Logger(discardLogger()))
	return &rig{h: h}
}

func (r *rig) fromCloud(tb testing.TB, op, resource, rv string, content any) {
	tb.Helper()
	b, err := json.Marshal(content)
	if err != nil {
		tb.Fatal(err)
	}
	m := message.New("edgehub", "resource", op, resource)
	m.Header.ResourceVersion = rv
	m.Content = b
	if err := r.h.Router.Send(context.Background(), metamanager.Name, m); err != nil {
		tb.Fatal(err)
	}
}

// addDevice gives metamanager (as the cloud would) a model with props INT properties p0..pN-1 and a
// device at addr reading property i from holding register base+i every cycle.
func (r *rig) addDevice(tb testing.TB, name, addr string, props, base int, cycle time.Duration, report bool) {
	tb.Helper()
	var mprops, dprops []any
	for i := range props {
		p := "p" + strconv.Itoa(i)
		mprops = append(mprops, map[string]any{"name": p, "type": "INT", "accessMode": "ReadOnly"})
		dprops = append(dprops, map[string]any{"name": p, "reportToCloud": report, "collectCycle": cycle.Milliseconds(),
			"visitors": map[string]any{"protocolName": "modbus", "configData": map[string]any{
				"register": "HoldingRegister", "offset": base + i, "dataType": "uint16"}}})
	}
	meta := func(n string) map[string]any {
		return map[string]any{"name": n, "namespace": "default", "resourceVersion": "1"}
	}
	r.fromCloud(tb, message.OpInsert, "default/devicemodel/"+name, "1", map[string]any{
		"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel", "metadata": meta(name),
		"spec": map[string]any{"protocol": "modbus", "properties": mprops}})
	r.fromCloud(tb, message.OpInsert, "default/device/"+name, "1", map[string]any{
		"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device", "metadata": meta(name),
		"spec": map[string]any{"deviceModelRef": map[string]any{"name": name}, "nodeName": sdktest.NodeName,
			"protocol":   map[string]any{"protocolName": "modbus", "configData": map[string]any{"address": addr, "unitID": 1, "timeout": "1s"}},
			"properties": dprops}})
}

// counter sums a counter of the harness's metrics whose labels include the given ones.
func (r *rig) counter(tb testing.TB, name string, labels map[string]string) float64 {
	tb.Helper()
	mfs, err := r.h.Metrics.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, labels) {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
			n++
		}
	}
	return n == len(want)
}

// waitFor polls cond until it holds or limit passes.
func waitFor(tb testing.TB, what string, limit time.Duration, cond func() (bool, string)) {
	tb.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %s (last: %s)", what, limit, detail)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// discardLogger keeps the modules' logs out of benchmark output.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// seen is when each value of property p0 was first in a twin document devicetwin published (after
// storing it): the eventbus capture drained for the rig's lifetime.
type seen struct {
	mu    sync.Mutex
	at    map[string]time.Time
	docs  int
	wake  chan struct{}
	drain sync.WaitGroup
}

// watchTwins drains what devicetwin and metamanager send to eventbus and edgehub (captured, so they
// never block on a full mailbox) and records when each value of device's p0 was first stored.
func (r *rig) watchTwins(tb testing.TB, device string) *seen {
	s := &seen{at: map[string]time.Time{}, wake: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	topic := "$hw/events/device/" + device + "/twin/update/document"
	for _, name := range []string{"eventbus", "edgehub"} {
		c := r.h.Captured(name)
		s.drain.Add(1)
		go func() {
			defer s.drain.Done()
			for ctx.Err() == nil {
				m, err := c.Receive(100 * time.Millisecond)
				if err != nil {
					continue
				}
				now := time.Now()
				if m.Route.Resource != topic {
					continue
				}
				var doc struct {
					Twin map[string]struct {
						Current struct {
							Actual struct {
								Value *string `json:"value"`
							} `json:"actual"`
						} `json:"current"`
					} `json:"twin"`
				}
				if json.Unmarshal(m.Content, &doc) != nil {
					continue
				}
				v := doc.Twin["p0"].Current.Actual.Value
				if v == nil {
					continue
				}
				s.mu.Lock()
				s.docs++
				if _, ok := s.at[*v]; !ok {
					s.at[*v] = now
				}
				s.mu.Unlock()
				select {
				case s.wake <- struct{}{}:
				default:
				}
			}
		}()
	}
	tb.Cleanup(func() { cancel(); s.drain.Wait() })
	return s
}

// wait returns when value was first stored, waiting up to limit.
func (s *seen) wait(value string, limit time.Duration) (time.Time, bool) {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		at, ok := s.at[value]
		s.mu.Unlock()
		if ok {
			return at, true
		}
		select {
		case <-s.wake:
		case <-deadline.C:
			return time.Time{}, false
		}
	}
}
