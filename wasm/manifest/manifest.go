// Package manifest is the manifest of a Kedge WASM module: its limits (memory, per-call deadline)
// and its capabilities (where it may send, which resources it may send or reply about, whether it
// may use its store namespace and the log). The manifest travels inside the .wasm file as a custom
// section named "kedge.manifest" holding JSON, so the sha256 pinned in the host config covers code
// and capabilities together: neither can be swapped without the other.
package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/kedge-io/kedge/wasm/abi"
)

// SectionName is the name of the custom section that holds the manifest.
const SectionName = "kedge.manifest"

// Defaults for limits the manifest leaves out.
const (
	DefaultMemoryPages  = 512 // 32 MiB; a Go guest's runtime alone needs a few MiB
	DefaultDeadline     = time.Second
	DefaultInitDeadline = 5 * time.Second
	MaxMemoryPages      = 65536 // 4 GiB, the most a 32-bit memory can hold
)

// Manifest is the JSON document in the "kedge.manifest" section.
type Manifest struct {
	// ABI is the ABI version the guest was built for; it must be abi.Version.
	ABI int `json:"abi"`
	// Version is the module's own version, shown by `edgecore module ls`.
	Version      string       `json:"version,omitempty"`
	Limits       Limits       `json:"limits"`
	Capabilities Capabilities `json:"capabilities"`
}

// Limits bound what one instance may use.
type Limits struct {
	// MemoryPages caps the guest's linear memory, in 64 KiB pages.
	MemoryPages uint32 `json:"memoryPages,omitempty"`
	// Deadline bounds each call into the guest for a message; past it the instance is killed.
	Deadline Duration `json:"deadline,omitempty"`
	// InitDeadline bounds instantiation plus the guest's Init.
	InitDeadline Duration `json:"initDeadline,omitempty"`
}

// Capabilities are what the module may do; everything else is denied.
type Capabilities struct {
	Send Send `json:"send"`
	// Store grants the module's own store namespace (get, put, delete, list).
	Store bool `json:"store,omitempty"`
	// Log grants writing to the host's log.
	Log bool `json:"log,omitempty"`
}

// Send lists patterns: an entry is an exact name, or a prefix when it ends in "*" ("*" alone matches
// everything). A message may be sent when its destination (module or group) and its resource both
// match. A reply to the message being handled may always go back to its sender, but its resource
// must match Resources.
type Send struct {
	Modules   []string `json:"modules,omitempty"`
	Groups    []string `json:"groups,omitempty"`
	Resources []string `json:"resources,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("50ms").
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string such as \"50ms\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Parse decodes a manifest strictly (unknown keys are errors), fills in default limits and
// validates it.
func Parse(data []byte) (Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("manifest: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Manifest{}, errors.New("manifest: data after the JSON object")
	}
	m.applyDefaults()
	if err := m.Validate(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// applyDefaults fills in default limits and writes an empty pattern list as none, so a manifest
// reads back the same after Marshal.
func (m *Manifest) applyDefaults() {
	for _, l := range []*[]string{&m.Capabilities.Send.Modules, &m.Capabilities.Send.Groups, &m.Capabilities.Send.Resources} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	if m.Limits.MemoryPages == 0 {
		m.Limits.MemoryPages = DefaultMemoryPages
	}
	if m.Limits.Deadline == 0 {
		m.Limits.Deadline = Duration(DefaultDeadline)
	}
	if m.Limits.InitDeadline == 0 {
		m.Limits.InitDeadline = Duration(DefaultInitDeadline)
	}
}

// Validate reports the first problem, naming the field.
func (m Manifest) Validate() error {
	switch {
	case m.ABI != abi.Version:
		return fmt.Errorf("manifest: abi is %d, this host speaks ABI version %d", m.ABI, abi.Version)
	case m.Limits.MemoryPages > MaxMemoryPages:
		return fmt.Errorf("manifest: limits.memoryPages %d exceeds %d (4 GiB)", m.Limits.MemoryPages, MaxMemoryPages)
	case m.Limits.Deadline < 0:
		return fmt.Errorf("manifest: limits.deadline %s is negative", time.Duration(m.Limits.Deadline))
	case m.Limits.InitDeadline < 0:
		return fmt.Errorf("manifest: limits.initDeadline %s is negative", time.Duration(m.Limits.InitDeadline))
	}
	for field, patterns := range map[string][]string{"modules": m.Capabilities.Send.Modules,
		"groups": m.Capabilities.Send.Groups, "resources": m.Capabilities.Send.Resources} {
		for i, p := range patterns {
			if p == "" || strings.Contains(strings.TrimSuffix(p, "*"), "*") {
				return fmt.Errorf("manifest: capabilities.send.%s[%d] %q: a pattern is a non-empty name, optionally ending in *", field, i, p)
			}
		}
	}
	return nil
}

// Marshal encodes m as the section's JSON.
func (m Manifest) Marshal() []byte {
	b, err := json.Marshal(m)
	if err != nil {
		panic("manifest: marshal: " + err.Error()) // only plain fields: cannot fail
	}
	return b
}

// Match reports whether s matches one of patterns (see Send).
func Match(patterns []string, s string) bool {
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(s, prefix) {
				return true
			}
		} else if p == s {
			return true
		}
	}
	return false
}

// ParseYAML is Parse for a manifest written in YAML (the form authors keep next to their code);
// the section itself always holds JSON.
func ParseYAML(data []byte) (Manifest, error) {
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return Manifest{}, fmt.Errorf("manifest: %w", err)
	}
	if _, ok := doc.(map[string]any); !ok {
		return Manifest{}, fmt.Errorf("manifest: expected a mapping at the top, got %T", doc)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return Manifest{}, fmt.Errorf("manifest: %w", err)
	}
	return Parse(js)
}
