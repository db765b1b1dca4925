// Package wasmruntime (import path github.com/kedge-io/kedge/wasm/runtime) runs Kedge modules that
// are WebAssembly reactors, on wazero. It is the host side of the ABI in wasm/abi: a Loader turns a
// `runtime: wasm` module block into an sdk.Module the module manager drives like a builtin one.
//
// Each module gets its own wazero runtime, so its manifest's memory limit applies to it alone; the
// compiled code is shared through one compilation cache (on disk when Options.CacheDir is set).
// Each call into the guest runs under the manifest's deadline: a guest past it is killed, the call
// fails and a fresh instance is made at once (the module reports unhealthy only if that fails).
package wasmruntime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/tetratelabs/wazero"

	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/wasm/manifest"
)

// Options configure a Loader.
type Options struct {
	// CacheDir keeps compiled modules across restarts (wazero's compilation cache). Empty: compiled
	// code is shared in memory only, and every edgecore start compiles each module again.
	CacheDir string
}

// Loader makes WASM modules: it implements modules.Loader for runtime wasm. One Loader serves
// every WASM module of a process; Close it after the modules stopped.
type Loader struct {
	cache wazero.CompilationCache
}

var _ modules.Loader = (*Loader)(nil)

// NewLoader returns a Loader whose compilation cache lives in opts.CacheDir (created if missing).
func NewLoader(opts Options) (*Loader, error) {
	if opts.CacheDir == "" {
		return &Loader{cache: wazero.NewCompilationCache()}, nil
	}
	if err := os.MkdirAll(opts.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("wasm compilation cache: %w", err)
	}
	cache, err := wazero.NewCompilationCacheWithDir(opts.CacheDir)
	if err != nil {
		return nil, fmt.Errorf("wasm compilation cache in %s: %w", opts.CacheDir, err)
	}
	return &Loader{cache: cache}, nil
}

// Close releases the compilation cache (compiled code in memory; the files stay).
func (l *Loader) Close() error {
	return l.cache.Close(context.Background())
}

var hexSum = regexp.MustCompile(`^[0-9a-f]{64}$`)

// New checks the module file without running it: it exists, is WebAssembly, matches the pinned
// sha256 and carries a valid manifest. The returned module compiles and instantiates in Start.
func (l *Loader) New(spec modules.Spec) (sdk.Module, error) {
	path := spec.Settings.Path
	wasm, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read wasm module: %w", err)
	}
	want := strings.ToLower(strings.TrimPrefix(spec.Settings.SHA256, "sha256:"))
	got := fileSum(wasm)
	switch {
	case want == "":
		return nil, fmt.Errorf("sha256 is required for a wasm module (plugins are pinned): add sha256: %s — "+
			"wasmpack prints it, or run sha256sum %s", got, path)
	case !hexSum.MatchString(want):
		return nil, fmt.Errorf("sha256 %q is not 64 hex digits; the file's is %s", spec.Settings.SHA256, got)
	}
	if _, err := manifest.Read(wasm); errors.Is(err, manifest.ErrNotWASM) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if got != want {
		return nil, checksumError(path, got, want)
	}
	man, err := manifest.Read(wasm)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	settings, interruptible, err := hostSettings(spec.Config)
	if err != nil {
		return nil, err
	}
	config := []byte("{}")
	if len(settings) > 0 {
		if config, err = json.Marshal(settings); err != nil {
			return nil, fmt.Errorf("module settings cannot be passed to the guest as JSON: %w", err)
		}
	}
	return &Module{loader: l, spec: spec, sum: want, manifest: man, config: config, interruptible: interruptible}, nil
}

// KeyInterruptible is the operator's setting in a WASM module's block that trades the deadline's
// hold on pure computation for speed; the host takes it out before the guest sees its settings.
const KeyInterruptible = "interruptible"

// hostSettings splits the host's own settings off a module block's settings: what is left goes to
// the guest. interruptible defaults to true.
func hostSettings(block map[string]any) (guest map[string]any, interruptible bool, err error) {
	v, ok := block[KeyInterruptible]
	if !ok {
		return block, true, nil
	}
	if interruptible, ok = v.(bool); !ok {
		return nil, false, fmt.Errorf("%s: want true or false, got %v (%T)", KeyInterruptible, v, v)
	}
	guest = make(map[string]any, len(block)-1)
	for k, v := range block {
		if k != KeyInterruptible {
			guest[k] = v
		}
	}
	return guest, interruptible, nil
}

func fileSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func checksumError(path, got, want string) error {
	return fmt.Errorf("%s: sha256 mismatch: the file's is %s, the config pins %s; "+
		"if you replaced the module deliberately, set sha256: %s", path, got, want, got)
}
