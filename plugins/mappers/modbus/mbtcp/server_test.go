package mbtcp_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kedge-io/kedge/plugins/mappers/modbus/internal/mbserver"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbtcp"
)

// The libmodbus server (testdata/server.c) holds 100 of each table:
//
//	coil i = (i%3 == 0), discrete input i = (i%2 == 1), holding register i = 1000+i,
//	input registers: 0 int16 -1234 | 1 uint16 54321 | 2-3 int32 -123456789 | 4-5 uint32 3000000000
//	10/12/14/16 float32 3.14159 ABCD/CDAB/BADC/DCBA | 20 int16 -1234 BA | 22/24/26 int32 CDAB/BADC/DCBA
//	(other input registers i hold i).

func newClient(t *testing.T, addr string) *mbtcp.Client {
	t.Helper()
	c := mbtcp.NewClient(addr, mbtcp.Options{UnitID: 1, Timeout: 2 * time.Second})
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestLibmodbusServerAnswersEveryFunctionCode(t *testing.T) {
	srv := mbserver.Start(t)
	c := newClient(t, srv.Addr())
	ctx := ctxT(t)

	coils, err := c.ReadCoils(ctx, 0, 10)
	if err != nil {
		t.Fatalf("FC1: %v", err)
	}
	for i, b := range coils {
		if b != (i%3 == 0) {
			t.Fatalf("FC1 coil %d = %v", i, b)
		}
	}
	inputs, err := c.ReadDiscreteInputs(ctx, 3, 9)
	if err != nil {
		t.Fatalf("FC2: %v", err)
	}
	for i, b := range inputs {
		if b != ((i+3)%2 == 1) {
			t.Fatalf("FC2 input %d = %v", i+3, b)
		}
	}
	hr, err := c.ReadHoldingRegisters(ctx, 40, 3)
	if err != nil || fmt.Sprint(hr) != "[1040 1041 1042]" {
		t.Fatalf("FC3: %v %v", hr, err)
	}
	ir, err := c.ReadInputRegisters(ctx, 50, 2)
	if err != nil || fmt.Sprint(ir) != "[50 51]" {
		t.Fatalf("FC4: %v %v", ir, err)
	}
	if err := c.WriteSingleCoil(ctx, 1, true); err != nil {
		t.Fatalf("FC5: %v", err)
	}
	if got, _ := c.ReadCoils(ctx, 1, 1); !got[0] {
		t.Fatal("FC5: coil 1 still off")
	}
	if err := c.WriteSingleRegister(ctx, 7, 0xBEEF); err != nil {
		t.Fatalf("FC6: %v", err)
	}
	if got, _ := c.ReadHoldingRegisters(ctx, 7, 1); got[0] != 0xBEEF {
		t.Fatalf("FC6: register 7 = %#x", got[0])
	}
	pattern := []bool{true, true, false, true, false, false, false, true, true, false, true}
	if err := c.WriteMultipleCoils(ctx, 60, pattern); err != nil {
		t.Fatalf("FC15: %v", err)
	}
	if got, _ := c.ReadCoils(ctx, 60, uint16(len(pattern))); fmt.Sprint(got) != fmt.Sprint(pattern) {
		t.Fatalf("FC15: coils %v, want %v", got, pattern)
	}
	if err := c.WriteMultipleRegisters(ctx, 90, []uint16{1, 2, 65535}); err != nil {
		t.Fatalf("FC16: %v", err)
	}
	if got, _ := c.ReadHoldingRegisters(ctx, 90, 3); fmt.Sprint(got) != "[1 2 65535]" {
		t.Fatalf("FC16: registers %v", got)
	}
	if n := c.Dials(); n != 1 {
		t.Fatalf("%d connections opened, want 1 reused", n)
	}
}

func TestLibmodbusServerValuesOfEveryTypeAndOrder(t *testing.T) {
	srv := mbserver.Start(t)
	c := newClient(t, srv.Addr())
	ctx := ctxT(t)
	pi := float64(float32(3.14159))
	for _, tc := range []struct {
		name string
		addr uint16
		spec mbtcp.ValueSpec
		want float64
	}{
		{"int16", 0, mbtcp.ValueSpec{Type: mbtcp.Int16}, -1234},
		{"int16 swapped bytes", 20, mbtcp.ValueSpec{Type: mbtcp.Int16, SwapByte: true}, -1234},
		{"uint16", 1, mbtcp.ValueSpec{Type: mbtcp.Uint16}, 54321},
		{"uint16 scaled", 1, mbtcp.ValueSpec{Type: mbtcp.Uint16, Scale: 0.01, Offset: 1}, 544.21},
		{"int32 ABCD", 2, mbtcp.ValueSpec{Type: mbtcp.Int32}, -123456789},
		{"int32 CDAB", 22, mbtcp.ValueSpec{Type: mbtcp.Int32, SwapWord: true}, -123456789},
		{"int32 BADC", 24, mbtcp.ValueSpec{Type: mbtcp.Int32, SwapByte: true}, -123456789},
		{"int32 DCBA", 26, mbtcp.ValueSpec{Type: mbtcp.Int32, SwapByte: true, SwapWord: true}, -123456789},
		{"uint32", 4, mbtcp.ValueSpec{Type: mbtcp.Uint32}, 3000000000},
		{"float32 ABCD", 10, mbtcp.ValueSpec{Type: mbtcp.Float32}, pi},
		{"float32 CDAB", 12, mbtcp.ValueSpec{Type: mbtcp.Float32, SwapWord: true}, pi},
		{"float32 BADC", 14, mbtcp.ValueSpec{Type: mbtcp.Float32, SwapByte: true}, pi},
		{"float32 DCBA", 16, mbtcp.ValueSpec{Type: mbtcp.Float32, SwapByte: true, SwapWord: true}, pi},
	} {
		t.Run("read "+tc.name, func(t *testing.T) {
			regs, err := c.ReadInputRegisters(ctx, tc.addr, uint16(tc.spec.Type.Registers()))
			if err != nil {
				t.Fatal(err)
			}
			got, err := tc.spec.Decode(regs)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(got-tc.want) > 1e-9 {
				t.Fatalf("%s at input register %d = %v, want %v", tc.name, tc.addr, got, tc.want)
			}
		})
		// Writing the value to holding registers and reading it back must store the same bytes the
		// server was given in C for that layout.
		t.Run("write "+tc.name, func(t *testing.T) {
			regs, err := tc.spec.Encode(tc.want)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.WriteMultipleRegisters(ctx, 30, regs); err != nil {
				t.Fatal(err)
			}
			back, err := c.ReadHoldingRegisters(ctx, 30, uint16(len(regs)))
			if err != nil {
				t.Fatal(err)
			}
			ref, _ := c.ReadInputRegisters(ctx, tc.addr, uint16(len(regs)))
			if tc.spec.Scale == 0 && fmt.Sprint(back) != fmt.Sprint(ref) {
				t.Fatalf("wrote %04x, server's own layout is %04x", back, ref)
			}
			got, _ := tc.spec.Decode(back)
			if math.Abs(got-tc.want) > 1e-9 {
				t.Fatalf("read back %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLibmodbusServerWrongAddressIsIllegalDataAddress(t *testing.T) {
	srv := mbserver.Start(t)
	c := newClient(t, srv.Addr())
	ctx := ctxT(t)
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"read holding registers past the table", func() error { _, err := c.ReadHoldingRegisters(ctx, 99, 2); return err }},
		{"read coils at 500", func() error { _, err := c.ReadCoils(ctx, 500, 1); return err }},
		{"write register at 100", func() error { return c.WriteSingleRegister(ctx, 100, 1) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var exc *mbtcp.ExceptionError
			if !errors.As(err, &exc) || exc.Code != mbtcp.IllegalDataAddress {
				t.Fatalf("error %v, want an IllegalDataAddress exception", err)
			}
		})
	}
	// The connection survives exceptions.
	if _, err := c.ReadHoldingRegisters(ctx, 0, 1); err != nil {
		t.Fatal(err)
	}
	if n := c.Dials(); n != 1 {
		t.Fatalf("%d connections opened, want the one connection kept across exceptions", n)
	}
}

func TestClientTimesOutAgainstAServerThatNeverAnswers(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	var held sync.WaitGroup
	held.Add(1)
	go func() {
		defer held.Done()
		conn, err := lis.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 512)
		for { // read and never answer, until the client hangs up
			if _, err := conn.Read(buf); err != nil {
				conn.Close()
				return
			}
		}
	}()
	c := mbtcp.NewClient(lis.Addr().String(), mbtcp.Options{UnitID: 1, Timeout: 100 * time.Millisecond})
	_, err = c.ReadHoldingRegisters(context.Background(), 0, 1)
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() || !strings.Contains(err.Error(), "no answer within 100ms") {
		t.Fatalf("error %v, want a timeout naming the 100ms budget", err)
	}
	c.Close()
	held.Wait()

	// A cancelled context ends a request at once too, whatever the timeout.
	lis2, _ := net.Listen("tcp", "127.0.0.1:0")
	defer lis2.Close()
	go func() {
		if conn, err := lis2.Accept(); err == nil {
			defer conn.Close()
			conn.Read(make([]byte, 512))
			conn.Read(make([]byte, 512))
		}
	}()
	c2 := mbtcp.NewClient(lis2.Addr().String(), mbtcp.Options{UnitID: 1, Timeout: time.Hour})
	defer c2.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	if _, err := c2.ReadHoldingRegisters(ctx, 0, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
}

func TestClientReconnectsAfterTheServerRestarts(t *testing.T) {
	srv := mbserver.Start(t)
	c := newClient(t, srv.Addr())
	ctx := ctxT(t)
	if err := c.WriteSingleRegister(ctx, 5, 77); err != nil {
		t.Fatal(err)
	}
	srv.Restart()
	// The old connection is dead; the client notices, reconnects and retries once.
	got, err := c.ReadHoldingRegisters(ctx, 5, 1)
	if err != nil {
		t.Fatalf("first read after the restart: %v", err)
	}
	if got[0] != 1005 {
		t.Fatalf("register 5 = %d after restart, want the fresh server's 1005", got[0])
	}
	if n := c.Dials(); n != 2 {
		t.Fatalf("%d connections opened, want 2", n)
	}
	// A server that is down is an error, and the client recovers once it is back.
	srv.Stop()
	if _, err := c.ReadHoldingRegisters(ctx, 5, 1); err == nil || !strings.Contains(err.Error(), "connect") && !strings.Contains(err.Error(), "EOF") && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("read from a stopped server: %v", err)
	}
	srv.Restart()
	if _, err := c.ReadHoldingRegisters(ctx, 5, 1); err != nil {
		t.Fatalf("read after the server came back: %v", err)
	}
}

func TestConcurrentCallersAreSerialisedOnOneConnection(t *testing.T) {
	srv := mbserver.Start(t)
	c := newClient(t, srv.Addr())
	ctx := ctxT(t)
	const callers, each = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addr := uint16(g)
			for i := range each {
				v := uint16(g*1000 + i)
				if err := c.WriteSingleRegister(ctx, addr, v); err != nil {
					errs <- err
					return
				}
				got, err := c.ReadHoldingRegisters(ctx, addr, 1)
				if err != nil {
					errs <- err
					return
				}
				if got[0] != v {
					errs <- fmt.Errorf("caller %d read %d, wrote %d", g, got[0], v)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := c.Dials(); n != 1 {
		t.Fatalf("%d connections opened, want 1 shared", n)
	}
}

func TestMbpollReadsWhatTheClientWrote(t *testing.T) {
	mbpoll, err := exec.LookPath("mbpoll")
	if err != nil {
		if out, err := exec.Command("apt-get", "install", "-y", "mbpoll").CombinedOutput(); err != nil {
			t.Skipf("mbpoll is not installed and apt-get install failed: %v\n%s", err, out)
		}
		if mbpoll, err = exec.LookPath("mbpoll"); err != nil {
			t.Skip("mbpoll not found after install")
		}
	}
	srv := mbserver.Start(t)
	c := newClient(t, srv.Addr())
	ctx := ctxT(t)
	if err := c.WriteSingleRegister(ctx, 42, 31337); err != nil {
		t.Fatal(err)
	}
	// run calls mbpoll with options, the host, then values to write (after "--" when given).
	run := func(opts []string, values ...string) string {
		t.Helper()
		args := append([]string{"-m", "tcp", "-p", fmt.Sprint(srv.Port), "-a", "1", "-0", "-1", "-o", "2"}, opts...)
		args = append(args, "127.0.0.1")
		if len(values) > 0 {
			args = append(append(args, "--"), values...)
		}
		out, err := exec.CommandContext(ctx, mbpoll, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("mbpoll %v: %v\n%s", opts, err, out)
		}
		return string(out)
	}
	// mbpoll (a client nobody here wrote) reads what our client wrote...
	if out := run([]string{"-t", "4", "-r", "42", "-c", "1"}); !strings.Contains(out, "[42]: \t31337") {
		t.Fatalf("mbpoll did not read 31337 at holding register 42:\n%s", out)
	}
	// ...and what it writes, our client reads.
	run([]string{"-t", "0", "-r", "88"}, "1")
	run([]string{"-t", "4", "-r", "43"}, "65534")
	got, err := c.ReadHoldingRegisters(ctx, 43, 1)
	if err != nil || int16(got[0]) != -2 {
		t.Fatalf("holding register 43 after mbpoll wrote 65534 (int16 -2): %v %v", got, err)
	}
	coil, err := c.ReadCoils(ctx, 88, 1)
	if err != nil || !coil[0] {
		t.Fatalf("coil 88 after mbpoll set it: %v %v", coil, err)
	}
}
