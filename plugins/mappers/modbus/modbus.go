// Package modbus is the Modbus mapper (protocol "modbus"): a mapper.Driver over the project's own
// Modbus TCP client (package mbtcp) and Modbus RTU serial-line client (package mbrtu), registered as
// the builtin module "modbus".
package modbus

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"

	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbrtu"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbtcp"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/mapper"
)

// Name is the module's name; Protocol the devices' spec.protocol.protocolName it serves.
const (
	Name     = "modbus"
	Protocol = "modbus"
)

// Info registers the Modbus mapper (disabled by default).
var Info = sdk.Info{
	Name:    Name,
	Group:   "mapper",
	Doc:     "Mapper for Modbus TCP and Modbus RTU (serial line) devices (protocol modbus): coils, discrete inputs, holding and input registers; int16/uint16/int32/uint32/float32 with scale, offset and byte/word order; registered with edgecore over DMI.",
	Enabled: false,
	New:     func() sdk.Module { return mapper.New(Protocol, NewDriver).WithCollectors(lines) },
}

func init() { sdk.Register(Info) }

// transport carries requests to one device: a Modbus TCP connection or an RTU serial line.
type transport interface {
	Do(ctx context.Context, unit byte, req mbtcp.Request) (mbtcp.Response, error)
	Close() error
}

// pool shares one transport among the devices behind one server address (a gateway with several
// unit ids) or on one serial line (an RS-485 bus with several slaves, whose requests must take
// turns), counted so the last device to close closes it.
var pool = struct {
	sync.Mutex
	clients map[string]*pooled
}{clients: map[string]*pooled{}}

type pooled struct {
	t    transport
	line *mbrtu.Line // RTU: the line's settings, which every device on it must share
	refs int
}

func poolKey(cfg ProtocolConfig) string {
	if cfg.Serial != nil {
		return "rtu:" + cfg.Serial.Port
	}
	return fmt.Sprintf("tcp:%s/%s", cfg.Address, cfg.Timeout)
}

func acquire(cfg ProtocolConfig) (transport, error) {
	pool.Lock()
	defer pool.Unlock()
	k := poolKey(cfg)
	p := pool.clients[k]
	if p == nil {
		if cfg.Serial != nil {
			retries := cfg.Retries
			if retries == 0 {
				retries = -1 // mbrtu: 0 is its default, negative none
			}
			c, err := mbrtu.NewClient(*cfg.Serial, mbrtu.Options{Timeout: cfg.Timeout, Retries: retries})
			if err != nil {
				return nil, err
			}
			lines.add(c)
			p = &pooled{t: c, line: cfg.Serial}
		} else {
			p = &pooled{t: mbtcp.NewClient(cfg.Address, mbtcp.Options{Timeout: cfg.Timeout})}
		}
		pool.clients[k] = p
	} else if cfg.Serial != nil && *p.line != *cfg.Serial {
		l := p.line
		return nil, fmt.Errorf("serial line %s is already in use at %d baud, %d data bits, parity %s, %d stop bits by another device; every device on one line must use the same baudRate, dataBits, parity and stopBits",
			l.Port, l.BaudRate, l.DataBits, l.Parity, l.StopBits)
	}
	p.refs++
	return p.t, nil
}

func release(cfg ProtocolConfig) error {
	pool.Lock()
	defer pool.Unlock()
	k := poolKey(cfg)
	p := pool.clients[k]
	if p == nil {
		return nil
	}
	if p.refs--; p.refs > 0 {
		return nil
	}
	delete(pool.clients, k)
	if c, ok := p.t.(*mbrtu.Client); ok {
		lines.remove(c)
	}
	return p.t.Close()
}

// Driver serves one Modbus device (one unit id at one server address).
type Driver struct {
	device   mapper.DeviceRef
	cfg      ProtocolConfig
	client   transport
	visitors map[string]visitorEntry // property name → parsed visitor
}

type visitorEntry struct {
	raw string
	v   Visitor
	cv  *CodecVisitor // set when the visitor names a codec: raw registers in and out
}

var (
	_ mapper.Driver          = (*Driver)(nil)
	_ mapper.PropertyChecker = (*Driver)(nil)
)

// NewDriver returns a driver for one Modbus device.
func NewDriver() mapper.Driver { return &Driver{} }

