package mbrtu_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kedge-io/kedge/plugins/mappers/modbus/internal/mbserver"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbrtu"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbtcp"
)

func newClient(t testing.TB, port string, opts mbrtu.Options) *mbrtu.Client {
	t.Helper()
	c, err := mbrtu.NewClient(mbrtu.Line{Port: port, BaudRate: 115200, Parity: "even"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readRegs(ctx context.Context, c *mbrtu.Client, unit byte, fc mbtcp.FunctionCode, addr, qty uint16) ([]uint16, error) {
	req, err := mbtcp.NewReadRequest(fc, addr, qty)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(ctx, unit, req)
	return resp.Registers, err
}

func TestTwoSlavesOnOneLineAnswerReadsAndWritesOfTheirOwn(t *testing.T) {
	bus := mbserver.StartBus(t, 115200, "E", 1, 2)
	c := newClient(t, bus.MasterPort, mbrtu.Options{Timeout: 5 * time.Second})
	ctx := context.Background()
	for _, unit := range []byte{1, 2} {
		regs, err := readRegs(ctx, c, unit, mbtcp.ReadHoldingRegisters, 3, 2)
		if err != nil {
			t.Fatalf("unit %d: %v", unit, err)
		}
		if want := []uint16{uint16(1000*int(unit) + 3), uint16(1000*int(unit) + 4)}; regs[0] != want[0] || regs[1] != want[1] {
			t.Fatalf("unit %d holding 3..4 = %v, want %v", unit, regs, want)
		}
	}
	ir, err := readRegs(ctx, c, 1, mbtcp.ReadInputRegisters, 10, 2)
	if err != nil {
		t.Fatal(err)
	}
	if f := math.Float32frombits(uint32(ir[0])<<16 | uint32(ir[1])); f != 23.75 {
		t.Fatalf("float32 at input 10 = %v, want 23.75", f)
	}
	bits, err := c.Do(ctx, 2, mustRead(t, mbtcp.ReadCoils, 0, 4))
	if err != nil || fmt.Sprint(bits.Bits) != "[true false false true]" {
		t.Fatalf("coils 0..3 of unit 2 = %v, %v", bits.Bits, err)
	}
	// Writes reach only the addressed slave.
	if _, err := c.Do(ctx, 2, mbtcp.NewWriteSingleRegister(5, 4242)); err != nil {
		t.Fatal(err)
	}
	multi, _ := mbtcp.NewWriteMultipleRegisters(6, []uint16{7, 8})
	if _, err := c.Do(ctx, 2, multi); err != nil {
		t.Fatal(err)
	}
	two, _ := readRegs(ctx, c, 2, mbtcp.ReadHoldingRegisters, 5, 3)
	one, _ := readRegs(ctx, c, 1, mbtcp.ReadHoldingRegisters, 5, 1)
	if fmt.Sprint(two) != "[4242 7 8]" || fmt.Sprint(one) != "[1005]" {
		t.Fatalf("after writes to unit 2: unit 2 holds %v (want [4242 7 8]), unit 1 holds %v (want [1005])", two, one)
	}
	// An exception is an answer, not a line fault.
	_, err = readRegs(ctx, c, 1, mbtcp.ReadHoldingRegisters, 99, 5)
	var exc *mbtcp.ExceptionError
	if !errors.As(err, &exc) || exc.Code != mbtcp.IllegalDataAddress {
		t.Fatalf("read past the table: %v, want an illegal data address exception", err)
	}
	if s := c.Stats(); s.CRCErrors != 0 || s.Timeouts != 0 || s.Opens != 1 {
		t.Fatalf("stats %+v, want a clean line opened once", s)
	}
}

func mustRead(t *testing.T, fc mbtcp.FunctionCode, addr, qty uint16) mbtcp.Request {
	t.Helper()
	r, err := mbtcp.NewReadRequest(fc, addr, qty)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestADamagedAnswerIsRetriedAndCounted(t *testing.T) {
	bus := mbserver.StartBus(t, 115200, "E", 1)
	c := newClient(t, bus.MasterPort, mbrtu.Options{Timeout: 5 * time.Second, Retries: 2})
	ctx := context.Background()
	if _, err := readRegs(ctx, c, 1, mbtcp.ReadHoldingRegisters, 0, 2); err != nil {
		t.Fatal(err)
	}
	bus.FlipResponses(1)
	regs, err := readRegs(ctx, c, 1, mbtcp.ReadHoldingRegisters, 0, 2)
	if err != nil || fmt.Sprint(regs) != "[1000 1001]" {
		t.Fatalf("read after one damaged answer = %v, %v; want the retry's [1000 1001]", regs, err)
	}
	s := c.Stats()
	if bus.Flipped() != 1 || s.CRCErrors+s.BadFrames != 1 || s.Retries != 1 {
		t.Fatalf("flipped %d, stats %+v: want one damaged answer counted and one retry", bus.Flipped(), s)
	}
	// More damage than retries: the caller gets the CRC error.
	bus.FlipResponses(3)
	_, err = readRegs(ctx, c, 1, mbtcp.ReadHoldingRegisters, 0, 2)
	if err == nil || !strings.Contains(err.Error(), "CRC") && !strings.Contains(err.Error(), "does not fit") {
		t.Fatalf("three damaged answers in a row: %v, want a CRC error", err)
	}
	if regs, err := readRegs(ctx, c, 1, mbtcp.ReadHoldingRegisters, 0, 2); err != nil || fmt.Sprint(regs) != "[1000 1001]" {
		t.Fatalf("the line did not recover after damage stopped: %v, %v", regs, err)
	}
}

func TestASilentSlaveTimesOutWithoutStallingTheOtherSlave(t *testing.T) {
	bus := mbserver.StartBus(t, 115200, "E", 1, 2)
	timeout := 300 * time.Millisecond
	c := newClient(t, bus.MasterPort, mbrtu.Options{Timeout: timeout})
	// Warm up both (the first request on a loaded machine can be slow).
	for _, u := range []byte{1, 2} {
		deadline := time.Now().Add(time.Minute)
		for {
			if _, err := readRegs(context.Background(), c, u, mbtcp.ReadHoldingRegisters, 0, 1); err == nil {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("unit %d never answered: %v", u, err)
			}
		}
	}
	bus.Silence(2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ok1, fail1, timeouts2 atomic.Int64
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // unit 2, silent: every request times out
		defer wg.Done()
		for ctx.Err() == nil {
			if _, err := readRegs(ctx, c, 2, mbtcp.ReadHoldingRegisters, 0, 1); err != nil && ctx.Err() == nil {
				if !strings.Contains(err.Error(), "no answer within") {
					t.Errorf("silent unit 2: %v, want a timeout", err)
				}
				timeouts2.Add(1)
			}
		}
	}()
	go func() { // unit 1 keeps answering between unit 2's timeouts
		defer wg.Done()
		for ctx.Err() == nil {
			if regs, err := readRegs(ctx, c, 1, mbtcp.ReadHoldingRegisters, 0, 1); err == nil && regs[0] == 1000 {
				ok1.Add(1)
			} else if ctx.Err() == nil {
				fail1.Add(1)
				t.Errorf("unit 1 while unit 2 is silent: %v %v", regs, err)
			}
		}
	}()
	for deadline := time.Now().Add(2 * time.Minute); timeouts2.Load() < 5 || ok1.Load() < 5; {
		if time.Now().After(deadline) {
			t.Fatalf("after 2 min: unit 1 answered %d times, unit 2 timed out %d times", ok1.Load(), timeouts2.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if s := c.Stats(); s.Timeouts < uint64(timeouts2.Load()) || fail1.Load() != 0 {
		t.Fatalf("stats %+v, unit 2 timeouts seen %d, unit 1 failures %d", s, timeouts2.Load(), fail1.Load())
	}
	t.Logf("unit 1: %d reads answered; unit 2: %d timeouts of %s", ok1.Load(), timeouts2.Load(), timeout)
}

func TestAMissingOrNonTerminalDeviceIsAClearError(t *testing.T) {
	for _, tc := range []struct{ port, want string }{
		{"/dev/nonexistent-tty", "open serial line /dev/nonexistent-tty"},
		{"/dev/null", "not a terminal device"},
	} {
		c := newClient(t, tc.port, mbrtu.Options{Timeout: time.Second})
		_, err := readRegs(context.Background(), c, 1, mbtcp.ReadHoldingRegisters, 0, 1)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.port, err, tc.want)
		}
	}
}

// BenchmarkRTUReadHoldingRegisters reads 2 holding registers from a libmodbus RTU slave over a
// socat pty pair at 115200 8E1, sequentially, and reports reads/s beside the line's theoretical
// maximum (a pty has no line rate: the t3.5 silences and the round trip bound it).
func BenchmarkRTUReadHoldingRegisters(b *testing.B) {
	a, z := mbserver.PairPorts(b)
	mbserver.StartRTU(b, mbserver.BuildRTU(b, b.TempDir()), z, 115200, "E", 1)
	c := newClient(b, a, mbrtu.Options{Timeout: 5 * time.Second})
	ctx := context.Background()
	if _, err := readRegs(ctx, c, 1, mbtcp.ReadHoldingRegisters, 0, 2); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := readRegs(ctx, c, 1, mbtcp.ReadHoldingRegisters, 0, 2); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "reads/s")
	// 8-byte request + 9-byte answer, 11 bits a character at 8E1, plus two t3.5 silences (1.75 ms).
	line := c.Line()
	perRead := 17*line.CharTime() + 2*line.Silence()
	b.ReportMetric(float64(time.Second)/float64(perRead), "line-max-reads/s")
}
