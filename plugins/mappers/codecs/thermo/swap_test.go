package thermo_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/kedge-io/kedge/plugins/mappers/codecs/thermo"
)

// A T-100 polled every 100 ms through the mapper runtime keeps reporting while its codec is swapped
// builtin → WASM v1 → WASM v2 with the module manager's Swap (what `edgecore module swap` does):
// every count the device produced reaches devicetwin exactly once and in order, the Celsius readings
// end exactly once, where the Kelvin ones begin, and every reading the device produced after a swap
// returned was decoded by the new code. The test waits on readings, not time: a swap may take seconds
// on a busy machine (the device keeps reporting through the old codec meanwhile), so each step waits
// for readings made after its swap returned.
func TestCodecHotSwapUnderPollingLosesAndDuplicatesNoReading(t *testing.T) {
	r := newRig(t, map[string]any{}, nil)
	r.addDevice("t-1", "2", "")
	wait := 60 * time.Second // waitFor scales it by KEDGE_TEST_TIMEOUT_SCALE
	// readFrom waits until n readings the device made from count from on are in devicetwin.
	readFrom := func(from uint32, n int, what string) {
		waitFor(t, wait, fmt.Sprintf("%d readings from count %d (%s) in devicetwin", n, from, what), func() error {
			got := 0
			for _, rd := range r.of("t-1") {
				if rd.seq >= from {
					got++
				}
			}
			if got < n {
				return fmt.Errorf("%d readings", got)
			}
			return nil
		})
	}
	readFrom(0, 10, "builtin")
	type step struct {
		name          string
		g             guest
		version       int
		asked, served uint32 // the device's count when Swap was called and when it returned
	}
	steps := []step{{name: "wasm v1", g: guests.v1, version: 1}, {name: "wasm v2", g: guests.v2, version: 2}}
	for i := range steps {
		s := &steps[i]
		s.asked = r.counter("t-1").Load()
		began := time.Now()
		rep := r.swap(wasmBlock(s.g))
		s.served = r.counter("t-1").Load()
		t.Logf("swap to %s: %s → %s in %s (the device made readings %d..%d meanwhile), delivery paused %s, %d queued",
			s.name, rep.From, rep.To, time.Since(began).Round(time.Millisecond), s.asked, s.served, rep.Paused, rep.Queued)
		readFrom(s.served, 10, "made after the swap to "+s.name+" returned")
	}
	got := r.of("t-1")
	if len(got) == 0 || got[0].seq != 0 {
		t.Fatalf("first reading %+v, want count 0", got)
	}
	switches, switchedAt := 0, uint32(0)
	for i, rd := range got {
		if rd.seq != uint32(i) {
			t.Fatalf("reading %d carries count %d: a reading was lost, duplicated or reordered (%v)", i, rd.seq, got)
		}
		if i > 0 && rd.version != got[i-1].version {
			if rd.version < got[i-1].version {
				t.Fatalf("reading %d decoded by v%d after v%d took over", i, rd.version, got[i-1].version)
			}
			switches, switchedAt = switches+1, rd.seq
		}
		// The guarantee of a swap that reported success: nothing the device made after it returned
		// reaches the old code. (v1 and the builtin both decode to Celsius; the step to v1 is checked
		// by the module's runtime below.)
		for _, s := range steps {
			if rd.seq >= s.served && rd.version < s.version {
				t.Fatalf("reading %d was made after the swap to %s returned, yet decoded by v%d: the swap reported success "+
					"and the old code kept serving (swap asked at count %d, returned at %d)", rd.seq, s.name, rd.version, s.asked, s.served)
			}
		}
	}
	if switches != 1 || got[len(got)-1].version != 2 {
		t.Fatalf("versions switched %d times, last v%d; want once, to v2", switches, got[len(got)-1].version)
	}
	t.Logf("Kelvin from count %d; the swap to v2 was asked at %d and returned at %d", switchedAt, steps[1].asked, steps[1].served)
	if n := r.counterValue("kedge_mapper_read_errors_total", map[string]string{"device": "default/t-1"}); n != 0 {
		t.Fatalf("%v reads failed during the swaps", n)
	}
	for _, st := range r.mgr.Status(t.Context()) {
		if st.Name == thermo.Name {
			if st.Swaps != 2 || st.Runtime != "wasm" {
				t.Fatalf("codec status after the swaps: %+v", st)
			}
			t.Logf("measured swap gaps (a ready request waiting for an instance): %v; %d readings, all delivered", st.SwapGaps, len(got))
		}
	}
}

// A WASM codec that hangs or exits fails the reading it was decoding; the deadline kills the guest and
// a fresh instance takes the next request. A device whose every reading hangs goes offline; a device
// whose one reading hangs loses only that reading; another device keeps reporting throughout.
func TestHangingOrExitingWASMCodecFailsOnlyItsReading(t *testing.T) {
	r := newRig(t, wasmBlock(guests.faults), nil)
	r.addDevice("good", "2", "")
	r.addDevice("stuck", "3", `,"fault":"hang"`)
	r.addDevice("blip", "4", `,"fault":"hang","faultAt":5`)
	r.addDevice("crash", "5", `,"fault":"exit","faultAt":3`)
	waitFor(t, 60*time.Second, "stuck offline in devicetwin", func() error {
		if s := r.state("stuck"); s != "offline" {
			return fmt.Errorf("state %q", s)
		}
		return nil
	})
	waitFor(t, 60*time.Second, "blip and crash past their faulty readings", func() error {
		for _, d := range []string{"blip", "crash"} {
			if rs := r.of(d); len(rs) == 0 || rs[len(rs)-1].seq < 8 {
				return fmt.Errorf("%s: %v", d, rs)
			}
		}
		return nil
	})
	for _, tc := range []struct {
		device string
		lost   uint32
	}{{"blip", 5}, {"crash", 3}} {
		seen := map[uint32]bool{}
		for _, rd := range r.of(tc.device) {
			seen[rd.seq] = true
		}
		for n := uint32(0); n <= 8; n++ {
			if seen[n] == (n == tc.lost) {
				t.Fatalf("%s: reading %d reported %v; only reading %d should be missing", tc.device, n, seen[n], tc.lost)
			}
		}
	}
	good := len(r.of("good"))
	waitFor(t, 30*time.Second, "good keeps reporting", func() error {
		if n := len(r.of("good")); n < good+10 {
			return fmt.Errorf("%d readings, had %d", n, good)
		}
		return nil
	})
	for i, rd := range r.of("good") {
		if rd.seq != uint32(i) {
			t.Fatalf("good: reading %d carries count %d: a healthy device lost a reading", i, rd.seq)
		}
	}
	if s := r.state("good"); s != "online" {
		t.Fatalf("good is %q, want online", s)
	}
	if len(r.of("stuck")) != 0 {
		t.Fatalf("stuck reported %v", r.of("stuck"))
	}
	for _, reason := range []string{"deadline", "exit"} {
		if n := r.counterValue("kedge_wasm_instance_lost_total", map[string]string{"reason": reason}); n < 1 {
			t.Fatalf("kedge_wasm_instance_lost_total{reason=%q} = %v, want the guest killed and replaced", reason, n)
		}
	}
}
