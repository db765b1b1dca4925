// Package index is the Kedge plugin index: which plugins a registry offers (name, semver version,
// kind, the module API they need, their artifacts per runtime with size and sha256, and the
// capabilities a WASM module asks for), signed with ed25519 inside an envelope that carries the exact
// payload bytes. Verify refuses everything a client must not install from: an untrusted or bad
// signature, a malformed document, a rollback to an older index, an expired (frozen) index; the
// artifact and API checks refuse a tampered download and a plugin the host cannot run.
package index

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/kedge-io/kedge/wasm/manifest"
)

// Format is the value of the index's "format" field this package reads and writes.
const Format = 1

// Refusals. Each error returned by Verify, CheckArtifact and CheckAPI wraps exactly one of these
// (errors.Is), with a message saying what was wrong.
var (
	ErrMalformed        = errors.New("malformed plugin index")
	ErrUntrustedKey     = errors.New("index not signed by a trusted key")
	ErrBadSignature     = errors.New("index signature does not match its payload (tampered)")
	ErrRollback         = errors.New("index rollback refused")
	ErrExpired          = errors.New("index expired")
	ErrArtifactMismatch = errors.New("artifact does not match the index (tampered)")
	ErrAPIVersion       = errors.New("plugin needs a module API this host does not speak")
	ErrNotFound         = errors.New("not in the index")
)

// Kinds of plugin.
const (
	KindModule = "module" // any module (sdk.Module)
	KindMapper = "mapper" // a protocol mapper (a module that drives devices)
)

// Runtimes an artifact is built for.
const (
	RuntimeProcess = "process" // an executable for one os/arch, speaking gRPC (go-plugin)
	RuntimeWASM    = "wasm"    // a packed .wasm carrying its kedge.manifest section
)

// Index is the signed document.
type Index struct {
	// Format is the document format (Format).
	Format int `json:"format"`
	// Version grows by at least one each time the index is signed; a client refuses a lower one.
	Version uint64 `json:"version"`
	// IssuedAt and Expires bound when the index may be used (RFC 3339); a client refuses it after
	// Expires, so a registry that stops re-signing cannot freeze its clients on old plugins forever.
	IssuedAt time.Time `json:"issuedAt"`
	Expires  time.Time `json:"expires"`
	// Plugins sorted by name, then by version (lowest first).
	Plugins []Plugin `json:"plugins"`
}

// Plugin is one version of one plugin.
type Plugin struct {
	Name    string `json:"name"`
	Version string `json:"version"` // semver, no leading "v"
	Kind    string `json:"kind"`    // module | mapper
	// API is the module API version the plugin was built for (sdk.APIVersion).
	API       string     `json:"api"`
	Artifacts []Artifact `json:"artifacts"`
	// Capabilities is what the WASM artifact's manifest asks for; nil when there is no WASM artifact.
	Capabilities *manifest.Capabilities `json:"capabilities,omitempty"`
}

