package sdktest

import (
	"os"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/kedge-io/kedge/host/config"
	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/sdk"
)

// Validate checks a module's settings the way `edgecore validate` and startup do, without starting
// anything: config (the module's settings block) is written to a config file in t.TempDir(), loaded,
// decoded strictly and checked by the module's sdk.Validator. It returns the file's path (errors name
// it: "<file>: modules.<name>.<key>: <problem>") and the error, nil when the settings are valid.
func Validate(t testing.TB, info sdk.Info, config map[string]any) (path string, err error) {
	t.Helper()
	block := withEnable(config, nil)
	data, err := yaml.Marshal(map[string]any{"modules": map[string]any{info.Name: block}})
	if err != nil {
		t.Fatalf("sdktest: %v", err)
	}
	path = filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatalf("sdktest: %v", err)
	}
	return path, plan(path, info)
}

func plan(path string, info sdk.Info) error {
	tree, err := config.LoadFile(path)
	if err != nil {
		return err
	}
	info.Requires = nil // the module alone: its requirements are not the point
	_, err = modules.Plan(path, tree, nil, []sdk.Info{info}, nil)
	return err
}
