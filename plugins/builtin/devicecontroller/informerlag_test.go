package devicecontroller_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	"github.com/kedge-io/kedge/sdk/message"
	"github.com/kedge-io/kedge/test/ctrlrig"
)

// lagRig is a controller whose instance the test holds (to read and set its informers' copies), its
// DeviceStatus requests counted, with node a connected and Device d of model m bound to it.
type lagRig struct {
	*rig
	m     *devicecontroller.Module
	count *apiCounter
	node  string
}

func newLagRig(t *testing.T) *lagRig {
	t.Helper()
	ns := ctrlrig.Namespace(t, 45)
	got := make(chan *devicecontroller.Module, 1)
	count := &apiCounter{}
	h := sdktest.Run(t, devicecontroller.InfoWithClient(count.config(ctrlrig.Env.Config), func(m *devicecontroller.Module) { got <- m }),
		map[string]any{"kubeconfig": ctrlrig.Env.Kubeconfig, "inventoryWait": "300ms"}, sdktest.Capture("cloudhub"))
	lr := &lagRig{rig: &rig{&ctrlrig.Rig{T: t, H: h, Hub: h.Captured("cloudhub"), NS: ns}}, m: <-got, count: count}
	lr.node = lr.Node("a")
	lr.join(lr.node)
	lr.model("m")
	lr.device("d", "m", lr.node, "20")
	lr.WaitSent(message.OpInsert, res(lr.node, ns, "device", "d"))
	lr.settled("DeviceStatus d created")
	return lr
}

// statusD reads DeviceStatus d.
func (lr *lagRig) statusD() *v1beta1.DeviceStatus {
	lr.T.Helper()
	ds := &v1beta1.DeviceStatus{}
	if err := api.Get().Namespace(lr.NS).Resource(v1beta1.ResourceDeviceStatuses).Name("d").Do(context.Background()).Into(ds); err != nil {
		lr.T.Fatal(err)
	}
	return ds
}

// settled waits until the controller's DeviceStatus informer holds DeviceStatus d as the API does.
func (lr *lagRig) settled(what string) {
	lr.T.Helper()
	eventually(lr.T, what+", in the controller's DeviceStatus informer", func() (bool, string) {
		ds := &v1beta1.DeviceStatus{}
		if err := api.Get().Namespace(lr.NS).Resource(v1beta1.ResourceDeviceStatuses).Name("d").Do(context.Background()).Into(ds); err != nil {
			return false, err.Error()
		}
		rv, ok := lr.m.StatusCopyVersion(lr.NS, "d")
		return ok && fmt.Sprint(rv) == ds.ResourceVersion, fmt.Sprintf("informer at %d (%v), API at %s", rv, ok, ds.ResourceVersion)
	})
}

// reportPlain reports temperature v without a timestamp (taken in arrival order, so a value can come
// back exactly as it was) and waits until the controller's Device copy shows it.
func (lr *lagRig) reportPlain(v string) {
	lr.T.Helper()
	rep := devicecontroller.DeviceStatusReport{Twins: []v1beta1.Twin{{PropertyName: "temperature", Reported: v1beta1.TwinProperty{Value: v}}}}
	if resp := lr.report(lr.node, "d", rep); resp.Route.Operation == message.OpError {
		lr.T.Fatalf("report %s refused: %s", v, resp.Content)
	}
	eventually(lr.T, "the controller's Device d shows temperature "+v, func() (bool, string) {
		d := lr.m.DeviceCopy(lr.NS, "d")
		return d != nil && reported(d, "temperature") == v, ""
	})
}

// The DeviceStatus informer's copy may be older than the controller's own last write (its watch event
// still on the way). The controller then compares with what it wrote, not with the copy: a report
// that brings the status back to what the old copy shows is written. (The informer's lag is made
// certain here: the test puts the older copy back into its store after the newer one arrived.)
func TestMirrorComparesWithItsOwnLastWriteWhileTheInformerCopyIsOlder(t *testing.T) {
	lr := newLagRig(t)
	lr.reportPlain("21")
	lr.settled("the report 21")
	at21 := lr.statusD()
	lr.reportPlain("22")
	lr.settled("the report 22")
	if err := lr.m.PutStatusCopy(at21); err != nil {
		t.Fatal(err)
	}
	before := lr.count.snapshot()
	lr.reportPlain("21") // Device.status as it was at 21: what the (older) informer copy shows
	if got := statusTemperature(*lr.statusD()); got != "21" {
		t.Fatalf("DeviceStatus d holds temperature %q after the report 21; want 21 (the controller compared with the informer's older copy, not with its own last write)", got)
	}
	if got := since(before, lr.count.snapshot(), lr.NS); got["PATCH"] != 1 || len(got) != 1 {
		t.Fatalf("DeviceStatus requests for the report: %v; want one PATCH", got)
	}
}

// A DeviceStatus changed by someone else after the controller's last write (the informer's copy is
// newer than that write) is compared as it now is: the next report puts back what Device.status
// holds, even one that changes nothing in the Device.
func TestMirrorRestoresADeviceStatusChangedByOthersAfterItsOwnWrite(t *testing.T) {
	lr := newLagRig(t)
	lr.reportPlain("21")
	lr.settled("the report 21")
	mergePatch(t, v1beta1.ResourceDeviceStatuses, lr.NS, "d", `{"status": {"state": "edited-by-hand"}}`)
	lr.settled("the edit")
	before := lr.count.snapshot()
	lr.reportPlain("21") // nothing new for the Device
	ds := lr.statusD()
	if ds.Status.State != "" || statusTemperature(*ds) != "21" {
		t.Fatalf("DeviceStatus d after a report: state %q, temperature %q; want Device d's status back (no state, 21)", ds.Status.State, statusTemperature(*ds))
	}
	if got := since(before, lr.count.snapshot(), lr.NS); got["PATCH"] != 1 || len(got) != 1 {
		t.Fatalf("DeviceStatus requests for the report: %v; want one PATCH", got)
	}
	// Settled again, a report that changes nothing costs nothing.
	lr.settled("the restore")
	before = lr.count.snapshot()
	lr.reportPlain("21")
	if got := since(before, lr.count.snapshot(), lr.NS); len(got) != 0 {
		t.Fatalf("DeviceStatus requests for an unchanged report: %v; want none", got)
	}
}
