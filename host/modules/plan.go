// Package modules turns the `modules:` section of a config into running modules: it decodes each
// module's settings strictly, orders modules by their declared dependencies, and runs each one with
// its own mailbox, delivery loop, store namespace, logger and metrics.
package modules

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/kedge-io/kedge/host/config"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/control"
)

// Runtime says how a module is loaded.
type Runtime = control.Runtime

const (
	Builtin = control.Builtin // compiled into the host binary
	Process = control.Process // a plugin executable speaking gRPC
	WASM    = control.WASM    // a sandboxed WebAssembly module
)

// Settings are the keys every module block has besides the module's own settings.
type Settings struct {
	Enable  *bool   `yaml:"enable" doc:"Run this module."`
	Runtime Runtime `yaml:"runtime" doc:"How the module is loaded: builtin, process or wasm."`
	Path    string  `yaml:"path" doc:"Plugin file (runtime process or wasm)."`
	SHA256  string  `yaml:"sha256" doc:"Expected SHA-256 of the plugin file, checked before every launch."`
	Group   string  `yaml:"group" doc:"Routing group of a plugin module that is not compiled in (default: its name)."`
}

// hostKeys are decoded into Settings; the rest of a module block belongs to the module.
var hostKeys = []string{"enable", "runtime", "path", "sha256", "group"}

// Planned is a module ready to start: its registration, its decoded settings and its value.
type Planned struct {
	Info     sdk.Info
	Settings Settings
	Module   sdk.Module
	// Block is the module's block as the config file wrote it (nil when absent); a reload compares it.
	Block map[string]any
}

// Plan decodes the modules section (the subtree at "modules" of a config) against the registered
// modules, and returns the enabled ones in start order. A block naming a module that is not compiled
// in is a plugin module: it needs a runtime with a loader and a path. source names the config file.
func Plan(source string, tree map[string]any, ov *config.Overrides, registered []sdk.Info, loaders Loaders) ([]Planned, error) {
	known := make(map[string]sdk.Info, len(registered))
	for _, info := range registered {
		known[info.Name] = info
	}
	section, _ := tree["modules"].(map[string]any)
	if raw, ok := tree["modules"]; ok && raw != nil && section == nil {
		return nil, &config.Error{Source: source, Key: "modules", Problem: fmt.Sprintf("expected a mapping of module names, got %T", raw)}
	}
	all := slices.Clone(registered)
	for _, name := range slices.Sorted(maps.Keys(section)) {
		if _, ok := known[name]; ok {
			continue
		}
		if !isPlugin(section[name]) {
			return nil, &config.Error{Source: source, Key: "modules." + name,
				Problem: fmt.Sprintf("unknown module (modules in this build: %s; a plugin module needs runtime process or wasm and a path)", strings.Join(slices.Sorted(maps.Keys(known)), ", "))}
		}
		// A plugin module: enabled unless the config says otherwise; its group comes from Settings.
		all = append(all, sdk.Info{Name: name, Enabled: true})
	}
	var enabled []Planned
	var invalid []error
	for _, info := range all {
		p, on, err := planOne(source, section[info.Name], ov, info, loaders)
		if err != nil {
			return nil, err
		}
		if on {
			enabled = append(enabled, p)
			invalid = append(invalid, Validate(source, p)...)
		}
	}
	if len(invalid) > 0 {
		return nil, errors.Join(invalid...)
	}
	return order(source, enabled)
}

// Validate runs the module's own check of its settings and returns each problem as a *config.Error
// naming source and the setting's key, "modules.<name>.<key>": sdk.Validator for a builtin module, a
// SettingsChecker (the plugin process launched for that check alone) for a plugin module. A module
// without either has none. A plugin that cannot be asked is not a settings problem: its Start
// reports why it does not start.
func Validate(source string, p Planned) []error {
	var problems []*sdk.SettingError
	switch p.Settings.Runtime {
	case Builtin:
		if v, ok := p.Module.(sdk.Validator); ok {
			problems = sdk.SettingErrors(v.Validate())
		}
	default:
		if c, ok := p.Module.(SettingsChecker); ok {
			problems, _ = c.CheckSettings(context.Background())
		}
	}
	var out []error
	for _, se := range problems {
		key := "modules." + p.Info.Name
		if se.Key != "" {
			key += "." + se.Key
		}
		out = append(out, &config.Error{Source: source, Key: key, Problem: se.Problem})
	}
	return out
}

// isPlugin reports whether a module block asks for a non-builtin runtime.
func isPlugin(block any) bool {
	m, ok := block.(map[string]any)
	if !ok {
		return false
	}
	rt, _ := m["runtime"].(string)
	return rt != "" && Runtime(rt) != Builtin
}

