package devicetwin_test

import (
	"fmt"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// BenchmarkTwinUpdateThroughMQTT: a mapper publishes reported values (QoS 1) to the embedded broker;
// each goes broker -> eventbus -> router -> devicetwin (checked against the model, stored in SQLite,
// answered on result and document) and is batched upstream. The clock stops when devicetwin has
// stored all of them. Ten devices, one property each.
func BenchmarkTwinUpdateThroughMQTT(b *testing.B) {
	r := newRig(b, nil)
	const devices = 10
	for d := range devices {
		r.addThermo(b, fmt.Sprintf("thermo-%d", d), "")
	}
	// Wait until the devices are known (an update answered for the last one).
	r.mapper.publish(b, fmt.Sprintf("$hw/events/device/thermo-%d/twin/get", devices-1), `{"event_id":"ready"}`)
	r.mapper.await(b, fmt.Sprintf("$hw/events/device/thermo-%d/twin/get/result", devices-1), `"ready"`)
	pub := newClient(b, r.broker, "bench-mapper") // not subscribed: only publishes
	before := metricValue(b, r.h, "kedge_devicetwin_twin_values_stored_total")

	b.ResetTimer()
	start := time.Now()
	// Closed loop: at most `window` updates published and not yet stored, so the measure is what the
	// pipeline sustains (an MQTT broker drops what a slow subscriber cannot take, mosquitto included).
	const window = 2000
	stored := func() float64 { return metricValue(b, r.h, "kedge_devicetwin_twin_values_stored_total") - before }
	inflight := make([]mqtt.Token, 0, 256)
	for i := range b.N {
		if i%256 == 0 {
			for float64(i)-stored() > window {
				time.Sleep(time.Millisecond)
			}
		}
		topic := fmt.Sprintf("$hw/events/device/thermo-%d/twin/update", i%devices)
		tok := pub.c.Publish(topic, 1, false, fmt.Sprintf(`{"event_id":"b%d","twin":{"temperature":{"actual":{"value":"%d.%d"}}}}`, i, i%100, i%10))
		inflight = append(inflight, tok)
		if len(inflight) == cap(inflight) {
			for _, t := range inflight {
				t.Wait()
			}
			inflight = inflight[:0]
		}
	}
	for _, t := range inflight {
		t.Wait()
	}
	waitFor(b, 5*time.Minute, "all updates stored", func() error {
		if got := stored(); got < float64(b.N) {
			return fmt.Errorf("%v of %d stored", got, b.N)
		}
		return nil
	})
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "updates/s")
}
