// Package virtual is a mapper for simulated devices (protocol "virtual"): numeric properties
// random-walk within their model's minimum/maximum, writable properties read back what was written,
// and a device can be switched offline from its config. For demos and load tests.
package virtual

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/mapper"
)

// Name is the module's name; Protocol the devices' spec.protocol.protocolName it serves.
const (
	Name     = "virtual"
	Protocol = "virtual"
)

// Info registers the virtual mapper (disabled by default).
var Info = sdk.Info{
	Name:    Name,
	Group:   "mapper",
	Doc:     "Mapper for simulated devices (protocol virtual): random-walk values within the model's bounds, writable properties, registered with edgecore over DMI.",
	Enabled: false,
	New:     func() sdk.Module { return mapper.New(Protocol, NewDriver) },
}

func init() { sdk.Register(Info) }

// protocolConfig is a device's spec.protocol.configData.
type protocolConfig struct {
	Seed    *int64 `json:"seed"`    // makes every property's walk deterministic
	Offline bool   `json:"offline"` // the device answers nothing: reads and health fail
}

// visitorConfig is a property's visitors.configData.
type visitorConfig struct {
	Start  json.RawMessage `json:"start"`  // first value (number, bool or string after the type)
	Step   *float64        `json:"step"`   // largest change per read of a numeric property
	Seed   *int64          `json:"seed"`   // this property's own seed
	Values []string        `json:"values"` // a read-only STRING cycles through these
	Flip   float64         `json:"flip"`   // a read-only BOOLEAN flips with this probability per read
}

// Driver simulates one device.
type Driver struct {
	device mapper.DeviceRef
	cfg    protocolConfig
	props  map[string]*sim
}

type sim struct {
	visitor  string // the configData it was made from
	cfg      visitorConfig
	rng      *rand.Rand
	value    mapper.Value
	f        float64 // a numeric walk's position
	lo, hi   float64
	hasLo    bool
	hasHi    bool
	step     float64
	cycle    int
	writable bool
}

// NewDriver returns a driver for one virtual device.
func NewDriver() mapper.Driver { return &Driver{} }

