package devicecontroller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	"github.com/kedge-io/kedge/sdk/message"
	"github.com/kedge-io/kedge/test/ctrlrig"
)

// apiCounter counts one client's requests for devicestatuses, by "<verb> <namespace>" (verb GET,
// LIST, WATCH, POST, PUT, PATCH or DELETE; namespace empty for a request across namespaces).
type apiCounter struct {
	mu sync.Mutex
	n  map[string]int
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// config is base with the module's default rate limits and every request counted.
func (c *apiCounter) config(base *rest.Config) *rest.Config {
	cfg := rest.CopyConfig(base)
	cfg.QPS, cfg.Burst = 50, 100
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			c.count(r)
			return rt.RoundTrip(r)
		})
	})
	return cfg
}

func (c *apiCounter) count(r *http.Request) {
	// /apis/devices.kubeedge.io/v1beta1[/namespaces/<ns>]/devicestatuses[/<name>]
	p := strings.Split(strings.TrimPrefix(r.URL.Path, "/apis/"+v1beta1.GroupVersion.String()+"/"), "/")
	ns := ""
	if len(p) >= 2 && p[0] == "namespaces" {
		ns, p = p[1], p[2:]
	}
	if len(p) == 0 || p[0] != v1beta1.ResourceDeviceStatuses {
		return
	}
	verb := r.Method
	if verb == http.MethodGet && len(p) == 1 {
		verb = "LIST"
		if w := r.URL.Query().Get("watch"); w == "true" || w == "1" {
			verb = "WATCH"
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[verb+" "+ns]++
}

func (c *apiCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.n)
}

// since is what was counted after before, by verb: in namespace ns only when ns is set.
func since(before, now map[string]int, ns string) map[string]int {
	out := map[string]int{}
	for k, v := range now {
		verb, kns, _ := strings.Cut(k, " ")
		if ns != "" && kns != ns {
			continue
		}
		if d := v - before[k]; d != 0 {
			out[verb] += d
		}
	}
	return out
}

// listStatuses lists the DeviceStatus objects of ns (a LIST: the tests below count GETs) by name.
func listStatuses(t *testing.T, ns string) map[string]v1beta1.DeviceStatus {
	t.Helper()
	l := &v1beta1.DeviceStatusList{}
	if err := api.Get().Namespace(ns).Resource(v1beta1.ResourceDeviceStatuses).Do(context.Background()).Into(l); err != nil {
		t.Fatal(err)
	}
	out := map[string]v1beta1.DeviceStatus{}
	for _, ds := range l.Items {
		out[ds.Name] = ds
	}
	return out
}

func statusTemperature(ds v1beta1.DeviceStatus) string {
	for _, tw := range ds.Status.Twins {
		if tw.PropertyName == "temperature" {
			return tw.Reported.Value
		}
	}
	return ""
}

func controllerOf(ds v1beta1.DeviceStatus) types.UID {
	for _, o := range ds.OwnerReferences {
		if o.Controller != nil && *o.Controller {
			return o.UID
		}
	}
	return ""
}

// devicesEverywhere counts the Devices of every namespace (a second controller syncs them all).
func devicesEverywhere(t *testing.T) int {
	t.Helper()
	all, err := ctrlrig.Dynamic.Resource(devGR).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return len(all.Items)
}

// mergePatch merge-patches the object of resource ns/name.
func mergePatch(t *testing.T, resource, ns, name, patch string) {
	t.Helper()
	if err := api.Patch(types.MergePatchType).Namespace(ns).Resource(resource).Name(name).Body([]byte(patch)).Do(context.Background()).Error(); err != nil {
		t.Fatalf("patch %s %s/%s: %v", resource, ns, name, err)
	}
}

// TestRestartedControllerReadsNoDeviceStatusAndWritesOnlyWhatChanged is a cloudcore restart over N
// Devices whose DeviceStatus objects exist: the new controller (its DeviceStatus requests counted at
// its client, GETs also at the API server) reads none of them one by one and writes only where the
// object is not what it should be — one create for a missing one, one patch for one edited by hand,
// one patch taking over one left by an earlier Device of the same name (its other owner and extensions
// kept) — and nothing for the others. After it, each changed report is one patch and an unchanged
// report nothing.
//
// KEDGE_RESTART_DEVICES sets N (default 24; the controllers then get qps and burst 2000).
func TestRestartedControllerReadsNoDeviceStatusAndWritesOnlyWhatChanged(t *testing.T) {
	n, settings := 24, map[string]any{"inventoryWait": "300ms"}
	if s := os.Getenv("KEDGE_RESTART_DEVICES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 10 {
			t.Fatalf("KEDGE_RESTART_DEVICES=%q: want a number of Devices, at least 10", s)
		}
		settings["qps"], settings["burst"] = 2000, 2000
	}
	r := &rig{ctrlrig.Start(t, devicecontroller.Name, settings, ctrlrig.Namespace(t, 45))}
	a := r.Node("a")
	r.join(a)
	r.model("m")
	names := make([]string, n)
	temps := map[string]string{}
	for i := range names {
		names[i] = fmt.Sprintf("d%05d", i)
		r.device(names[i], "m", a, "20")
	}
	for i, name := range names {
		temps[name] = fmt.Sprintf("%d.5", 20+i)
		if resp := r.report(a, name, devicecontroller.DeviceStatusReport{Twins: []v1beta1.Twin{twin("temperature", temps[name], 1000)}, State: "online"}); resp.Route.Operation == message.OpError {
			t.Fatalf("report for %s refused: %s", name, resp.Content)
		}
	}
	eventually(t, "every DeviceStatus holds its Device's report", func() (bool, string) {
		got := listStatuses(t, r.NS)
		for _, name := range names {
			if ds, ok := got[name]; !ok || statusTemperature(ds) != temps[name] || ds.Status.State != "online" {
				return false, fmt.Sprintf("%s: %+v", name, ds.Status)
			}
		}
		return true, ""
	})
	if err := r.H.Stop(); err != nil { // cloudcore goes down
		t.Fatal(err)
	}

	// While it is down: d00000's DeviceStatus is deleted, d00001's edited by hand, and Device d00002 is deleted
	// and created again (a new UID) while its DeviceStatus, which meanwhile got another owner and
	// extensions, stays.
	if err := api.Delete().Namespace(r.NS).Resource(v1beta1.ResourceDeviceStatuses).Name("d00000").Do(context.Background()).Error(); err != nil {
		t.Fatal(err)
	}
	mergePatch(t, v1beta1.ResourceDeviceStatuses, r.NS, "d00001", `{"status": {"state": "edited-by-hand"}}`)
	old := listStatuses(t, r.NS)["d00002"]
	other := metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: "keeper", UID: "11111111-2222-3333-4444-555555555555"}
	mergePatch(t, v1beta1.ResourceDeviceStatuses, r.NS, "d00002", fmt.Sprintf(`{"metadata": {"ownerReferences": [%s, %s]}, "status": {"extensions": {"note": "kept"}}}`,
		mustJSON(t, old.OwnerReferences[0]), mustJSON(t, other)))
	if err := api.Delete().Namespace(r.NS).Resource(v1beta1.ResourceDevices).Name("d00002").Do(context.Background()).Error(); err != nil {
		t.Fatal(err)
	}
	d02 := r.device("d00002", "m", a, "20")
	before := listStatuses(t, r.NS)

	// cloudcore comes back.
	var count apiCounter
	server := statusRequests(t)
	cfg := count.config(ctrlrig.Env.Config)
	if settings["qps"] != nil {
		cfg.QPS, cfg.Burst = 2000, 2000
	}
	h2 := sdktest.Run(t, devicecontroller.InfoWithClient(cfg, nil),
		map[string]any{"kubeconfig": ctrlrig.Env.Kubeconfig, "inventoryWait": "300ms"}, sdktest.Capture("cloudhub"))
	r2 := &rig{&ctrlrig.Rig{T: t, H: h2, Hub: h2.Captured("cloudhub"), NS: r.NS}}
	eventually(t, "the restarted controller handled every Device's DeviceStatus", func() (bool, string) {
		done, all := r2.Counter("kedge_devicecontroller_devicestatus_writes_total", nil), devicesEverywhere(t)
		return done >= float64(all), fmt.Sprintf("%.0f of %d", done, all)
	})
	restart := count.snapshot()
	serverGETs := statusRequests(t)["GET"] - server["GET"]
	t.Logf("restart over %d Devices (%d in this test): DeviceStatus requests of the new controller %v, in this namespace %v; GETs of devicestatuses at the API server: %.0f",
		devicesEverywhere(t), n, since(nil, restart, ""), since(nil, restart, r.NS), serverGETs)
	if got := since(nil, restart, "")["GET"]; got != 0 || serverGETs != 0 {
		t.Errorf("the restarted controller read %d DeviceStatus objects one by one (the API server counted %.0f GETs); want none: the informer knows them", got, serverGETs)
	}
	if got, want := since(nil, restart, r.NS), map[string]int{"POST": 1, "PATCH": 2}; !maps.Equal(got, want) {
		t.Errorf("DeviceStatus requests in the test's namespace after the restart: %v; want %v (create d00000, restore d00001, take over d00002)", got, want)
	}
	after := listStatuses(t, r.NS)
	for _, name := range names[3:] {
		if after[name].ResourceVersion != before[name].ResourceVersion {
			t.Errorf("the restarted controller rewrote the up-to-date DeviceStatus %s", name)
		}
	}
	if ds, ok := after["d00000"]; !ok || statusTemperature(ds) != temps["d00000"] || controllerOf(ds) == "" {
		t.Errorf("DeviceStatus d00000 after the restart: %+v; want it created with Device d00000's status", ds)
	}
	if ds := after["d00001"]; ds.Status.State != "online" || statusTemperature(ds) != temps["d00001"] {
		t.Errorf("DeviceStatus d00001 after the restart: %+v; want Device d00001's status back", ds.Status)
	}
	ds := after["d00002"]
	var owners []string
	for _, o := range ds.OwnerReferences {
		owners = append(owners, fmt.Sprintf("%s/%s %s controller=%v", o.Kind, o.Name, o.UID, o.Controller != nil && *o.Controller))
	}
	wantOwners := []string{fmt.Sprintf("Device/d00002 %s controller=true", d02.UID), fmt.Sprintf("ConfigMap/keeper %s controller=false", other.UID)}
	if !slices.Equal(owners, wantOwners) || len(ds.Status.Twins) != 0 || ds.Status.State != "" ||
		ds.Status.Extensions == nil || ds.Status.Extensions.Data["note"] != "kept" {
		t.Errorf("DeviceStatus d00002 after the restart: owners %v, status %+v; want owners %v, the new Device's (empty) status and the extensions kept", owners, ds.Status, wantOwners)
	}

	// Reports after the restart: six change their Device, the rest repeat what it holds.
	changed := names[3:9]
	for _, name := range names[3:] {
		v, ts := temps[name], int64(1000)
		if slices.Contains(changed, name) {
			v, ts = v+"1", 2000
			temps[name] = v
		}
		if resp := r2.report(a, name, devicecontroller.DeviceStatusReport{Twins: []v1beta1.Twin{twin("temperature", v, ts)}, State: "online"}); resp.Route.Operation == message.OpError {
			t.Fatalf("report for %s refused: %s", name, resp.Content)
		}
	}
	// The Device informer events of the status writes may be handled just now: one more report that
	// changes nothing, answered after them, settles what follows.
	eventually(t, "the restarted controller's Devices show the reports", func() (bool, string) {
		return reported(r.get(changed[len(changed)-1]), "temperature") == temps[changed[len(changed)-1]], ""
	})
	if resp := r2.report(a, names[n-1], devicecontroller.DeviceStatusReport{Twins: []v1beta1.Twin{twin("temperature", temps[names[n-1]], 1000)}}); resp.Route.Operation == message.OpError {
		t.Fatalf("repeat refused: %s", resp.Content)
	}
	reports := count.snapshot()
	t.Logf("%d changed and %d unchanged reports after the restart: DeviceStatus requests %v", len(changed), n-3-len(changed)+1, since(restart, reports, ""))
	if got, want := since(restart, reports, ""), map[string]int{"PATCH": len(changed)}; !maps.Equal(got, want) {
		t.Errorf("DeviceStatus requests for %d changed reports and unchanged ones: %v; want %v", len(changed), got, want)
	}
	after = listStatuses(t, r.NS)
	for _, name := range names[3:] {
		ds := after[name]
		if statusTemperature(ds) != temps[name] {
			t.Errorf("DeviceStatus %s holds temperature %q; want %q", name, statusTemperature(ds), temps[name])
		}
		if !slices.Contains(changed, name) && ds.ResourceVersion != before[name].ResourceVersion {
			t.Errorf("an unchanged report rewrote DeviceStatus %s", name)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