// Artifact is one downloadable build of a plugin.
type Artifact struct {
	Runtime string `json:"runtime"`        // process | wasm
	OS      string `json:"os,omitempty"`   // process only: GOOS
	Arch    string `json:"arch,omitempty"` // process only: GOARCH
	// URL is relative to the index's own URL (artifacts/<sha256>) or absolute.
	URL    string `json:"url"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // lower-case hex
}

var (
	nameRE    = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	goTokenRE = regexp.MustCompile(`^[a-z0-9]+$`)
)

// Decode parses an index payload strictly (unknown fields are errors) and validates it. Every error
// wraps ErrMalformed and says where the problem is.
func Decode(data []byte) (*Index, error) {
	var idx Index
	if err := decodeStrict(data, &idx); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	if err := idx.Validate(); err != nil {
		return nil, err
	}
	return &idx, nil
}

// decodeStrict decodes one JSON value into v, refusing unknown fields and trailing data, and turns
// encoding/json's errors into ones that say where (line:column or field).
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonWhere(data, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("data after the JSON object at offset %d", dec.InputOffset())
	}
	return nil
}

func jsonWhere(data []byte, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		line, col := lineCol(data, max(se.Offset-1, 0)) // Offset is just past the offending byte
		return fmt.Errorf("line %d column %d: %v", line, col, se)
	case errors.As(err, &te):
		line, col := lineCol(data, te.Offset)
		return fmt.Errorf("line %d column %d: field %q: a %s cannot be a Go %s", line, col, te.Field, te.Value, te.Type)
	case errors.Is(err, io.EOF):
		return errors.New("empty document")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("document ends early (truncated)")
	}
	return err
}

func lineCol(data []byte, off int64) (int, int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	before := data[:off]
	line := bytes.Count(before, []byte("\n")) + 1
	col := int(off) - bytes.LastIndexByte(before, '\n')
	return line, col
}

// Validate reports the first problem in the index, naming the field (plugins[2].artifacts[0].sha256);
// the error wraps ErrMalformed.
func (x *Index) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
	}
	switch {
	case x.Format != Format:
		return bad("format is %d, this client reads format %d", x.Format, Format)
	case x.Version == 0:
		return bad("version is 0; the first signed index has version 1")
	case x.IssuedAt.IsZero():
		return bad("issuedAt is missing")
	case x.Expires.IsZero():
		return bad("expires is missing")
	case !x.Expires.After(x.IssuedAt):
		return bad("expires %s is not after issuedAt %s", x.Expires.Format(time.RFC3339), x.IssuedAt.Format(time.RFC3339))
	}
	seen := map[string]bool{}
	for i, p := range x.Plugins {
		at := fmt.Sprintf("plugins[%d]", i)
		if err := p.validate(); err != nil {
			return bad("%s: %v", at, err)
		}
		key := p.Name + "@" + p.Version
		if seen[key] {
			return bad("%s: %s listed twice", at, key)
		}
		seen[key] = true
	}
	return nil
}

// Validate checks one entry on its own (what publish checks before adding it).
func (p Plugin) Validate() error { return p.validate() }

func (p Plugin) validate() error {
	if !nameRE.MatchString(p.Name) || len(p.Name) > 63 {
		return fmt.Errorf("name %q: lower-case letters, digits and '-', at most 63 characters", p.Name)
	}
	if _, err := ParseSemver(p.Version); err != nil {
		return err
	}
	if p.Kind != KindModule && p.Kind != KindMapper {
		return fmt.Errorf("kind %q: module or mapper", p.Kind)
	}
	if p.API == "" {
		return errors.New("api is missing (the module API version the plugin was built for)")
	}
	if len(p.Artifacts) == 0 {
		return errors.New("artifacts: none listed")
	}
	targets := map[string]bool{}
	hasWASM := false
	for j, a := range p.Artifacts {
		if err := a.validate(); err != nil {
			return fmt.Errorf("artifacts[%d]: %v", j, err)
		}
		t := a.Target()
		if targets[t] {
			return fmt.Errorf("artifacts[%d]: a second artifact for %s", j, t)
		}
		targets[t] = true
		hasWASM = hasWASM || a.Runtime == RuntimeWASM
	}
	if hasWASM && p.Capabilities == nil {
		return errors.New("capabilities: missing for a plugin with a wasm artifact")
	}
	return nil
}

func (a Artifact) validate() error {
	switch a.Runtime {
	case RuntimeProcess:
		if !goTokenRE.MatchString(a.OS) || !goTokenRE.MatchString(a.Arch) {
			return fmt.Errorf("os %q / arch %q: a process artifact names its GOOS and GOARCH (linux, arm64)", a.OS, a.Arch)
		}
	case RuntimeWASM:
		if a.OS != "" || a.Arch != "" {
			return errors.New("os/arch: a wasm artifact runs anywhere and names neither")
		}
	default:
		return fmt.Errorf("runtime %q: process or wasm", a.Runtime)
	}
	if a.URL == "" {
		return errors.New("url is missing")
	}
	if a.Size < 0 {
		return fmt.Errorf("size %d is negative", a.Size)
	}
	if b, err := hex.DecodeString(a.SHA256); err != nil || len(b) != 32 || strings.ToLower(a.SHA256) != a.SHA256 {
		return fmt.Errorf("sha256 %q: 64 lower-case hex digits", a.SHA256)
	}
	return nil
}

// Target names what the artifact runs on: "wasm" or "process/linux/arm64".
func (a Artifact) Target() string {
	if a.Runtime == RuntimeProcess {
		return a.Runtime + "/" + a.OS + "/" + a.Arch
	}
	return a.Runtime
}

// Sort orders plugins by name, then by semver version.
func (x *Index) Sort() {
	sort.SliceStable(x.Plugins, func(i, j int) bool {
		a, b := x.Plugins[i], x.Plugins[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return CompareVersions(a.Version, b.Version) < 0
	})
}

// Find returns the named plugin at version, or at its highest non-pre-release version when version
// is "" (the highest pre-release when it has only those).
func (x *Index) Find(name, version string) (*Plugin, error) {
	var best *Plugin
	for i := range x.Plugins {
		p := &x.Plugins[i]
		if p.Name != name {
			continue
		}
		if version != "" {
			if p.Version == version {
				return p, nil
			}
			continue
		}
		if best == nil || rank(p.Version) > rank(best.Version) ||
			rank(p.Version) == rank(best.Version) && CompareVersions(p.Version, best.Version) > 0 {
			best = p
		}
	}
	if best == nil {
		if version == "" {
			return nil, fmt.Errorf("%w: plugin %q", ErrNotFound, name)
		}
		return nil, fmt.Errorf("%w: plugin %q version %s", ErrNotFound, name, version)
	}
	return best, nil
}

func rank(v string) int {
	if s, err := ParseSemver(v); err == nil && len(s.Pre) == 0 {
		return 1
	}
	return 0
}

// Artifact returns the plugin's artifact for runtime (and os/arch for process).
func (p *Plugin) Artifact(runtime, goos, goarch string) (*Artifact, error) {
	for i := range p.Artifacts {
		a := &p.Artifacts[i]
		if a.Runtime == runtime && (runtime != RuntimeProcess || a.OS == goos && a.Arch == goarch) {
			return a, nil
		}
	}
	want := Artifact{Runtime: runtime, OS: goos, Arch: goarch}.Target()
	var have []string
	for _, a := range p.Artifacts {
		have = append(have, a.Target())
	}
	return nil, fmt.Errorf("%w: %s %s has no %s artifact (it has %s)", ErrNotFound, p.Name, p.Version, want, strings.Join(have, ", "))
}

// CheckAPI refuses a plugin built for another module API than host (sdk.APIVersion). The API
// version is the contract's major version, so it must be equal.
func (p *Plugin) CheckAPI(host string) error {
	if p.API != host {
		return fmt.Errorf("%w: %s %s needs module API %q, this host speaks %q", ErrAPIVersion, p.Name, p.Version, p.API, host)
	}
	return nil
}

// Marshal encodes the index as the payload bytes that get signed (indented, sorted plugins).
func (x *Index) Marshal() ([]byte, error) {
	x.Sort()
	if x.Plugins == nil {
		x.Plugins = []Plugin{}
	}
	b, err := json.MarshalIndent(x, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// DecodeJSON decodes one JSON value strictly (unknown fields and trailing data are errors; syntax
// and type errors name line, column and field).
func DecodeJSON(data []byte, v any) error { return decodeStrict(data, v) }

// EncodeJSON encodes v indented, ending in a newline.
func EncodeJSON(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
