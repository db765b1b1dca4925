package mapperbench

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbtcp"
)

// The benchmarks' rig, checked in make test: the mapper reads the libmodbus server without errors,
// and each register change written by another client reaches devicetwin's store as the reported value.
func TestBenchRigReadsRegistersAndStoresEachChangeInDevicetwin(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (gcc, libmodbus): skipped with -short")
	}
	addr := startServer(t)
	r := newRig(t)
	s := r.watchTwins(t, "lat")
	setupReads(t, r, addr, readCase{devices: 2, props: 3, cycle: 5 * time.Millisecond})
	r.addDevice(t, "lat", addr, 1, 40, 10*time.Millisecond, true)
	waitFor(t, "100 reads", 30*time.Second, func() (bool, string) {
		n := r.counter(t, "kedge_mapper_reads_total", nil)
		return n >= 100, fmt.Sprint(n)
	})
	if e := r.counter(t, "kedge_mapper_read_errors_total", nil); e != 0 {
		t.Fatalf("%v read errors against the libmodbus server", e)
	}
	if _, ok := s.wait("1040", 30*time.Second); !ok { // holding register 40's initial value
		t.Fatal("the register's initial value 1040 never reached devicetwin")
	}
	dev := mbtcp.NewClient(addr, mbtcp.Options{UnitID: 1})
	defer dev.Close()
	for _, v := range []uint16{7, 8, 65535} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := dev.WriteSingleRegister(ctx, 40, v)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := s.wait(strconv.Itoa(int(v)), 30*time.Second); !ok {
			t.Fatalf("register value %d not stored in devicetwin within 30s", v)
		}
	}
}