// Init checks spec.protocol.configData and takes a (shared) client for the address; the connection
// opens on the first request.
func (d *Driver) Init(_ context.Context, p mapper.ProtocolConfig) error {
	cfg, err := ParseProtocolConfig(p.ConfigData)
	if err != nil {
		return fmt.Errorf("device %s: %w", p.Device, err)
	}
	if d.client != nil {
		release(d.cfg)
		d.client = nil
	}
	t, err := acquire(cfg)
	if err != nil {
		return fmt.Errorf("device %s: %w", p.Device, err)
	}
	d.device, d.cfg, d.visitors, d.client = p.Device, cfg, map[string]visitorEntry{}, t
	return nil
}

// Close gives the client back to the pool.
func (d *Driver) Close() error {
	if d.client == nil {
		return nil
	}
	d.client = nil
	return release(d.cfg)
}

// Health reads holding register 0: any answer, an exception included, proves the device is there,
// except a gateway's "target device failed to respond" / "path unavailable".
func (d *Driver) Health(ctx context.Context, _ mapper.DeviceRef) error {
	req, _ := mbtcp.NewReadRequest(mbtcp.ReadHoldingRegisters, 0, 1)
	_, err := d.client.Do(ctx, d.cfg.UnitID, req)
	var exc *mbtcp.ExceptionError
	if errors.As(err, &exc) && exc.Code != mbtcp.GatewayPathUnavailable && exc.Code != mbtcp.GatewayTargetDeviceFailedToRespond {
		return nil
	}
	return err
}

// visitor parses (once per visitor text) the property's visitor: a codec's (cv set) or the driver's
// own decoding.
func (d *Driver) visitor(p mapper.Property) (visitorEntry, error) {
	if e, ok := d.visitors[p.Name]; ok && e.raw == string(p.Visitor) {
		return e, nil
	}
	e := visitorEntry{raw: string(p.Visitor)}
	if mapper.CodecName(p.Visitor) != "" {
		cv, err := ParseCodecVisitor(p.Visitor)
		if err != nil {
			return e, fmt.Errorf("property %q: %w", p.Name, err)
		}
		e.cv = &cv
	} else {
		v, err := ParseVisitor(p.Visitor, p.Type)
		if err != nil {
			return e, fmt.Errorf("property %q: %w", p.Name, err)
		}
		e.v = v
	}
	d.visitors[p.Name] = e
	return e, nil
}

// Read reads the property's coil, discrete input or registers and converts the value for the
// property's type (INT → int64, FLOAT/DOUBLE → float64, BOOLEAN → bool, STRING → text). When the
// visitor names a codec it reads modbus.limit registers (bits as 0/1) and returns them undecoded,
// mapper.RawRegisters, for the runtime to hand the codec.
func (d *Driver) Read(ctx context.Context, _ mapper.DeviceRef, p mapper.Property) (mapper.Value, error) {
	e, err := d.visitor(p)
	if err != nil {
		return nil, err
	}
	if e.cv != nil {
		return d.readRaw(ctx, p, *e.cv)
	}
	v := e.v
	var fc mbtcp.FunctionCode
	qty := uint16(1)
	switch v.Register {
	case Coil:
		fc = mbtcp.ReadCoils
	case DiscreteInput:
		fc = mbtcp.ReadDiscreteInputs
	case HoldingRegister:
		fc, qty = mbtcp.ReadHoldingRegisters, uint16(v.Value.Type.Registers())
	case InputRegister:
		fc, qty = mbtcp.ReadInputRegisters, uint16(v.Value.Type.Registers())
	}
	if v.Text > 0 {
		qty = v.Text
	}
	req, err := mbtcp.NewReadRequest(fc, v.Offset, qty)
	if err != nil {
		return nil, fmt.Errorf("property %q: %w", p.Name, err)
	}
	resp, err := d.client.Do(ctx, d.cfg.UnitID, req)
	if err != nil {
		return nil, fmt.Errorf("property %q (%s %d): %w", p.Name, v.Register, v.Offset, err)
	}
	if v.Register.bits() {
		return bitValue(p, resp.Bits[0]), nil
	}
	if v.Text > 0 {
		return decodeText(resp.Registers, v.Value.SwapByte), nil
	}
	f, err := v.Value.Decode(resp.Registers)
	if err != nil {
		return nil, fmt.Errorf("property %q: %w", p.Name, err)
	}
	return numberValue(p, f), nil
}

