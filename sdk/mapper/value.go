package mapper

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	dmiv1beta1 "github.com/kedge-io/kedge/sdk/dmi/v1beta1"
)

// FormatValue renders a value read by a driver as the twin's string for a property type. Integers
// and whole floats fit INT; any number fits FLOAT/DOUBLE; a string is checked against the type.
func FormatValue(typ string, v Value) (string, error) {
	t := strings.ToUpper(typ)
	if s, ok := v.(string); ok && t != "STRING" && t != "BYTES" && t != "" {
		if _, err := ParseValue(t, s); err != nil {
			return "", err
		}
		return s, nil
	}
	switch t {
	case "INT":
		switch n := v.(type) {
		case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
			return fmt.Sprint(n), nil
		case float32, float64:
			f := toFloat(n)
			if f != math.Trunc(f) || math.IsInf(f, 0) || math.IsNaN(f) {
				return "", fmt.Errorf("value %v is not a whole number for type INT", f)
			}
			return strconv.FormatInt(int64(f), 10), nil
		}
	case "FLOAT", "DOUBLE":
		switch n := v.(type) {
		case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
			return fmt.Sprint(n), nil
		case float32, float64:
			f := toFloat(n)
			if math.IsInf(f, 0) || math.IsNaN(f) {
				return "", fmt.Errorf("value %v is not a finite number for type %s", f, t)
			}
			return strconv.FormatFloat(f, 'f', -1, 64), nil
		}
	case "BOOLEAN":
		if b, ok := v.(bool); ok {
			return strconv.FormatBool(b), nil
		}
	case "BYTES":
		switch b := v.(type) {
		case []byte:
			return base64.StdEncoding.EncodeToString(b), nil
		case string:
			return b, nil
		}
	case "STRING", "":
		switch b := v.(type) {
		case string:
			return b, nil
		case []byte:
			return string(b), nil
		case nil:
			return "", fmt.Errorf("no value")
		}
		return fmt.Sprint(v), nil
	default:
		return "", fmt.Errorf("unknown property type %q", typ)
	}
	return "", fmt.Errorf("value %v (%T) does not fit type %s", v, v, t)
}

func toFloat(v any) float64 {
	switch n := v.(type) {
	case float32:
		return float64(n)
	case float64:
		return n
	}
	return 0
}

// ParseValue parses a twin string (a desired value) for a property type: INT → int64, FLOAT and
// DOUBLE → float64, BOOLEAN → bool, STRING → string, BYTES → []byte (base64, else the raw text).
func ParseValue(typ, s string) (Value, error) {
	switch strings.ToUpper(typ) {
	case "INT":
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("value %q is not an INT", s)
		}
		return n, nil
	case "FLOAT", "DOUBLE":
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, fmt.Errorf("value %q is not a %s", s, strings.ToUpper(typ))
		}
		return f, nil
	case "BOOLEAN":
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("value %q is not a BOOLEAN (true/false)", s)
		}
		return b, nil
	case "BYTES":
		if b, err := base64.StdEncoding.DecodeString(s); err == nil {
			return b, nil
		}
		return []byte(s), nil
	case "STRING", "":
		return s, nil
	}
	return nil, fmt.Errorf("unknown property type %q", typ)
}

var protoUnmarshalOpts = proto.UnmarshalOptions{}

// configJSON turns a DMI CustomizedValue (each value a google.protobuf.Any wrapper; objects and lists
// sent as a StringValue of their JSON) back into one JSON object.
func configJSON(c *dmiv1beta1.CustomizedValue) (json.RawMessage, error) {
	out := map[string]any{}
	for k, a := range c.GetData() {
		if a == nil {
			continue
		}
		msg, err := anypb.UnmarshalNew(a, protoUnmarshalOpts)
		if err != nil {
			return nil, fmt.Errorf("configData key %q: %w", k, err)
		}
		switch w := msg.(type) {
		case *wrapperspb.StringValue:
			s := strings.TrimSpace(w.Value)
			if (strings.HasPrefix(s, "{") || strings.HasPrefix(s, "[")) && json.Valid([]byte(s)) {
				out[k] = json.RawMessage(s)
			} else {
				out[k] = w.Value
			}
		case *wrapperspb.Int64Value:
			out[k] = w.Value
		case *wrapperspb.Int32Value:
			out[k] = w.Value
		case *wrapperspb.UInt64Value:
			out[k] = w.Value
		case *wrapperspb.UInt32Value:
			out[k] = w.Value
		case *wrapperspb.DoubleValue:
			out[k] = w.Value
		case *wrapperspb.FloatValue:
			out[k] = w.Value
		case *wrapperspb.BoolValue:
			out[k] = w.Value
		case *wrapperspb.BytesValue:
			out[k] = w.Value
		default:
			return nil, fmt.Errorf("configData key %q: unsupported value type %s", k, a.GetTypeUrl())
		}
	}
	raw, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("configData: %w", err)
	}
	return raw, nil
}
