package mapper

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// PropertyErrorsHeader is the gRPC request metadata key under which the runtime sends, with every
// ReportDeviceStates call, the device's failing properties: a JSON object property → PropertyError
// ("{}" when none fails). It is a Kedge addition that leaves the DMI messages exactly KubeEdge's:
// KubeEdge's edgecore ignores request metadata it does not know, Kedge's dmi hands the errors to
// devicetwin, which shows them in the Device status (a per-twin error and the Healthy condition) and
// as a Warning Event, while the device itself stays online. The state is reported again whenever the
// set of errors changes.
const PropertyErrorsHeader = "kedge-property-errors"

// PropertyError is why one property fails while its device may be online: its last read failed, or
// its desired value is not on the device (refused — a ReadOnly property, a value not of its type —
// or the write fails).
type PropertyError struct {
	Read  string `json:"read,omitempty"`
	Write string `json:"write,omitempty"`
}

// maxPropertyError bounds one message in the header (a driver error may quote a whole reply).
const maxPropertyError = 512

func clip(s string) string {
	if len(s) > maxPropertyError {
		return s[:maxPropertyError-3] + "..."
	}
	return s
}

// propErrors is the device's failing properties as the header carries them ("" when none fails).
func (l *devLoop) propErrors() string {
	s, _ := l.propErrorsShape()
	return s
}

// propErrorsShape is propErrors and which properties fail how ("temperature:r,setpoint:w"): a change
// of shape is reported at once, a change of the texts only (a timeout's duration, a request ID) at
// most once per HealthCycle.
func (l *devLoop) propErrorsShape() (string, string) {
	var shape []string
	var errs map[string]PropertyError
	for _, p := range l.props {
		var e PropertyError
		if p.fails > 0 && p.lastErr != nil {
			e.Read = clip(p.lastErr.Error())
		}
		if p.writeErr != nil {
			e.Write = clip(p.writeErr.Error())
		}
		if e == (PropertyError{}) {
			continue
		}
		if e.Read != "" {
			shape = append(shape, p.Name+":r")
		}
		if e.Write != "" {
			shape = append(shape, p.Name+":w")
		}
		if errs == nil {
			errs = map[string]PropertyError{}
		}
		errs[p.Name] = e
	}
	if errs == nil {
		return "", ""
	}
	b, _ := json.Marshal(errs) // map keys sorted: equal sets give equal text
	slices.Sort(shape)
	return string(b), strings.Join(shape, ",")
}

// propErrorsDue says whether the property errors should be reported now.
func (l *devLoop) propErrorsDue(now time.Time) bool {
	text, shape := l.propErrorsShape()
	return text != l.propErrs && (shape != l.propErrsShape || !now.Before(l.nextErrText))
}

// checkRange refuses a desired value outside the model's minimum/maximum (numbers only; a bound
// that is not a number is not checked), as edgecore's devicetwin refuses it: the device must not be
// driven outside what its model allows even when the value reached the mapper (DMI hands mappers the
// Device's desired values as they are).
func checkRange(p Property, v Value) error {
	var f float64
	switch n := v.(type) {
	case int64: // ParseValue's INT
		f = float64(n)
	case float64: // FLOAT, DOUBLE
		f = n
	default:
		return nil
	}
	if lo, err := strconv.ParseFloat(p.Minimum, 64); err == nil && f < lo {
		return fmt.Errorf("%v is below the model's minimum %s", v, p.Minimum)
	}
	if hi, err := strconv.ParseFloat(p.Maximum, 64); err == nil && f > hi {
		return fmt.Errorf("%v is above the model's maximum %s", v, p.Maximum)
	}
	return nil
}