// Init reads spec.protocol.configData: {"seed": 7, "offline": false}.
func (d *Driver) Init(_ context.Context, p mapper.ProtocolConfig) error {
	var cfg protocolConfig
	if len(p.ConfigData) > 0 {
		dec := json.NewDecoder(strings.NewReader(string(p.ConfigData)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			return fmt.Errorf("device %s spec.protocol.configData: %w", p.Device, err)
		}
	}
	d.device, d.cfg, d.props = p.Device, cfg, map[string]*sim{}
	return nil
}

func (d *Driver) offline() error {
	return fmt.Errorf("virtual device %s is offline (spec.protocol.configData offline: true)", d.device)
}

// Health fails when the device is configured offline.
func (d *Driver) Health(context.Context, mapper.DeviceRef) error {
	if d.cfg.Offline {
		return d.offline()
	}
	return nil
}

// Close has nothing to release.
func (d *Driver) Close() error { return nil }

// Read returns the property's next simulated value.
func (d *Driver) Read(_ context.Context, _ mapper.DeviceRef, p mapper.Property) (mapper.Value, error) {
	if d.cfg.Offline {
		return nil, d.offline()
	}
	s, err := d.sim(p)
	if err != nil {
		return nil, err
	}
	if s.writable {
		return s.value, nil
	}
	switch p.Type {
	case "INT", "FLOAT", "DOUBLE":
		f := s.f + (s.rng.Float64()*2-1)*s.step
		if s.hasLo {
			f = math.Max(f, s.lo)
		}
		if s.hasHi {
			f = math.Min(f, s.hi)
		}
		s.f = f // the walk keeps its fraction; an INT reads rounded
		if p.Type == "INT" {
			s.value = int64(math.Round(f))
		} else {
			s.value = f
		}
	case "BOOLEAN":
		if s.cfg.Flip > 0 && s.rng.Float64() < s.cfg.Flip {
			s.value = !s.value.(bool)
		}
	case "STRING":
		if len(s.cfg.Values) > 0 {
			s.value = s.cfg.Values[s.cycle%len(s.cfg.Values)]
			s.cycle++
		}
	}
	return s.value, nil
}

// Write sets a ReadWrite property; a number outside the model's bounds is refused.
func (d *Driver) Write(_ context.Context, _ mapper.DeviceRef, p mapper.Property, v mapper.Value) error {
	if d.cfg.Offline {
		return d.offline()
	}
	s, err := d.sim(p)
	if err != nil {
		return err
	}
	if !s.writable {
		return fmt.Errorf("property %q: %w", p.Name, mapper.ErrReadOnly)
	}
	if f, ok := v.(float64); ok || isInt(v) {
		if !ok {
			f = toFloat(v)
		}
		if (s.hasLo && f < s.lo) || (s.hasHi && f > s.hi) {
			return fmt.Errorf("property %q: value %v outside [%s, %s]", p.Name, v, p.Minimum, p.Maximum)
		}
	}
	s.value = v
	return nil
}

// sim is the property's simulation, made at first use and again when its visitor config changes.
func (d *Driver) sim(p mapper.Property) (*sim, error) {
	if s := d.props[p.Name]; s != nil && s.visitor == string(p.Visitor) {
		return s, nil
	}
	s := &sim{visitor: string(p.Visitor), writable: strings.EqualFold(p.AccessMode, "ReadWrite")}
	if len(p.Visitor) > 0 {
		dec := json.NewDecoder(strings.NewReader(string(p.Visitor)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s.cfg); err != nil {
			return nil, fmt.Errorf("property %q visitors.configData: %w", p.Name, err)
		}
	}
	var err error
	if p.Minimum != "" {
		if s.lo, err = strconv.ParseFloat(p.Minimum, 64); err != nil {
			return nil, fmt.Errorf("property %q: model minimum %q is not a number", p.Name, p.Minimum)
		}
		s.hasLo = true
	}
	if p.Maximum != "" {
		if s.hi, err = strconv.ParseFloat(p.Maximum, 64); err != nil {
			return nil, fmt.Errorf("property %q: model maximum %q is not a number", p.Name, p.Maximum)
		}
		s.hasHi = true
	}
	switch {
	case s.cfg.Seed != nil:
		s.rng = rand.New(rand.NewPCG(uint64(*s.cfg.Seed), 0))
	case d.cfg.Seed != nil:
		h := fnv.New64a()
		_, _ = h.Write([]byte(p.Name))
		s.rng = rand.New(rand.NewPCG(uint64(*d.cfg.Seed), h.Sum64()))
	default:
		s.rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if s.value, err = s.start(p); err != nil {
		return nil, err
	}
	d.props[p.Name] = s
	return s, nil
}

func (s *sim) start(p mapper.Property) (mapper.Value, error) {
	bad := func(err error) error {
		return fmt.Errorf("property %q visitors.configData start %s: %v", p.Name, s.cfg.Start, err)
	}
	switch p.Type {
	case "INT", "FLOAT", "DOUBLE":
		f := 0.0
		switch {
		case len(s.cfg.Start) > 0:
			if err := json.Unmarshal(s.cfg.Start, &f); err != nil {
				return nil, bad(err)
			}
		case s.hasLo && s.hasHi:
			f = (s.lo + s.hi) / 2
		case s.hasLo:
			f = s.lo
		}
		s.step = 1
		if s.cfg.Step != nil {
			s.step = math.Abs(*s.cfg.Step)
		} else if s.hasLo && s.hasHi {
			s.step = (s.hi - s.lo) / 100
		}
		s.f = f
		if p.Type == "INT" {
			return int64(math.Round(f)), nil
		}
		return f, nil
	case "BOOLEAN":
		b := false
		if len(s.cfg.Start) > 0 {
			if err := json.Unmarshal(s.cfg.Start, &b); err != nil {
				return nil, bad(err)
			}
		}
		return b, nil
	case "STRING", "BYTES":
		str := ""
		if len(s.cfg.Start) > 0 {
			if err := json.Unmarshal(s.cfg.Start, &str); err != nil {
				return nil, bad(err)
			}
		} else if len(s.cfg.Values) > 0 {
			str = s.cfg.Values[0]
		}
		if p.Type == "BYTES" {
			return []byte(str), nil
		}
		return str, nil
	}
	return nil, fmt.Errorf("property %q: type %q is not simulated (INT, FLOAT, DOUBLE, BOOLEAN, STRING, BYTES)", p.Name, p.Type)
}

func isInt(v any) bool {
	switch v.(type) {
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return true
	}
	return false
}

func toFloat(v any) float64 {
	switch n := v.(type) {
	case float64:
		return n
	case float32:
		return float64(n)
	case int64:
		return float64(n)
	case int:
		return float64(n)
	case int32:
		return float64(n)
	case uint64:
		return float64(n)
	case uint32:
		return float64(n)
	}
	f, _ := strconv.ParseFloat(fmt.Sprint(v), 64)
	return f
}
