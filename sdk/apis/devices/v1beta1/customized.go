package v1beta1

import (
	"encoding/json"
	"fmt"
)

// CustomizedValue is free-form protocol configuration: any JSON object, kept as is.
//
// +kubebuilder:object:generate=false
// +kubebuilder:validation:Type=object
// +kubebuilder:pruning:PreserveUnknownFields
type CustomizedValue struct {
	Data map[string]any `json:"-"`
}

// MarshalJSON writes the object.
func (c CustomizedValue) MarshalJSON() ([]byte, error) {
	if c.Data == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(c.Data)
}

// UnmarshalJSON reads any JSON object.
func (c *CustomizedValue) UnmarshalJSON(b []byte) error {
	var d map[string]any
	if err := json.Unmarshal(b, &d); err != nil {
		return fmt.Errorf("configData must be a JSON object: %w", err)
	}
	c.Data = d
	return nil
}

// DeepCopyInto copies the object, recursively.
func (c *CustomizedValue) DeepCopyInto(out *CustomizedValue) {
	if c.Data == nil {
		out.Data = nil
		return
	}
	out.Data = copyJSON(c.Data).(map[string]any)
}

// DeepCopy returns a deep copy.
func (c *CustomizedValue) DeepCopy() *CustomizedValue {
	if c == nil {
		return nil
	}
	out := new(CustomizedValue)
	c.DeepCopyInto(out)
	return out
}

// copyJSON copies a value decoded from JSON (maps, slices, strings, numbers, booleans, nil).
func copyJSON(v any) any {
	switch t := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			m[k] = copyJSON(e)
		}
		return m
	case []any:
		s := make([]any, len(t))
		for i, e := range t {
			s[i] = copyJSON(e)
		}
		return s
	}
	return v // scalars are values
}
