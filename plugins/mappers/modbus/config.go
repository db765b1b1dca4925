package modbus

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbrtu"
	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbtcp"
)

// ProtocolConfig is a device's spec.protocol.configData, Modbus TCP:
//
//	{"address": "127.0.0.1:502", "unitID": 1, "timeout": "1s"}
//
// or Modbus RTU on a serial line (KubeEdge's field names; defaults 19200 baud, 8 data bits, even
// parity, 1 stop bit):
//
//	{"serialPort": "/dev/ttyUSB0", "baudRate": 115200, "dataBits": 8, "parity": "even", "stopBits": 1, "slaveID": 1}
//
// KubeEdge's modbus mapper spellings are accepted too: "ip" + "port" for address, "slaveID" for
// unitID. Unknown fields are an error (a typo would otherwise be silently ignored).
type ProtocolConfig struct {
	Address string      // Modbus TCP: host:port
	Serial  *mbrtu.Line // Modbus RTU: the serial line (Address is empty)
	UnitID  byte
	Timeout time.Duration
	Retries int // RTU: resends of a request whose answer arrived damaged
}

type rawProtocol struct {
	Address    string          `json:"address"`
	IP         string          `json:"ip"`
	Port       json.RawMessage `json:"port"`
	UnitID     *int            `json:"unitID"`
	SlaveID    *int            `json:"slaveID"`
	Timeout    json.RawMessage `json:"timeout"`
	SerialPort string          `json:"serialPort"`
	BaudRate   int             `json:"baudRate"`
	DataBits   int             `json:"dataBits"`
	Parity     string          `json:"parity"`
	StopBits   int             `json:"stopBits"`
	Retries    *int            `json:"retries"`
}

