// Package t100sim is a sampling Acme T-100 thermometer (examples/devices/modbus-t100-*.yaml) in front
// of a real Modbus TCP server (the libmodbus server of plugins/mappers/modbus/testdata/server.c): it
// relays every request and, after each read of the T-100's three registers, writes the next count
// into them (with the project's mbtcp client, before the answer goes back), so every read a mapper
// makes returns a new count. It records the counts it served, in order, which is how the end-to-end
// tests and `make demo` prove that no reading was lost, duplicated or reordered on its way to the twin.
package t100sim

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/kedge-io/kedge/plugins/mappers/codecs/thermo/layout"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbtcp"
)

// Registers is where the T-100's count and check word sit (holding registers 30-32), as
// examples/devices/modbus-t100-device.yaml says.
const Registers = 30

// Device is one running T-100.
type Device struct {
	ln      net.Listener
	target  string
	at      uint16
	dev     *mbtcp.Client
	onServe func(count uint32)

	mu     sync.Mutex
	next   uint32
	served []uint32
	err    error
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

// Start listens on listen (host:port; port 0 picks one), writes count 1 into target's holding
// registers at `at` and serves. onServe (may be nil) is called with each count served, in order.
func Start(listen, target string, at uint16, onServe func(count uint32)) (*Device, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	d := &Device{ln: ln, target: target, at: at, dev: mbtcp.NewClient(target, mbtcp.Options{UnitID: 1}), next: 1,
		onServe: onServe, conns: map[net.Conn]bool{}}
	if err := d.put(d.next); err != nil {
		ln.Close()
		d.dev.Close()
		return nil, fmt.Errorf("writing the first count into the Modbus server at %s: %w", target, err)
	}
	d.wg.Go(d.accept)
	return d, nil
}

// Close stops serving and returns the first error the device side met, if any.
func (d *Device) Close() error {
	d.ln.Close()
	d.mu.Lock()
	for c := range d.conns {
		c.Close()
	}
	d.mu.Unlock()
	d.wg.Wait()
	d.dev.Close()
	return d.Err()
}

// Addr is what the Device's protocol.configData.address points at.
func (d *Device) Addr() string { return d.ln.Addr().String() }

// Served is the counts read so far, in order.
func (d *Device) Served() []uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]uint32(nil), d.served...)
}

// Err is the first error the device side met (relaying, or the server's answers), or nil.
func (d *Device) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

func (d *Device) put(n uint32) error {
	regs := layout.Registers(n, false)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.dev.WriteMultipleRegisters(ctx, d.at, regs[:])
}

func (d *Device) accept() {
	for {
		c, err := d.ln.Accept()
		if err != nil {
			return
		}
		d.mu.Lock()
		d.conns[c] = true
		d.mu.Unlock()
		d.wg.Go(func() { d.relay(c) })
	}
}

// relay forwards one client connection's requests to the Modbus server over a connection of its
// own, one request at a time (as a Modbus TCP client sends them here).
func (d *Device) relay(c net.Conn) {
	defer func() {
		c.Close()
		d.mu.Lock()
		delete(d.conns, c)
		d.mu.Unlock()
	}()
	up, err := net.Dial("tcp", d.target)
	if err != nil {
		d.fail(fmt.Errorf("dialing the Modbus server: %w", err))
		return
	}
	defer up.Close()
	for {
		req, err := ReadADU(c)
		if err != nil {
			return // the mapper closed or the device is closing
		}
		if _, err := up.Write(req); err != nil {
			d.fail(fmt.Errorf("relaying a request: %w", err))
			return
		}
		resp, err := ReadADU(up)
		if err != nil {
			d.fail(fmt.Errorf("reading the Modbus server's answer: %w", err))
			return
		}
		if err := d.sample(req[7:], resp[7:]); err != nil {
			d.fail(err)
			return
		}
		if _, err := c.Write(resp); err != nil {
			return
		}
	}
}

// sample: after an answered read of exactly the T-100's registers, record the count served and put
// the next one in place.
func (d *Device) sample(req, resp []byte) error {
	if len(req) != 5 || req[0] != byte(mbtcp.ReadHoldingRegisters) || binary.BigEndian.Uint16(req[1:]) != d.at || binary.BigEndian.Uint16(req[3:]) != 3 {
		return nil
	}
	if len(resp) != 8 || resp[0] != byte(mbtcp.ReadHoldingRegisters) {
		return fmt.Errorf("the Modbus server answered a read of holding registers %d-%d with % x", d.at, d.at+2, resp)
	}
	served := uint32(binary.BigEndian.Uint16(resp[2:]))<<16 | uint32(binary.BigEndian.Uint16(resp[4:]))
	d.mu.Lock()
	defer d.mu.Unlock()
	if served != d.next {
		return fmt.Errorf("read count %d from the registers, the device holds %d", served, d.next)
	}
	d.served = append(d.served, served)
	if d.onServe != nil {
		d.onServe(served)
	}
	d.next++
	return d.put(d.next)
}

func (d *Device) fail(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err == nil && !errors.Is(err, net.ErrClosed) {
		d.err = err
	}
}

// ReadADU reads one Modbus TCP frame: the 7-byte MBAP header and the PDU its length announces.
func ReadADU(r io.Reader) ([]byte, error) {
	hdr := make([]byte, 7, 260)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[4:]))
	if n < 2 || n > 254 {
		return nil, fmt.Errorf("MBAP length %d out of range 2..254", n)
	}
	buf := append(hdr, make([]byte, n-1)...)
	if _, err := io.ReadFull(r, buf[7:]); err != nil {
		return nil, err
	}
	return buf, nil
}
