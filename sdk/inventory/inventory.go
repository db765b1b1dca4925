// Package inventory is the edge's report of what runs on a node, for the fleet console: the host's
// modules (runtime, release, sha256, health, message counters), the node's outbox depth, its
// edgecore version and device class. pluginmanager sends it upstream (resource
// kedge/nodeinventory/<node>, group plugin), the cloud's rolloutcontroller checks it and keeps it as
// the Node annotation kedge.io/inventory, and the console reads it from there.
//
// The format is public and versioned (V): a reader refuses a report of another version, so a later
// change of meaning gets a new V and older readers say so instead of misreading it. It depends on
// nothing but the standard library (an edge of any class may link it).
package inventory

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// V is the report format's version.
const V = 1

// Where the report travels and where the cloud keeps it.
const (
	// Annotation is the Node annotation holding the last accepted report (compact JSON).
	Annotation = "kedge.io/inventory"
	// Namespace and Type form the report's edge resource, <Namespace>/<Type>/<node>; Group is the
	// message group cloudhub dispatches it by (to rolloutcontroller).
	Namespace = "kedge"
	Type      = "nodeinventory"
	Group     = "plugin"
)

// Bounds of a report, checked by the cloud (a larger or longer one is refused, not cut).
const (
	MaxBytes   = 32 << 10 // encoded size
	MaxModules = 64
	MaxText    = 256 // a health or link text; the edge cuts longer ones to this (with "…")
)

// Report is what one node reports.
type Report struct {
	V       int       `json:"v"`
	Node    string    `json:"node"`
	Version string    `json:"version,omitempty"` // the edgecore binary's version
	Class   string    `json:"class,omitempty"`   // device class the binary was built as: minimal, gateway, full, custom
	Outbox  int       `json:"outbox"`            // upstream messages waiting in the node's durable outbox
	At      time.Time `json:"at"`                // when the edge took it
	Modules []Module  `json:"modules"`
}

// Module is one running module of the node.
type Module struct {
	Name    string `json:"name"`
	Runtime string `json:"runtime"`           // builtin, process or wasm
	Release string `json:"release,omitempty"` // the host's version for builtin, the plugin's release, "-" if none
	SHA256  string `json:"sha256,omitempty"`  // hex sha256 of a pinned plugin file; empty for builtin
	Health  string `json:"health,omitempty"`  // empty when healthy, else why not
	Link    string `json:"link,omitempty"`    // "up" or "down: why" for a module holding a link
	Handled int64  `json:"handled"`
	Failed  int64  `json:"failed"`
	Queued  int    `json:"queued"`
}

var (
	nameRE    = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$`)
	nodeRE    = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
	sha256RE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	versionRE = regexp.MustCompile(`^[-+._~:()A-Za-z0-9 ]{0,128}$`)
	classRE   = regexp.MustCompile(`^[a-z0-9][-a-z0-9]{0,31}$`)
)

// ErrInvalid wraps every reason Decode refuses a report for.
var ErrInvalid = errors.New("invalid node inventory")

// Decode parses and checks raw: at most MaxBytes, one JSON object of this version with no unknown
// field, a node name, at most MaxModules modules with distinct names, a known runtime, a hex sha256,
// counters that are not negative. Every error wraps ErrInvalid and names what was wrong.
func Decode(raw []byte) (Report, error) {
	var r Report
	if len(raw) > MaxBytes {
		return r, fmt.Errorf("%w: %d bytes, more than the %d a report may have", ErrInvalid, len(raw), MaxBytes)
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return r, fmt.Errorf("%w: empty content", ErrInvalid)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if dec.More() {
		return r, fmt.Errorf("%w: more than one JSON value", ErrInvalid)
	}
	return r, r.Check()
}

// Check reports the first thing wrong with r (wrapping ErrInvalid), naming the field.
func (r Report) Check() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, a...)...)
	}
	switch {
	case r.V != V:
		return bad("v: version %d, this reader knows %d", r.V, V)
	case !nodeRE.MatchString(r.Node):
		return bad("node: %q is not a node name", r.Node)
	case !versionRE.MatchString(r.Version):
		return bad("version: %q is not a version", r.Version)
	case r.Class != "" && !classRE.MatchString(r.Class):
		return bad("class: %q is not a class name", r.Class)
	case r.Outbox < 0:
		return bad("outbox: %d is negative", r.Outbox)
	case r.At.IsZero():
		return bad("at: missing")
	case len(r.Modules) > MaxModules:
		return bad("modules: %d, at most %d", len(r.Modules), MaxModules)
	}
	seen := make(map[string]bool, len(r.Modules))
	for i, m := range r.Modules {
		at := fmt.Sprintf("modules[%d]", i)
		switch {
		case !nameRE.MatchString(m.Name):
			return bad("%s.name: %q is not a module name", at, m.Name)
		case seen[m.Name]:
			return bad("%s.name: %q listed twice", at, m.Name)
		case m.Runtime != "builtin" && m.Runtime != "process" && m.Runtime != "wasm":
			return bad("%s.runtime: %q, want builtin, process or wasm", at, m.Runtime)
		case !versionRE.MatchString(m.Release):
			return bad("%s.release: %q is not a version", at, m.Release)
		case m.SHA256 != "" && !sha256RE.MatchString(m.SHA256):
			return bad("%s.sha256: %q is not 64 lowercase hex digits", at, m.SHA256)
		case len(m.Health) > MaxText || len(m.Link) > MaxText:
			return bad("%s: health or link longer than %d bytes", at, MaxText)
		case m.Handled < 0 || m.Failed < 0 || m.Queued < 0:
			return bad("%s: negative counter", at)
		}
		seen[m.Name] = true
	}
	return nil
}

// Cut shortens s to at most MaxText bytes (on a rune boundary, ending in "…").
func Cut(s string) string {
	if len(s) <= MaxText {
		return s
	}
	const ell = "…"
	n := MaxText - len(ell)
	for n > 0 && !utf8Start(s[n]) {
		n--
	}
	return s[:n] + ell
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

// Parse reads an annotation value written by the cloud (Decode's rules).
func Parse(annotation string) (Report, error) { return Decode([]byte(annotation)) }

// Clean makes s a valid version text: characters a version may not hold become '_', and it is cut
// to 128 bytes (a plugin's release is its author's choice; the report must still pass Check).
func Clean(s string) string {
	b := []byte(s)
	if len(b) > 128 {
		b = b[:128]
	}
	for i, c := range b {
		if !versionRE.Match([]byte{c}) {
			b[i] = '_'
		}
	}
	return string(b)
}