// decodeText reads registers as text: two bytes each, high byte first (low first with swapByte),
// NULs at the end trimmed.
func decodeText(regs []uint16, swapByte bool) string {
	b := make([]byte, 0, 2*len(regs))
	for _, r := range regs {
		hi, lo := byte(r>>8), byte(r)
		if swapByte {
			hi, lo = lo, hi
		}
		b = append(b, hi, lo)
	}
	return strings.TrimRight(string(b), "\x00")
}

// encodeText is decodeText's inverse for n registers: the text NUL-padded; longer text is an error.
func encodeText(s string, n uint16, swapByte bool) ([]uint16, error) {
	if len(s) > 2*int(n) {
		return nil, fmt.Errorf("text of %d bytes does not fit in %d registers (%d bytes)", len(s), n, 2*int(n))
	}
	b := make([]byte, 2*int(n))
	copy(b, s)
	regs := make([]uint16, n)
	for i := range regs {
		hi, lo := b[2*i], b[2*i+1]
		if swapByte {
			hi, lo = lo, hi
		}
		regs[i] = uint16(hi)<<8 | uint16(lo)
	}
	return regs, nil
}

// CheckProperty (mapper.PropertyChecker) refuses, when a device arrives, a property whose visitor
// cannot work with its model type: a FLOAT in one register, a STRING on a coil, a bad visitor.
func (d *Driver) CheckProperty(p mapper.Property) error {
	if mapper.CodecName(p.Visitor) != "" {
		_, err := ParseCodecVisitor(p.Visitor)
		return err
	}
	_, err := ParseVisitor(p.Visitor, p.Type)
	return err
}

func readFunction(r Register) mbtcp.FunctionCode {
	switch r {
	case Coil:
		return mbtcp.ReadCoils
	case DiscreteInput:
		return mbtcp.ReadDiscreteInputs
	case InputRegister:
		return mbtcp.ReadInputRegisters
	}
	return mbtcp.ReadHoldingRegisters
}

func (d *Driver) readRaw(ctx context.Context, p mapper.Property, cv CodecVisitor) (mapper.Value, error) {
	req, err := mbtcp.NewReadRequest(readFunction(cv.Register), cv.Offset, cv.Limit)
	if err != nil {
		return nil, fmt.Errorf("property %q: %w", p.Name, err)
	}
	resp, err := d.client.Do(ctx, d.cfg.UnitID, req)
	if err != nil {
		return nil, fmt.Errorf("property %q (%s %d, %d for codec %s): %w", p.Name, cv.Register, cv.Offset, cv.Limit, cv.Codec, err)
	}
	regs := resp.Registers
	if cv.Register.bits() {
		regs = make([]uint16, len(resp.Bits))
		for i, b := range resp.Bits {
			if b {
				regs[i] = 1
			}
		}
	}
	return mapper.RawRegisters(regs...), nil
}

// writeRaw writes what the codec encoded: exactly modbus.limit holding registers (FC 6 for one, 16
// for more) or coils given as 0/1 (FC 5 for one, 15 for more).
func (d *Driver) writeRaw(ctx context.Context, p mapper.Property, cv CodecVisitor, value mapper.Value) error {
	raw, ok := value.(mapper.Raw)
	if !ok {
		return fmt.Errorf("property %q: its visitor names codec %s, so a write takes the codec's raw registers, not %v (%T)", p.Name, cv.Codec, value, value)
	}
	regs, err := raw.Registers()
	if err != nil {
		return fmt.Errorf("property %q: codec %s: %w", p.Name, cv.Codec, err)
	}
	if len(regs) != int(cv.Limit) {
		return fmt.Errorf("property %q: codec %s encoded %d registers %v, the property spans modbus.limit %d", p.Name, cv.Codec, len(regs), regs, cv.Limit)
	}
	var req mbtcp.Request
	switch cv.Register {
	case HoldingRegister:
		req = mbtcp.NewWriteSingleRegister(cv.Offset, regs[0])
		if len(regs) > 1 {
			req, err = mbtcp.NewWriteMultipleRegisters(cv.Offset, regs)
		}
	case Coil:
		bits := make([]bool, len(regs))
		for i, r := range regs {
			if r > 1 {
				return fmt.Errorf("property %q: codec %s encoded %d for coil %d, want 0 or 1", p.Name, cv.Codec, r, int(cv.Offset)+i)
			}
			bits[i] = r == 1
		}
		req = mbtcp.NewWriteSingleCoil(cv.Offset, bits[0])
		if len(bits) > 1 {
			req, err = mbtcp.NewWriteMultipleCoils(cv.Offset, bits)
		}
	default:
		return fmt.Errorf("property %q: %s %d: %w", p.Name, cv.Register, cv.Offset, mapper.ErrReadOnly)
	}
	if err != nil {
		return fmt.Errorf("property %q: %w", p.Name, err)
	}
	if _, err := d.client.Do(ctx, d.cfg.UnitID, req); err != nil {
		return fmt.Errorf("property %q (%s %d, %d from codec %s): %w", p.Name, cv.Register, cv.Offset, len(regs), cv.Codec, err)
	}
	return nil
}

