package dmi_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	dmiv1beta1 "github.com/kedge-io/kedge/sdk/dmi/v1beta1"
)

// BenchmarkReportDeviceStates: mappers (parallel gRPC clients on the unix socket) report device
// states; each call is checked, rate-limited (limit set out of the way) and handed to the real
// devicetwin, which stores the state in SQLite and batches it for the cloud (metamanager stores it).
// Reports calls/s.
func BenchmarkReportDeviceStates(b *testing.B) {
	r := newRigCapturing(b, map[string]any{"qps": 1e9, "burst": 1 << 30, "reconcileInterval": "1h"}, "edgehub")
	r.addThermo(b, "thermo-1", "virtual")
	ctx := context.Background()
	states := []string{"online", "offline"}
	var n atomic.Int64
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if _, err := r.client.ReportDeviceStates(ctx, &dmiv1beta1.ReportDeviceStatesRequest{
				DeviceName: "thermo-1", DeviceNamespace: "default", State: states[i%2]}); err != nil {
				b.Error(fmt.Errorf("call %d: %w", i, err))
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "calls/s")
}
