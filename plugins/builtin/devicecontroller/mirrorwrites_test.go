package devicecontroller_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	"github.com/kedge-io/kedge/sdk/message"
	"github.com/kedge-io/kedge/test/ctrlrig"
)

// statusWrites reads the API server's count of write requests to devicestatuses (by verb).
func statusWrites(t *testing.T) map[string]float64 {
	t.Helper()
	out := statusRequests(t)
	for _, verb := range []string{"GET", "LIST", "WATCH"} {
		delete(out, verb)
	}
	return out
}

// statusRequests reads the API server's count of requests for devicestatuses, from every client (by
// verb: GET, LIST, WATCH, POST, ...).
func statusRequests(t *testing.T) map[string]float64 {
	t.Helper()
	raw, err := ctrlrig.Env.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") || !strings.Contains(line, `resource="devicestatuses"`) {
			continue
		}
		i := strings.Index(line, `verb="`)
		verb := line[i+6:]
		verb = verb[:strings.IndexByte(verb, '"')]
		v, _ := strconv.ParseFloat(strings.TrimSpace(line[strings.LastIndexByte(line, '}')+1:]), 64)
		out[verb] += v
	}
	return out
}

func delta(a, b map[string]float64) string {
	var parts []string
	for k, v := range b {
		if d := v - a[k]; d != 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f", k, d))
		}
	}
	return strings.Join(parts, ", ")
}

// TestDeviceStatusMirrorCostsOnePatchPerReportAndNothingAfterARestart counts the writes to
// DeviceStatus objects at the real API server: once the controller created a Device's DeviceStatus,
// each status report that changes the Device is one merge patch of it (no replace, none for the
// Device's informer event that follows the status write), and a second controller starting over an
// up-to-date DeviceStatus (a cloudcore restart) writes nothing.
func TestDeviceStatusMirrorCostsOnePatchPerReportAndNothingAfterARestart(t *testing.T) {
	r := newRig(t)
	a := r.Node("a")
	r.join(a)
	r.model("m")
	r.device("d", "m", a, "20")
	r.WaitSent(message.OpInsert, res(a, r.NS, "device", "d"))
	eventually(t, "DeviceStatus d created", func() (bool, string) {
		ds := &v1beta1.DeviceStatus{}
		err := api.Get().Namespace(r.NS).Resource(v1beta1.ResourceDeviceStatuses).Name("d").Do(context.Background()).Into(ds)
		return err == nil, fmt.Sprint(err)
	})
	before := statusWrites(t)
	const reports = 3
	for i := 1; i <= reports; i++ {
		v := fmt.Sprintf("2%d.5", i)
		if resp := r.report(a, "d", devicecontroller.DeviceStatusReport{Twins: []v1beta1.Twin{twin("temperature", v, int64(1000*i))}}); resp.Route.Operation == message.OpError {
			t.Fatalf("report %d refused: %s", i, resp.Content)
		}
		eventually(t, "the Device's informer copy shows report "+strconv.Itoa(i), func() (bool, string) {
			d := r.get("d")
			return reported(d, "temperature") == v, reported(d, "temperature")
		})
	}
	// The informer event of the last status write has arrived (the rig's Device copy shows it) but may
	// be handled just now: the report answers came after the mirror writes, so what follows is settled
	// by a further report that changes nothing.
	if resp := r.report(a, "d", devicecontroller.DeviceStatusReport{Twins: []v1beta1.Twin{twin("temperature", "23.5", 3000)}}); resp.Route.Operation == message.OpError {
		t.Fatalf("repeat refused: %s", resp.Content)
	}
	after := statusWrites(t)
	if got := after["PATCH"] - before["PATCH"]; got != reports || after["PUT"] != before["PUT"] || after["POST"] != before["POST"] {
		t.Fatalf("%d reports cost these DeviceStatus writes: %s; want %d PATCH and nothing else", reports, delta(before, after), reports)
	}

	// A second controller (cloudcore restarted) syncs every Device and finds DeviceStatus d current:
	// d is not written again (its resourceVersion stays). It has handled every Device once the count
	// of its DeviceStatus results reaches the number of Devices.
	getDS := func() *v1beta1.DeviceStatus {
		ds := &v1beta1.DeviceStatus{}
		if err := api.Get().Namespace(r.NS).Resource(v1beta1.ResourceDeviceStatuses).Name("d").Do(context.Background()).Into(ds); err != nil {
			t.Fatal(err)
		}
		return ds
	}
	rv := getDS().ResourceVersion
	all, err := ctrlrig.Dynamic.Resource(devGR).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	info, _ := sdk.Lookup(devicecontroller.Name)
	h2 := sdktest.Run(t, info, map[string]any{"kubeconfig": ctrlrig.Env.Kubeconfig, "inventoryWait": "300ms"}, sdktest.Capture("cloudhub"))
	eventually(t, "the second controller handled every Device's DeviceStatus", func() (bool, string) {
		fams, _ := h2.Metrics.Gather()
		done := 0.0
		for _, f := range fams {
			if f.GetName() == "kedge_devicecontroller_devicestatus_writes_total" {
				for _, m := range f.GetMetric() {
					done += m.GetCounter().GetValue()
				}
			}
		}
		return done >= float64(len(all.Items)), fmt.Sprintf("%.0f of %d", done, len(all.Items))
	})
	if now := getDS().ResourceVersion; now != rv {
		t.Fatalf("a restarted controller rewrote the up-to-date DeviceStatus d (resourceVersion %s -> %s)", rv, now)
	}
}