func decodeStrict(data []byte, v any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		data = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// ParseProtocolConfig checks and decodes spec.protocol.configData.
func ParseProtocolConfig(data []byte) (ProtocolConfig, error) {
	var r rawProtocol
	if err := decodeStrict(data, &r); err != nil {
		return ProtocolConfig{}, fmt.Errorf("modbus protocol configData: %w", err)
	}
	c := ProtocolConfig{Address: r.Address, UnitID: 1, Timeout: time.Second}
	serial := r.SerialPort != "" || r.BaudRate != 0 || r.DataBits != 0 || r.Parity != "" || r.StopBits != 0
	if serial && (r.Address != "" || r.IP != "" || len(r.Port) > 0) {
		return c, fmt.Errorf(`modbus protocol configData: both a TCP address and serial line fields are set; a device is either Modbus TCP ("address") or Modbus RTU ("serialPort", "baudRate", ...)`)
	}
	if !serial && r.Retries != nil {
		return c, fmt.Errorf(`modbus protocol configData: "retries" applies to Modbus RTU (a serial line) only`)
	}
	if serial {
		l, err := mbrtu.Line{Port: r.SerialPort, BaudRate: r.BaudRate, DataBits: r.DataBits, Parity: r.Parity, StopBits: r.StopBits}.Normalize()
		if err != nil {
			return c, fmt.Errorf("modbus protocol configData: %w", err)
		}
		c.Serial = &l
		if r.Retries != nil {
			if *r.Retries < 0 || *r.Retries > 10 {
				return c, fmt.Errorf("modbus protocol configData: retries %d out of range 0..10", *r.Retries)
			}
			c.Retries = *r.Retries
		} else {
			c.Retries = 2
		}
	}
	if c.Address == "" && r.IP != "" {
		port := strings.Trim(string(r.Port), `"`)
		if port == "" {
			port = "502"
		}
		c.Address = net.JoinHostPort(r.IP, port)
	}
	if c.Address == "" && c.Serial == nil {
		return c, fmt.Errorf(`modbus protocol configData: "address" (Modbus TCP, host:port, e.g. "127.0.0.1:502") or "serialPort" (Modbus RTU, e.g. "/dev/ttyUSB0") is required`)
	}
	if c.Serial == nil {
		host, port, err := net.SplitHostPort(c.Address)
		if err != nil || host == "" {
			return c, fmt.Errorf("modbus protocol configData: address %q is not host:port", c.Address)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return c, fmt.Errorf("modbus protocol configData: address %q has port %q, want 1..65535", c.Address, port)
		}
	}
	unit := r.UnitID
	if unit == nil {
		unit = r.SlaveID
	}
	if unit != nil {
		if *unit < 0 || *unit > 255 {
			return c, fmt.Errorf("modbus protocol configData: unitID %d out of range 0..255", *unit)
		}
		c.UnitID = byte(*unit)
	}
	if len(r.Timeout) > 0 {
		var err error
		var s string
		var ms float64
		switch {
		case json.Unmarshal(r.Timeout, &s) == nil:
			if c.Timeout, err = time.ParseDuration(s); err != nil {
				return c, fmt.Errorf("modbus protocol configData: timeout %q is not a duration like \"1s\"", s)
			}
		case json.Unmarshal(r.Timeout, &ms) == nil:
			c.Timeout = time.Duration(ms * float64(time.Millisecond))
		default:
			return c, fmt.Errorf("modbus protocol configData: timeout %s is neither a duration string nor milliseconds", r.Timeout)
		}
		if c.Timeout <= 0 {
			return c, fmt.Errorf("modbus protocol configData: timeout %s must be positive", c.Timeout)
		}
	}
	return c, nil
}

// Register is a Modbus data table.
type Register string

// The four tables.
const (
	Coil            Register = "Coil"
	DiscreteInput   Register = "DiscreteInput"
	HoldingRegister Register = "HoldingRegister"
	InputRegister   Register = "InputRegister"
)

var registerNames = map[string]Register{
	"coil": Coil, "coilregister": Coil, "coils": Coil,
	"discreteinput": DiscreteInput, "discreteinputregister": DiscreteInput, "discreteinputs": DiscreteInput,
	"holdingregister": HoldingRegister, "holdingregisters": HoldingRegister,
	"inputregister": InputRegister, "inputregisters": InputRegister,
}

func (r Register) bits() bool { return r == Coil || r == DiscreteInput }

// Visitor is a property's visitors.configData:
//
//	{"register": "HoldingRegister", "offset": 0, "limit": 2, "dataType": "float32",
//	 "scale": 0.1, "valueOffset": 0, "swapByte": false, "swapWord": true}
//
// offset is the 0-based address in the table; limit the number of registers. KubeEdge's "isSwap"
// (byte swap), "isRegisterSwap" (word swap) and register names "CoilRegister"/"DiscreteInputRegister"
// are accepted too. Without "dataType" the type comes from the model property, as KubeEdge's mappers
// do (see typeFromModel); an explicit dataType wins.
type Visitor struct {
	Register Register
	Offset   uint16
	Value    mbtcp.ValueSpec
	// Text is the number of registers holding a STRING property (two bytes each, big-endian, NULs at
	// the end trimmed on read and padded on write); 0 for a number.
	Text uint16
}

type rawVisitor struct {
	Register       string   `json:"register"`
	Offset         *int     `json:"offset"`
	Limit          *int     `json:"limit"`
	DataType       string   `json:"dataType"`
	Scale          *float64 `json:"scale"`
	ValueOffset    float64  `json:"valueOffset"`
	SwapByte       bool     `json:"swapByte"`
	SwapWord       bool     `json:"swapWord"`
	IsSwap         bool     `json:"isSwap"`
	IsRegisterSwap bool     `json:"isRegisterSwap"`
}

// typeFromModel is the register data type of a model property type and a limit (0: not given);
// the rules live in mbtcp.TypeFromModel, shared with the register codec (plugins/mappers/codecs/regs).
func typeFromModel(modelType string, limit int) (mbtcp.DataType, error) {
	return mbtcp.TypeFromModel(modelType, limit)
}

// ParseVisitor checks and decodes a property's visitors.configData for a property of modelType (the
// DeviceModel's type: INT, FLOAT, DOUBLE, STRING, BOOLEAN; "" when unknown).
func ParseVisitor(data []byte, modelType string) (Visitor, error) {
	var r rawVisitor
	if err := decodeStrict(data, &r); err != nil {
		return Visitor{}, fmt.Errorf("modbus visitor configData: %w", err)
	}
	reg, ok := registerNames[strings.ToLower(r.Register)]
	if !ok {
		return Visitor{}, fmt.Errorf("modbus visitor configData: register %q is not one of Coil, DiscreteInput, HoldingRegister, InputRegister", r.Register)
	}
	if r.Offset == nil {
		return Visitor{}, fmt.Errorf(`modbus visitor configData: "offset" (the 0-based address) is required`)
	}
	if *r.Offset < 0 || *r.Offset > 65535 {
		return Visitor{}, fmt.Errorf("modbus visitor configData: offset %d out of range 0..65535", *r.Offset)
	}
	if r.Limit != nil && (*r.Limit < 1 || *r.Limit > int(mbtcp.MaxReadRegisters)) {
		return Visitor{}, fmt.Errorf("modbus visitor configData: limit %d out of range 1..%d", *r.Limit, mbtcp.MaxReadRegisters)
	}
	v := Visitor{Register: reg, Offset: uint16(*r.Offset)}
	mt := strings.ToUpper(modelType)
	if reg.bits() {
		if r.Limit != nil && *r.Limit != 1 {
			return v, fmt.Errorf("modbus visitor configData: limit %d for %s, a property is one bit (limit 1)", *r.Limit, reg)
		}
		if r.DataType != "" || r.Scale != nil || r.SwapByte || r.SwapWord || r.IsSwap || r.IsRegisterSwap {
			return v, fmt.Errorf("modbus visitor configData: dataType, scale and swap flags apply to registers, not to %s", reg)
		}
		if mt == "STRING" || mt == "BYTES" || mt == "STREAM" {
			return v, fmt.Errorf("modbus visitor configData: register %s holds one bit; model type %s cannot be read from it (use HoldingRegister or InputRegister)", reg, mt)
		}
		return v, nil
	}
	limit := 0
	if r.Limit != nil {
		limit = *r.Limit
	}
	dt := mbtcp.DataType(strings.ToLower(r.DataType))
	if dt == "" {
		t, err := typeFromModel(modelType, limit)
		if err != nil {
			return v, fmt.Errorf("modbus visitor configData (register %s, offset %d, no dataType): %w", reg, v.Offset, err)
		}
		dt = t
	}
	if dt == mbtcp.String {
		if r.Scale != nil || r.ValueOffset != 0 || r.SwapWord || r.IsRegisterSwap {
			return v, fmt.Errorf("modbus visitor configData: scale, valueOffset and word swap do not apply to a string")
		}
		if limit == 0 {
			return v, fmt.Errorf(`modbus visitor configData: a string needs "limit" (how many registers, two characters each)`)
		}
		if int(v.Offset)+limit > 0x10000 {
			return v, fmt.Errorf("modbus visitor configData: %d registers at offset %d run past address 65535", limit, v.Offset)
		}
		v.Text = uint16(limit)
		v.Value = mbtcp.ValueSpec{SwapByte: r.SwapByte || r.IsSwap}
		return v, nil
	}
	v.Value = mbtcp.ValueSpec{Type: dt, Offset: r.ValueOffset, SwapByte: r.SwapByte || r.IsSwap, SwapWord: r.SwapWord || r.IsRegisterSwap}
	if r.Scale != nil {
		if *r.Scale == 0 {
			return v, fmt.Errorf("modbus visitor configData: scale 0 would make every value 0")
		}
		v.Value.Scale = *r.Scale
	}
	if err := v.Value.Validate(); err != nil {
		return v, fmt.Errorf("modbus visitor configData: %w", err)
	}
	if r.Limit != nil && *r.Limit != dt.Registers() {
		return v, fmt.Errorf("modbus visitor configData: limit %d but dataType %s takes %d registers", *r.Limit, dt, dt.Registers())
	}
	if int(v.Offset)+dt.Registers() > 0x10000 {
		return v, fmt.Errorf("modbus visitor configData: %s at offset %d runs past address 65535", dt, v.Offset)
	}
	return v, nil
}

// CodecVisitor is a property's visitors.configData when it names a codec module (see sdk/mapper's
// "Codecs and hot swap"): the driver moves raw registers, the codec gives them meaning.
//
//	{"codec": "thermo-codec", "scale": 0.1, "offset": 0, "wordOrder": "big",
//	 "modbus": {"register": "HoldingRegister", "offset": 30, "limit": 3}}
//
// The runtime sends the whole visitor to the codec, which reads its own keys at the top level; so
// the Modbus keys live in the nested "modbus" object (checked strictly: register, offset, limit),
// where they cannot collide with a codec key of the same name (thermo-codec's "offset" is degrees,
// Modbus's the register address). The other top-level keys belong to the codec and are not checked
// here.
type CodecVisitor struct {
	Codec    string
	Register Register
	Offset   uint16
	Limit    uint16 // registers (or bits) read, and exactly what a write must carry
}

type rawCodecTransport struct {
	Register string `json:"register"`
	Offset   *int   `json:"offset"`
	Limit    *int   `json:"limit"`
}

// ParseCodecVisitor checks and decodes the visitor of a property whose configData names a codec.
func ParseCodecVisitor(data []byte) (CodecVisitor, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return CodecVisitor{}, fmt.Errorf("modbus visitor configData: %w", err)
	}
	var codec string
	if err := json.Unmarshal(top["codec"], &codec); err != nil || codec == "" {
		return CodecVisitor{}, fmt.Errorf(`modbus visitor configData: "codec" %s: want the codec module's name`, top["codec"])
	}
	pre := fmt.Sprintf("modbus visitor configData (codec %s)", codec)
	nested, ok := top["modbus"]
	if !ok {
		if _, flat := top["register"]; flat {
			return CodecVisitor{}, fmt.Errorf(`%s: with a codec the Modbus keys go under "modbus": {"register", "offset", "limit"}; the top level is the codec's`, pre)
		}
		return CodecVisitor{}, fmt.Errorf(`%s: "modbus": {"register", "offset", "limit"} is required (which registers to hand the codec)`, pre)
	}
	var r rawCodecTransport
	if err := decodeStrict(nested, &r); err != nil {
		return CodecVisitor{}, fmt.Errorf("%s: modbus: %w", pre, err)
	}
	reg, ok := registerNames[strings.ToLower(r.Register)]
	if !ok {
		return CodecVisitor{}, fmt.Errorf("%s: modbus.register %q is not one of Coil, DiscreteInput, HoldingRegister, InputRegister", pre, r.Register)
	}
	if r.Offset == nil {
		return CodecVisitor{}, fmt.Errorf(`%s: "modbus.offset" (the 0-based address) is required`, pre)
	}
	if *r.Offset < 0 || *r.Offset > 65535 {
		return CodecVisitor{}, fmt.Errorf("%s: modbus.offset %d out of range 0..65535", pre, *r.Offset)
	}
	if r.Limit == nil {
		return CodecVisitor{}, fmt.Errorf(`%s: "modbus.limit" (how many %ss the codec takes) is required`, pre, reg)
	}
	max := int(mbtcp.MaxReadRegisters)
	if reg.bits() {
		max = int(mbtcp.MaxReadBits)
	}
	if *r.Limit < 1 || *r.Limit > max {
		return CodecVisitor{}, fmt.Errorf("%s: modbus.limit %d out of range 1..%d for %s", pre, *r.Limit, max, reg)
	}
	if *r.Offset+*r.Limit > 0x10000 {
		return CodecVisitor{}, fmt.Errorf("%s: %d %ss at offset %d run past address 65535", pre, *r.Limit, reg, *r.Offset)
	}
	return CodecVisitor{Codec: codec, Register: reg, Offset: uint16(*r.Offset), Limit: uint16(*r.Limit)}, nil
}
