package sdktest

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
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

// SettingCase is one row of a module's table of bad settings: Settings (the keys set in the module's
// block, the rest keep their defaults) must fail validation at Key, a setting's path inside the block
// ("workers", "leaderElection.renewDeadline"), with a problem containing Problem.
type SettingCase struct {
	Name     string
	Settings map[string]any
	Key      string
	Problem  string
}

// Case is one row of a table of bad settings (a SettingCase without field names, which go vet asks
// for in a literal of another package's struct).
func Case(name string, settings map[string]any, key, problem string) SettingCase {
	return SettingCase{Name: name, Settings: settings, Key: key, Problem: problem}
}

// ValidateSettings runs a module's table of bad settings: the module registered as name must pass
// validation with its defaults, and each case must fail it (one subtest each) with
// "<file>: modules.<name>.<Key>: <Problem...>" — the line `edgecore validate` and startup print.
func ValidateSettings(t *testing.T, name string, cases []SettingCase) {
	t.Helper()
	ValidateSettingsOver(t, name, nil, cases)
}

// ValidateSettingsOver is ValidateSettings for a module whose defaults are not enough when it is
// enabled (a registry, a tunnel or a token to name): base (keys of the module's block) must pass, and
// each case's Settings are laid over base (a top-level key replaces base's) and must fail.
func ValidateSettingsOver(t *testing.T, name string, base map[string]any, cases []SettingCase) {
	t.Helper()
	info, ok := sdk.Lookup(name)
	if !ok {
		t.Fatalf("sdktest: module %s is not registered", name)
	}
	if _, err := Validate(t, info, base); err != nil {
		t.Fatalf("the defaults of %s with %v are refused: %v", name, base, err)
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			settings := maps.Clone(base)
			if settings == nil {
				settings = map[string]any{}
			}
			maps.Copy(settings, tc.Settings)
			path, err := Validate(t, info, settings)
			want := path + ": modules." + name + "." + tc.Key + ": " + tc.Problem
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v\nwant an error containing %q", err, want)
			}
		})
	}
}
