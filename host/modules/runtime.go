package modules

import (
	"context"

	"github.com/kedge-io/kedge/sdk"
)

// Loader makes modules for a runtime other than builtin (a plugin process, a WASM module). New must
// be cheap and check what it can without running anything (the file exists; its checksum, when one is
// configured, matches) so mistakes surface when the config is loaded; the returned module launches
// its plugin in Start, and is driven by the manager exactly like a builtin module.
type Loader interface {
	New(spec Spec) (sdk.Module, error)
}

// Spec describes one module instance to a Loader.
type Spec struct {
	Name     string         // the module's name (its routing address and store namespace)
	Group    string         // its routing group
	Settings Settings       // runtime, path, sha256
	Config   map[string]any // the module's own settings, undecoded: the plugin decodes them strictly
}

// SettingsChecker is a module of a runtime other than builtin that can check its settings without
// starting (runtime process: the plugin is launched for one Validate call and stopped). Plan,
// PlanModule and so `validate`, startup, reload and swap call it where they call sdk.Validator on a
// builtin module. The problems' keys are relative to the module's block; err means the module could
// not be asked (its Start reports that).
type SettingsChecker interface {
	CheckSettings(ctx context.Context) (problems []*sdk.SettingError, err error)
}

// Loaders maps a runtime to its loader; a runtime without one is "not available in this build".
type Loaders map[Runtime]Loader

// Preparer is a module with slow work to do before it can start, independent of the host it runs in:
// a WASM module compiling its code (seconds on a small or busy device, once per code thanks to the
// compilation cache). The manager calls Prepare before Start, bounded by Deps.PrepareTimeout rather
// than StartTimeout, so the fixed start deadline covers only the start proper. A swap prepares and
// starts the new instance while the old one keeps serving. Start must still work without Prepare
// (it prepares then itself).
type Preparer interface {
	Prepare(ctx context.Context) error
}
