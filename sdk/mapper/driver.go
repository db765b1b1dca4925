// Package mapper is the Kedge mapper SDK: a Driver interface a protocol author implements, and the
// runtime around it (Module) that registers with edgecore over DMI, polls and reports each device's
// properties, writes desired values and reports device health. A mapper is an sdk.Module, so it runs
// compiled into edgecore or as a process plugin like any module.
package mapper

import (
	"context"
	"encoding/json"
	"errors"
)

// Driver talks one protocol. The runtime makes one Driver per device (Module.NewDriver is called when
// a device arrives, again when its protocol config changes) and never calls one Driver's methods
// concurrently, so a driver needs no locking of its own state. Every call gets a context with a
// deadline (Module's callTimeout); a driver must return when it ends.
type Driver interface {
	// Init prepares the driver for the device named in protocol.Device: open a connection, parse and
	// check spec.protocol.configData. An error is reported as the device's state (offline, with the
	// error) and Init is retried with backoff; Read/Write/Health are not called before Init succeeds.
	Init(ctx context.Context, protocol ProtocolConfig) error
	// Read returns the current value of one property, addressed by prop.Visitor (the property's
	// visitors.configData). The value's Go type follows prop.Type (see Value). An error counts as a
	// failed read: the device goes offline with the error once every property failed in a row.
	Read(ctx context.Context, device DeviceRef, prop Property) (Value, error)
	// Write sets one property to a desired value (already parsed for prop.Type, see Value). Called
	// only for properties whose model accessMode is ReadWrite, when the desired value changes.
	Write(ctx context.Context, device DeviceRef, prop Property, value Value) error
	// Health says whether the device is reachable; nil means online. Called every healthCycle.
	Health(ctx context.Context, device DeviceRef) error
	// Close releases what Init acquired. Called once when the device is removed, replaced or the
	// mapper stops; no other call follows.
	Close() error
}

// PropertyChecker is implemented by a Driver that can tell from a property alone (its model type and
// its visitor) that reading or writing it cannot work, e.g. a FLOAT in one 16-bit register. The mapper
// asks a fresh driver when a device arrives or changes with its model known: an error refuses the
// device (RegisterDevice / UpdateDevice answer InvalidArgument with the device, the property and the
// driver's message naming the fields), so edgecore logs it and retries, and nothing is read with a
// configuration that would report wrong values.
type PropertyChecker interface {
	CheckProperty(prop Property) error
}

// DeviceRef names a device.
type DeviceRef struct {
	Namespace string
	Name      string
	// Model is the name of the device's DeviceModel (in the same namespace).
	Model string
}

func (d DeviceRef) String() string { return d.Namespace + "/" + d.Name }

// ProtocolConfig is a device's spec.protocol.
type ProtocolConfig struct {
	// Device is the device this driver serves.
	Device DeviceRef
	// Name is spec.protocol.protocolName (the mapper's protocol, e.g. "modbus").
	Name string
	// ConfigData is spec.protocol.configData as a JSON object ("{}" when the device gave none).
	// Values the Device held as JSON objects or lists come back as objects or lists.
	ConfigData json.RawMessage
}

// Property is one device property with what its model says about it.
type Property struct {
	// Name is the property name (the same in the Device and its DeviceModel).
	Name string
	// Type is the model's type: INT, FLOAT, DOUBLE, STRING, BOOLEAN or BYTES (upper case).
	Type string
	// AccessMode is the model's accessMode: ReadWrite or ReadOnly.
	AccessMode string
	// Minimum and Maximum are the model's bounds as written there ("" when not given).
	Minimum, Maximum string
	// Unit is the model's unit.
	Unit string
	// VisitorProtocol is visitors.protocolName.
	VisitorProtocol string
	// Visitor is visitors.configData as a JSON object ("{}" when the device gave none): where and how
	// the driver finds the property (a register address, a file path, a scale...).
	Visitor json.RawMessage
}

// Value is a property value; its Go type follows the property's Type:
//
//	INT → int64, FLOAT and DOUBLE → float64, BOOLEAN → bool, STRING → string, BYTES → []byte.
//
// A driver may return any Go integer or float type for a numeric property and a string for any
// type; the runtime converts (FormatValue) and refuses what does not fit with an error naming the
// property. Desired values given to Write are always of the type above (ParseValue).
type Value = any

// ErrReadOnly is returned by the runtime (and may be returned by a driver) for a write to a property
// that is not ReadWrite.
var ErrReadOnly = errors.New("property is read-only")