// PlanModule plans one module from its block and the overrides (nil: none) regardless of whether it
// is enabled and without checking its requirements: a swap replaces a running module whose place in
// the order is known.
func PlanModule(source, name string, block map[string]any, ov *config.Overrides, registered []sdk.Info, loaders Loaders) (Planned, error) {
	info, ok := sdk.Info{Name: name, Enabled: true}, false
	for _, i := range registered {
		if i.Name == name {
			info, ok = i, true
		}
	}
	if !ok && !isPlugin(block) {
		return Planned{}, &config.Error{Source: source, Key: "modules." + name, Problem: "unknown module; a plugin module needs runtime process or wasm and a path"}
	}
	b := maps.Clone(block) // the caller's block stays as it was
	if b == nil {
		b = map[string]any{}
	}
	b["enable"] = true
	p, _, err := planOne(source, b, ov, info, loaders)
	p.Block = block
	if err == nil {
		if invalid := Validate(source, p); len(invalid) > 0 {
			err = errors.Join(invalid...)
		}
	}
	return p, err
}

func planOne(source string, raw any, ov *config.Overrides, info sdk.Info, loaders Loaders) (Planned, bool, error) {
	at := "modules." + info.Name
	block := map[string]any{}
	if raw != nil {
		m, ok := raw.(map[string]any)
		if !ok {
			return Planned{}, false, &config.Error{Source: source, Key: at, Problem: fmt.Sprintf("expected a mapping, got %T", raw)}
		}
		block = m
	}
	fileBlock, _ := raw.(map[string]any)
	hostPart, modPart := map[string]any{}, map[string]any{}
	for k, v := range block {
		if slices.Contains(hostKeys, k) {
			hostPart[k] = v
		} else {
			modPart[k] = v
		}
	}
	s := Settings{Runtime: Builtin}
	if err := config.Decode(source, map[string]any{"modules": map[string]any{info.Name: hostPart}}, at, ov, &s); err != nil {
		return Planned{}, false, err
	}
	on := info.Enabled
	if s.Enable != nil {
		on = *s.Enable
	}
	switch s.Runtime {
	case Builtin:
		if info.New == nil {
			return Planned{}, false, &config.Error{Source: source, Key: at + ".runtime", Problem: "this module is not compiled in; use runtime process or wasm with a path"}
		}
		mod := info.New()
		// The module's settings are decoded even when it is disabled, so a typo never hides.
		if err := config.Decode(source, map[string]any{"modules": map[string]any{info.Name: modPart}}, at, ov, mod); err != nil {
			return Planned{}, false, err
		}
		return Planned{Info: info, Settings: s, Module: mod, Block: fileBlock}, on, nil
	case Process, WASM:
		loader, ok := loaders[s.Runtime]
		if !ok {
			return Planned{}, false, &config.Error{Source: source, Key: at + ".runtime",
				Problem: fmt.Sprintf("runtime %q is not available in this build; use builtin", s.Runtime)}
		}
		if s.Path == "" {
			return Planned{}, false, &config.Error{Source: source, Key: at + ".path", Problem: fmt.Sprintf("runtime %s needs the plugin file's path", s.Runtime)}
		}
		group := s.Group
		if group == "" {
			group = info.Group
		}
		if group == "" {
			group = info.Name
		}
		info.Group = group
		if !on {
			return Planned{Info: info, Settings: s, Block: fileBlock}, false, nil
		}
		if ov != nil {
			ov.ApplyRaw(at, modPart) // KEDGE_/--set reach a plugin's own settings; it decodes them strictly
			for k := range modPart { // ...except the host's keys, which Decode already took into s
				if slices.Contains(hostKeys, strings.ToLower(k)) {
					delete(modPart, k)
				}
			}
		}
		mod, err := loader.New(Spec{Name: info.Name, Group: group, Settings: s, Config: modPart})
		if err != nil {
			return Planned{}, false, &config.Error{Source: source, Key: at, Problem: err.Error()}
		}
		return Planned{Info: info, Settings: s, Module: mod, Block: fileBlock}, true, nil
	default:
		return Planned{}, false, &config.Error{Source: source, Key: at + ".runtime",
			Problem: fmt.Sprintf("expected one of builtin, process, wasm, got %q", s.Runtime)}
	}
}

// order sorts modules so each starts after the modules it requires (stable: registration order
// otherwise), and rejects a requirement on a disabled module or a cycle.
func order(source string, mods []Planned) ([]Planned, error) {
	byName := make(map[string]Planned, len(mods))
	for _, p := range mods {
		byName[p.Info.Name] = p
	}
	const (
		unvisited = iota
		visiting
		done
	)
	state := map[string]int{}
	var out []Planned
	var visit func(name string, path []string) error
	visit = func(name string, path []string) error {
		switch state[name] {
		case done:
			return nil
		case visiting:
			return &config.Error{Source: source, Key: "modules",
				Problem: "dependency cycle: " + strings.Join(append(path, name), " -> ")}
		}
		state[name] = visiting
		p := byName[name]
		for _, req := range p.Info.Requires {
			if _, ok := byName[req]; !ok {
				return &config.Error{Source: source, Key: "modules." + name,
					Problem: fmt.Sprintf("requires module %q, which is disabled or not in this build; enable it or disable %s", req, name)}
			}
			if err := visit(req, append(path, name)); err != nil {
				return err
			}
		}
		state[name] = done
		out = append(out, p)
		return nil
	}
	for _, p := range mods {
		if err := visit(p.Info.Name, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}
