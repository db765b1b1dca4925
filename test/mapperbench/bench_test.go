package mapperbench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbtcp"
)

// readCase is a load for the reads benchmark: devices × props properties, each read every cycle.
type readCase struct {
	devices, props int
	cycle          time.Duration
}

func (c readCase) String() string {
	return fmt.Sprintf("devices=%d,properties=%d,collectCycle=%s", c.devices, c.props, c.cycle)
}

// BenchmarkModbusReadsThroughMapper: one op is one successful read of a property through the mapper
// runtime (the device goroutine, the Modbus driver, a request/response to the libmodbus server, value
// decoding and formatting), counted by kedge_mapper_reads_total. Properties are not reported
// (reportToCloud false), so this is the read path alone; reads/s is what the runtime sustains.
func BenchmarkModbusReadsThroughMapper(b *testing.B) {
	addr := startServer(b)
	for _, tc := range []readCase{{1, 1, time.Millisecond}, {1, 10, time.Millisecond}, {1, 50, time.Millisecond}, {10, 10, time.Millisecond}} {
		r := newRig(b)
		setupReads(b, r, addr, tc)
		b.Run(tc.String(), func(b *testing.B) { r.measureReads(b, tc) })
		if err := r.h.Stop(); err != nil {
			b.Fatal(err)
		}
	}
}

func setupReads(tb testing.TB, r *rig, addr string, tc readCase) {
	tb.Helper()
	for d := range tc.devices {
		r.addDevice(tb, "dev-"+strconv.Itoa(d), addr, tc.props, 0, tc.cycle, false)
	}
	for d := range tc.devices {
		dev := "default/dev-" + strconv.Itoa(d)
		waitFor(tb, dev+" reading", 30*time.Second, func() (bool, string) {
			n := r.counter(tb, "kedge_mapper_reads_total", map[string]string{"device": dev})
			return n >= 1, fmt.Sprint(n)
		})
	}
}

// measureReads waits for b.N more reads and reports the rate.
func (r *rig) measureReads(b *testing.B, tc readCase) {
	reads := func() float64 { return r.counter(b, "kedge_mapper_reads_total", nil) }
	errs0 := r.counter(b, "kedge_mapper_read_errors_total", nil)
	b.ResetTimer()
	start, before := time.Now(), reads()
	var n float64
	deadline := time.Now().Add(10 * time.Minute)
	for n = reads() - before; n < float64(b.N); n = reads() - before {
		if time.Now().After(deadline) {
			b.Fatalf("%d reads: only %v within 10m", b.N, n)
		}
		time.Sleep(10 * time.Millisecond) // gathering the metrics costs CPU the reads would use
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(n/el.Seconds(), "reads/s")
	b.ReportMetric(float64(tc.devices*tc.props)*float64(time.Second)/float64(tc.cycle), "asked-reads/s")
	if e := r.counter(b, "kedge_mapper_read_errors_total", nil) - errs0; e > 0 {
		b.Fatalf("%v read errors against the libmodbus server", e)
	}
}

// BenchmarkPollToTwinLatency: one op is one change of a holding register in the libmodbus server
// (written by a separate Modbus client, as the device itself would change it) until devicetwin has
// stored the new value, read by the mapper at collectCycle and reported over DMI: the time from just
// before the write to devicetwin publishing the twin document it sends after the SQLite write.
// Each change comes at a random phase of the poll period (a random pause, untimed, before the
// write). p50-ms/p99-ms over this run's ops; the expected floor is about collectCycle/2 (the phase of the
// change within the poll period) plus the path.
func BenchmarkPollToTwinLatency(b *testing.B) {
	addr := startServer(b)
	dev := mbtcp.NewClient(addr, mbtcp.Options{UnitID: 1})
	b.Cleanup(func() { dev.Close() })
	for _, cycle := range []time.Duration{10 * time.Millisecond, 100 * time.Millisecond} {
		r := newRig(b)
		s := r.watchTwins(b, "lat")
		r.addDevice(b, "lat", addr, 1, 30, cycle, true)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		regs, err := dev.ReadHoldingRegisters(ctx, 30, 1)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		if _, ok := s.wait(strconv.Itoa(int(regs[0])), 30*time.Second); !ok {
			b.Fatalf("the register's current value %d never reached devicetwin", regs[0])
		}
		next := int(regs[0]) % 1000
		b.Run("collectCycle="+cycle.String(), func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				// The change lands at a random phase of the poll period, as a device's own changes do
				// (right after the previous value was stored it would always wait a full cycle).
				b.StopTimer()
				time.Sleep(rand.N(cycle))
				b.StartTimer()
				next = next%1000 + 1
				v := strconv.Itoa(next)
				s.forget(v)
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := dev.WriteSingleRegister(ctx, 30, uint16(next))
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				at, ok := s.wait(v, 30*time.Second)
				if !ok {
					b.Fatalf("register value %s not stored in devicetwin within 30s", v)
				}
				lat = append(lat, at.Sub(t0))
			}
			b.StopTimer()
			p50, p99 := percentiles(lat)
			b.ReportMetric(ms(p50), "p50-ms")
			b.ReportMetric(ms(p99), "p99-ms")
		})
		if err := r.h.Stop(); err != nil {
			b.Fatal(err)
		}
	}
}

func (s *seen) forget(v string) {
	s.mu.Lock()
	delete(s.at, v)
	s.mu.Unlock()
}

// percentiles returns p50 and p99 (nearest rank).
func percentiles(d []time.Duration) (time.Duration, time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return rank(0.50), rank(0.99)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
