package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/config"
	modulepb "github.com/kedge-io/kedge/sdk/proto"
)

// configSource names the module's config block in errors: "config: modules.echo.greeting: ...".
const configSource = "config"

// decodeConfig decodes the module's settings, sent by the host as a JSON object, strictly into dst
// (the value sdk.Info.New returned, holding the defaults) with the same decoder the host uses for
// builtin modules, so mistakes read the same: "config: modules.<name>.<key>: expected ...".
func decodeConfig(module string, raw []byte, dst any) error {
	tree, err := parseConfig(raw)
	if err != nil {
		return &config.Error{Source: configSource, Key: "modules." + module, Problem: err.Error()}
	}
	if err := config.Decode(configSource, map[string]any{"modules": map[string]any{module: tree}}, "modules."+module, nil, dst); err != nil {
		return err
	}
	return validateConfig(module, dst)
}

// validateConfig runs the module's own check of its settings (sdk.Validator), as the host does for a
// builtin module, each problem as "config: modules.<name>.<key>: <problem>".
func validateConfig(module string, mod any) error {
	v, ok := mod.(sdk.Validator)
	if !ok {
		return nil
	}
	var out []error
	for _, se := range sdk.SettingErrors(v.Validate()) {
		key := "modules." + module
		if se.Key != "" {
			key += "." + se.Key
		}
		out = append(out, &config.Error{Source: configSource, Key: key, Problem: se.Problem})
	}
	return errors.Join(out...)
}

// settingProblems turns what decodeConfig returned into problems keyed inside the module's block
// ("workers", "quic.server"; "" for the block as a whole), for the host to report against its file.
func settingProblems(module string, err error) []*modulepb.SettingProblem {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*modulepb.SettingProblem
		for _, e := range j.Unwrap() {
			out = append(out, settingProblems(module, e)...)
		}
		return out
	}
	var ce *config.Error
	if !errors.As(err, &ce) {
		return []*modulepb.SettingProblem{{Problem: err.Error()}}
	}
	at := "modules." + module
	key := ""
	if rest, ok := strings.CutPrefix(ce.Key, at+"."); ok {
		key = rest
	} else if ce.Key != at {
		key = ce.Key // not under the module's block (never from decodeConfig); keep it whole
	}
	return []*modulepb.SettingProblem{{Key: key, Problem: ce.Problem}}
}

// parseConfig reads a JSON object into the shapes the YAML loader produces (map[string]any, []any,
// string, bool, int64/uint64 for whole numbers, float64 otherwise), so integers stay integers.
func parseConfig(raw []byte) (map[string]any, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("settings are not valid JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("settings are not one JSON object: trailing data")
	}
	if v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("expected a mapping of settings, got JSON %T", v)
	}
	return numbers(m).(map[string]any), nil
}

// numbers replaces each json.Number in v by int64, uint64 or float64.
func numbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = numbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = numbers(e)
		}
	case json.Number:
		s := x.String()
		if !strings.ContainsAny(s, ".eE") {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				return n
			}
			if n, err := strconv.ParseUint(s, 10, 64); err == nil {
				return n
			}
		}
		f, _ := x.Float64() // the decoder only produces valid numbers; a huge one becomes ±Inf
		return f
	}
	return v
}