func bitValue(p mapper.Property, b bool) mapper.Value {
	switch strings.ToUpper(p.Type) {
	case "INT":
		if b {
			return int64(1)
		}
		return int64(0)
	case "FLOAT", "DOUBLE":
		if b {
			return 1.0
		}
		return 0.0
	case "STRING":
		return strconv.FormatBool(b)
	}
	return b
}

func numberValue(p mapper.Property, f float64) mapper.Value {
	switch strings.ToUpper(p.Type) {
	case "INT":
		if f == math.Trunc(f) {
			return int64(f)
		}
		return f // not whole: the runtime refuses it for INT, naming the property
	case "BOOLEAN":
		return f != 0
	case "STRING":
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return f
}

// Write sets a coil (FC 5) or holding register(s) (FC 6 for one register, FC 16 for two). With a
// codec the runtime has encoded the value already: value is mapper.Raw (see writeRaw).
func (d *Driver) Write(ctx context.Context, _ mapper.DeviceRef, p mapper.Property, value mapper.Value) error {
	e, err := d.visitor(p)
	if err != nil {
		return err
	}
	if e.cv != nil {
		return d.writeRaw(ctx, p, *e.cv, value)
	}
	v := e.v
	switch v.Register {
	case Coil:
		on, err := asBool(value)
		if err != nil {
			return fmt.Errorf("property %q: %w", p.Name, err)
		}
		_, err = d.client.Do(ctx, d.cfg.UnitID, mbtcp.NewWriteSingleCoil(v.Offset, on))
		if err != nil {
			return fmt.Errorf("property %q (coil %d): %w", p.Name, v.Offset, err)
		}
		return nil
	case HoldingRegister:
	default:
		return fmt.Errorf("property %q: %s %d: %w", p.Name, v.Register, v.Offset, mapper.ErrReadOnly)
	}
	var regs []uint16
	if v.Text > 0 {
		regs, err = encodeText(fmt.Sprint(value), v.Text, v.Value.SwapByte)
	} else {
		var f float64
		if f, err = asFloat(value); err == nil {
			regs, err = v.Value.Encode(f)
		}
	}
	if err != nil {
		return fmt.Errorf("property %q: %w", p.Name, err)
	}
	req := mbtcp.NewWriteSingleRegister(v.Offset, regs[0])
	if len(regs) > 1 {
		if req, err = mbtcp.NewWriteMultipleRegisters(v.Offset, regs); err != nil {
			return fmt.Errorf("property %q: %w", p.Name, err)
		}
	}
	if _, err := d.client.Do(ctx, d.cfg.UnitID, req); err != nil {
		return fmt.Errorf("property %q (holding register %d): %w", p.Name, v.Offset, err)
	}
	return nil
}

func asBool(v mapper.Value) (bool, error) {
	switch b := v.(type) {
	case bool:
		return b, nil
	case string:
		return strconv.ParseBool(strings.TrimSpace(b))
	}
	f, err := asFloat(v)
	if err != nil {
		return false, err
	}
	if f != 0 && f != 1 {
		return false, fmt.Errorf("value %v for a coil, want 0, 1, true or false", v)
	}
	return f == 1, nil
}

func asFloat(v mapper.Value) (float64, error) {
	switch n := v.(type) {
	case int64:
		return float64(n), nil
	case int:
		return float64(n), nil
	case float64:
		return n, nil
	case float32:
		return float64(n), nil
	case bool:
		if n {
			return 1, nil
		}
		return 0, nil
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(n), 64)
		if err != nil {
			return 0, fmt.Errorf("value %q is not a number", n)
		}
		return f, nil
	}
	return 0, fmt.Errorf("value %v (%T) is not a number", v, v)
}
