package devicecontroller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	"github.com/kedge-io/kedge/sdk/kube/controller"
	"github.com/kedge-io/kedge/test/ctrlrig"
)

// benchStatuses creates n DeviceStatus objects in a new namespace, each as the controller leaves one
// after a few reports: owned by its Device, two twins with reported and observed desired values and
// their metadata, state, last online time and a Healthy condition.
func benchStatuses(b *testing.B, c *rest.RESTClient, n int) {
	b.Helper()
	ns := ctrlrig.Namespace(b, 30)
	now := metav1.NewTime(time.Date(2026, 12, 6, 5, 46, 13, 0, time.UTC))
	tp := func(v string) v1beta1.TwinProperty {
		return v1beta1.TwinProperty{Value: v, Metadata: map[string]string{"timestamp": "1796535973000", "type": "FLOAT"}}
	}
	work := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range work {
				name := fmt.Sprintf("device-%05d", i)
				ds := &v1beta1.DeviceStatus{
					ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, OwnerReferences: []metav1.OwnerReference{{APIVersion: v1beta1.GroupVersion.String(),
						Kind: "Device", Name: name, UID: types.UID(fmt.Sprintf("0b5e36a4-1c9d-4f7e-9a51-%012d", i)), Controller: ptr(true)}}},
					Status: v1beta1.DeviceStatusStatus{
						Twins: []v1beta1.Twin{
							{PropertyName: "temperature", Reported: tp(strconv.Itoa(20 + i%10)), ObservedDesired: tp("")},
							{PropertyName: "setpoint", Reported: tp("21.5"), ObservedDesired: tp("21.5")},
						},
						State: "online", LastOnlineTime: "2026-12-06T05:46:13Z",
						Conditions: []metav1.Condition{{Type: "Healthy", Status: metav1.ConditionTrue, Reason: "ReadingsAccepted", Message: "readings accepted", LastTransitionTime: now}},
					},
				}
				if err := c.Post().Namespace(ns).Resource(v1beta1.ResourceDeviceStatuses).Body(ds).Do(context.Background()).Error(); err != nil {
					select {
					case errs <- fmt.Errorf("create %s: %w", name, err):
					default:
					}
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}

func ptr[T any](v T) *T { return &v }

// informerHeap is the live heap an informer made by newInf holds once it has listed every
// DeviceStatus, per object held.
func informerHeap(b *testing.B, newInf func() cache.SharedIndexInformer) (perObject float64, objects int) {
	b.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	inf := newInf()
	stop := make(chan struct{})
	go inf.Run(stop)
	if !cache.WaitForCacheSync(stop, inf.HasSynced) {
		b.Fatal("informer did not sync")
	}
	objects = len(inf.GetStore().ListKeys())
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	close(stop)
	runtime.KeepAlive(inf)
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(objects), objects
}

var benchOnce sync.Once

// BenchmarkDeviceStatusInformerHeap measures what the controller's DeviceStatus informer (objects
// slimmed to owner, digest and resourceVersion) holds per DeviceStatus once it has listed them from
// the real API server, beside an informer keeping the whole objects. The objects are created once:
// KEDGE_BENCH_DEVICESTATUSES of them (default 1000). Run it alone:
//
//	KEDGE_BENCH_DEVICESTATUSES=10000 go test -run '^$' -bench DeviceStatusInformerHeap -benchtime 1x ./plugins/builtin/devicecontroller/
func BenchmarkDeviceStatusInformerHeap(b *testing.B) {
	ctrlrig.Skip(b)
	n := 1000
	if s := os.Getenv("KEDGE_BENCH_DEVICESTATUSES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n <= 0 {
			b.Fatalf("KEDGE_BENCH_DEVICESTATUSES=%q: want a positive number of objects", s)
		}
	}
	cfg := rest.CopyConfig(ctrlrig.Env.Config)
	cfg.QPS, cfg.Burst = 5000, 5000
	c, err := devicecontroller.NewRESTClient(cfg)
	if err != nil {
		b.Fatal(err)
	}
	benchOnce.Do(func() { benchStatuses(b, c, n) })
	var slim, full float64
	var objects int
	for b.Loop() {
		slim, objects = informerHeap(b, func() cache.SharedIndexInformer {
			inf, err := devicecontroller.NewStatusInformer(c)
			if err != nil {
				b.Fatal(err)
			}
			return inf
		})
		full, _ = informerHeap(b, func() cache.SharedIndexInformer {
			return controller.Informer(c, v1beta1.ResourceDeviceStatuses, &v1beta1.DeviceStatus{}, cache.Indexers{})
		})
	}
	b.ReportMetric(slim, "B/devicestatus")
	b.ReportMetric(full, "B/devicestatus-unslimmed")
	b.ReportMetric(float64(objects), "devicestatuses")
}

// BenchmarkDeviceStatusWatchEvent is what each DeviceStatus write costs the controller when its watch
// event comes back: decoding the object (as the informer's watch does, JSON) and slimming it.
func BenchmarkDeviceStatusWatchEvent(b *testing.B) {
	ds := &v1beta1.DeviceStatus{
		TypeMeta: metav1.TypeMeta{APIVersion: v1beta1.GroupVersion.String(), Kind: "DeviceStatus"},
		ObjectMeta: metav1.ObjectMeta{Name: "device-00001", Namespace: "factory", ResourceVersion: "123456", UID: "5f0c1c1e-8f3e-4c55-9b0a-3c1d2e4f5a6b",
			OwnerReferences: []metav1.OwnerReference{{APIVersion: v1beta1.GroupVersion.String(), Kind: "Device", Name: "device-00001", UID: "0b5e36a4-1c9d-4f7e-9a51-000000000001", Controller: ptr(true)}}},
		Status: v1beta1.DeviceStatusStatus{
			Twins: []v1beta1.Twin{
				{PropertyName: "temperature", Reported: v1beta1.TwinProperty{Value: "21.5", Metadata: map[string]string{"timestamp": "1796535973000", "type": "FLOAT"}}},
				{PropertyName: "setpoint", Reported: v1beta1.TwinProperty{Value: "21.5", Metadata: map[string]string{"timestamp": "1796535973000", "type": "FLOAT"}}},
			},
			State: "online", LastOnlineTime: "2026-12-06T05:46:13Z",
			Conditions: []metav1.Condition{{Type: "Healthy", Status: metav1.ConditionTrue, Reason: "ReadingsAccepted", Message: "readings accepted", LastTransitionTime: metav1.Now()}},
		},
	}
	raw, err := json.Marshal(ds)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			var out v1beta1.DeviceStatus
			if err := json.Unmarshal(raw, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode+slim", func(b *testing.B) {
		for b.Loop() {
			var out v1beta1.DeviceStatus
			if err := json.Unmarshal(raw, &out); err != nil {
				b.Fatal(err)
			}
			if _, err := devicecontroller.SlimStatus(&out); err != nil {
				b.Fatal(err)
			}
		}
	})
}
