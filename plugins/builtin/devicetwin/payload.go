package devicetwin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	devicesv1beta1 "github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
)

// The MQTT payloads below have KubeEdge's shapes and JSON field names (event_id, timestamp in ms,
// twin: property -> {expected, actual, optional, metadata{type}}), written from its documentation.

// baseMessage starts every payload.
type baseMessage struct {
	EventID   string `json:"event_id"`
	Timestamp int64  `json:"timestamp"`
}

// valueMetadata is when a value was set (ms since the epoch).
type valueMetadata struct {
	Timestamp int64 `json:"timestamp,omitempty"`
}

// twinValue is an expected or actual value.
type twinValue struct {
	Value    *string        `json:"value,omitempty"`
	Metadata *valueMetadata `json:"metadata,omitempty"`
}

// UnmarshalJSON takes the value as a string, or a number or boolean written bare (as many publishers
// do), as its text.
func (v *twinValue) UnmarshalJSON(b []byte) error {
	var in struct {
		Value    json.RawMessage `json:"value"`
		Metadata *valueMetadata  `json:"metadata"`
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	v.Metadata = in.Metadata
	v.Value = nil
	raw := bytes.TrimSpace(in.Value)
	switch {
	case len(raw) == 0 || string(raw) == "null":
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		v.Value = &s
	case raw[0] == '{' || raw[0] == '[':
		return fmt.Errorf("value must be a string, number or boolean, not %s", raw)
	default:
		s := string(raw)
		v.Value = &s
	}
	return nil
}

func (v *twinValue) ts() int64 {
	if v == nil || v.Metadata == nil {
		return 0
	}
	return v.Metadata.Timestamp
}

func (v *twinValue) value() string {
	if v == nil || v.Value == nil {
		return ""
	}
	return *v.Value
}

// typeMetadata names a twin's value type.
type typeMetadata struct {
	Type string `json:"type,omitempty"`
}

// twinVersion is KubeEdge's version pair of a twin value.
type twinVersion struct {
	Cloud int64 `json:"cloud"`
	Edge  int64 `json:"edge"`
}

// msgTwin is one property's twin, as stored and as published.
type msgTwin struct {
	Expected        *twinValue    `json:"expected,omitempty"`
	Actual          *twinValue    `json:"actual,omitempty"`
	Optional        *bool         `json:"optional,omitempty"`
	Metadata        *typeMetadata `json:"metadata,omitempty"`
	ExpectedVersion *twinVersion  `json:"expected_version,omitempty"`
	ActualVersion   *twinVersion  `json:"actual_version,omitempty"`
}

func (t *msgTwin) clone() *msgTwin {
	if t == nil {
		return nil
	}
	c := *t
	return &c
}

// twinUpdate is the payload of $hw/events/device/<id>/twin/update.
type twinUpdate struct {
	baseMessage
	Twin map[string]*msgTwin `json:"twin"`
}

// twinResult answers twin/update and twin/get.
type twinResult struct {
	baseMessage
	Twin map[string]*msgTwin `json:"twin"`
}

// errorResult answers a request that failed.
type errorResult struct {
	baseMessage
	Code   int    `json:"code"`
	Reason string `json:"reason"`
}

type twinDoc struct {
	Last    *msgTwin `json:"last"`
	Current *msgTwin `json:"current"`
}

// twinDocument is published on twin/update/document: each changed twin before and after.
type twinDocument struct {
	baseMessage
	Twin map[string]*twinDoc `json:"twin"`
}

// twinDelta is published on twin/update/delta: the twins and, in delta, the expected values that
// differ from the actual ones.
type twinDelta struct {
	baseMessage
	Twin  map[string]*msgTwin `json:"twin"`
	Delta map[string]string   `json:"delta"`
}

// memberDevice describes a device in membership payloads (id = the Device's name).
type memberDevice struct {
	ID          string              `json:"id,omitempty"`
	Name        string              `json:"name,omitempty"`
	Namespace   string              `json:"namespace,omitempty"` // Kedge addition: which namespace the name is in
	Description string              `json:"description,omitempty"`
	State       string              `json:"state,omitempty"`
	LastOnline  string              `json:"last_online,omitempty"`
	Attributes  map[string]any      `json:"attributes,omitempty"`
	Twin        map[string]*msgTwin `json:"twin,omitempty"`
}

type membershipGetResult struct {
	baseMessage
	Devices []memberDevice `json:"devices"`
}

type membershipUpdated struct {
	baseMessage
	AddDevices    []memberDevice `json:"added_devices"`
	RemoveDevices []memberDevice `json:"removed_devices"`
}

// stateUpdate is the payload of $hw/events/device/<id>/state/update.
type stateUpdate struct {
	baseMessage
	State string `json:"state"`
	// PropertyErrors is a Kedge addition (propfail.go): the properties that fail while the device
	// may be online, as the mapper sees them. Absent: unchanged; {}: none fails.
	PropertyErrors *map[string]propertyError `json:"property_errors,omitempty"`
	// OfflineReason is a Kedge addition (health.go): why the mapper says the device is offline.
	// Absent: no reason known (the generic DeviceOffline).
	OfflineReason *offlineReason `json:"offline_reason,omitempty"`
}

// offlineReason is why a mapper says its device is offline (a CamelCase reason and a message).
type offlineReason struct {
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

type stateResult struct {
	baseMessage
	Device stateDevice `json:"device"`
}

// stateDevice is the device in a state/update/result: KubeEdge v1.23.1 sends name, state and
// lastOnlineTime (camelCase here, unlike membership's last_online).
type stateDevice struct {
	Name           string `json:"name"`
	Namespace      string `json:"namespace,omitempty"` // Kedge addition
	State          string `json:"state"`
	LastOnlineTime string `json:"lastOnlineTime,omitempty"`
}

// dataUpdate is the payload of $ke/events/device/<id>/data/update.
type dataUpdate struct {
	baseMessage
	Data map[string]*twinValue `json:"data"`
}

// membershipContent is the membership object from the cloud (the device contract).
type membershipContent struct {
	Devices []memberRef `json:"devices"`
}

type memberRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// Upstream content of <ns>/devicestatus/<name> (the device contract); fields omitted when unchanged.
type statusProperty struct {
	Value    string            `json:"value"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

type statusTwin struct {
	PropertyName    string          `json:"propertyName"`
	Reported        *statusProperty `json:"reported,omitempty"`
	ObservedDesired *statusProperty `json:"observedDesired,omitempty"`
}

type deviceStatus struct {
	Twins          []statusTwin `json:"twins,omitempty"`
	State          string       `json:"state,omitempty"`
	LastOnlineTime string       `json:"lastOnlineTime,omitempty"`
	// Condition is the device's Healthy condition when it changed (a Kedge addition, see health.go).
	Condition *statusCondition `json:"condition,omitempty"`
}

// checkValue converts v to the property's type and checks minimum/maximum; the error says what was
// wrong in words a device author understands.
func checkValue(p *devicesv1beta1.ModelProperty, v string) error {
	var num float64
	numeric := false
	switch strings.ToUpper(string(p.Type)) {
	case "INT":
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return fmt.Errorf("property %q is INT: %q is not an integer", p.Name, v)
		}
		num, numeric = float64(n), true
	case "FLOAT", "DOUBLE":
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return fmt.Errorf("property %q is %s: %q is not a number", p.Name, p.Type, v)
		}
		num, numeric = f, true
	case "BOOLEAN":
		if s := strings.ToLower(strings.TrimSpace(v)); s != "true" && s != "false" {
			return fmt.Errorf("property %q is BOOLEAN: %q is not true or false", p.Name, v)
		}
	case "STRING", "BYTES", "STREAM", "":
	default:
		return fmt.Errorf("property %q has type %q, which is not INT, FLOAT, DOUBLE, BOOLEAN, STRING, BYTES or STREAM", p.Name, p.Type)
	}
	if !numeric {
		return nil
	}
	if p.Minimum != "" {
		if lo, err := strconv.ParseFloat(p.Minimum, 64); err == nil && num < lo {
			return fmt.Errorf("property %q: %s is below the minimum %s", p.Name, v, p.Minimum)
		}
	}
	if p.Maximum != "" {
		if hi, err := strconv.ParseFloat(p.Maximum, 64); err == nil && num > hi {
			return fmt.Errorf("property %q: %s is above the maximum %s", p.Name, v, p.Maximum)
		}
	}
	return nil
}
