package config

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Overrides are key=value settings from the environment and --set flags, applied by Decode over
// the file. Keys are dotted paths matched case-insensitively against the schema, so the
// upper-case KEDGE_MODULES__EVENTBUS__MQTTMODE reaches the field tagged `yaml:"mqttMode"`.
// Values are text, parsed into the field's type ("true", "10", "1.5", "10s", "[a, b]").
//
// Decode marks the overrides it applies; one Overrides value is meant to be passed to every
// Decode call of a start-up (not concurrently), then Unused reports the ones nothing claimed.
type Overrides struct {
	list []*override
}

type override struct {
	source string   // "environment KEDGE_NODE__NAME" or "flag --set node.name=edge1"
	key    string   // the dotted path as the user spelled it (lower-cased for the environment)
	path   []string // key split at the dots
	value  string
	used   bool
	hint   string // why the last Decode that looked at it could not place it
	// rootKeys lists the top-level keys when the last Decode could not place it at the top level.
	rootKeys []string
}

// EnvOverrides turns environment entries ("NAME=value", as from os.Environ) that start with
// prefix into overrides: KEDGE_NODE__NAME=edge1 sets node.name; "__" separates path segments
// because a single "_" is common inside names. A prefix without its trailing "_" gets one.
// A variable is taken as a setting, and a typo in it reported, when it separates levels with "__"
// or its first word (up to the first "_") names a top-level key: KEDGE_NODE_NAME is an error that
// says to write KEDGE_NODE__NAME. A variable with neither (KEDGE_TEST_TIMEOUT_SCALE) belongs to
// some other program sharing the prefix and is left alone.
func EnvOverrides(prefix string, environ []string) Overrides {
	if !strings.HasSuffix(prefix, "_") {
		prefix += "_"
	}
	var o Overrides
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok || rest == "" {
			continue
		}
		path := strings.Split(strings.ToLower(rest), "__")
		o.list = append(o.list, &override{
			source: "environment " + name,
			key:    strings.Join(path, "."),
			path:   path,
			value:  value,
		})
	}
	return o
}

// ParseSet parses --set values such as "modules.eventbus.mqttMode=external". The key keeps its
// case, which matters only for map entries (node.labels.Zone=a creates the key "Zone").
func ParseSet(values []string) (Overrides, error) {
	var o Overrides
	for _, raw := range values {
		source := "flag --set " + oneLine(raw)
		if r := []rune(source); len(r) > 80 {
			source = string(r[:77]) + "..."
		}
		key, value, ok := strings.Cut(raw, "=")
		path := strings.Split(key, ".")
		if !ok || strings.ContainsFunc(key, isSpace) || slices.Contains(path, "") {
			return Overrides{}, &Error{Source: source, Problem: "expected key=value with a dotted key, e.g. --set node.name=edge1"}
		}
		o.list = append(o.list, &override{source: source, key: key, path: path, value: value})
	}
	return o, nil
}

func isSpace(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' }

// Merge returns o followed by later; Decode applies overrides in order, so later wins.
// The result shares entries with o and later: marking one used marks it in all of them.
func (o Overrides) Merge(later Overrides) Overrides {
	return Overrides{list: slices.Concat(o.list, later.list)}
}

// Without returns the overrides but those of the dotted keys given (compared without case), for a
// caller that sets those keys itself and must not have them overridden.
func (o Overrides) Without(keys ...string) Overrides {
	var out Overrides
	for _, x := range o.list {
		if !slices.ContainsFunc(keys, func(k string) bool { return strings.EqualFold(k, strings.Join(x.path, ".")) }) {
			out.list = append(out.list, x)
		}
	}
	return out
}

// Unused returns an "unknown key" error for every override that no Decode call applied.
func (o Overrides) Unused() []*Error {
	var errs []*Error
	for _, x := range o.list {
		if x.used || x.foreign() {
			continue
		}
		var hints []string
		if x.hint != "" {
			hints = append(hints, x.hint)
		}
		if strings.HasPrefix(x.source, "environment ") && strings.Contains(x.key, "_") {
			hints = append(hints, "separate levels with a double underscore, e.g. KEDGE_NODE__NAME")
		}
		problem := "unknown key " + x.key
		if len(hints) > 0 {
			problem += " (" + strings.Join(hints, "; ") + ")"
		}
		errs = append(errs, &Error{Source: x.source, Problem: problem})
	}
	return errs
}

// foreign reports whether x is an environment variable that only shares the prefix: one level
// (no "__") that no Decode placed, whose first word is no top-level key.
func (x *override) foreign() bool {
	if !strings.HasPrefix(x.source, "environment ") || len(x.path) != 1 || x.rootKeys == nil {
		return false
	}
	first, _, _ := strings.Cut(x.path[0], "_")
	for _, k := range x.rootKeys {
		if strings.EqualFold(k, first) {
			return false
		}
	}
	return true
}

// under reports whether path lies at or below the segments at (case-insensitively) and
// returns the rest of it.
func under(path, at []string) ([]string, bool) {
	if len(path) < len(at) {
		return nil, false
	}
	for i, s := range at {
		if !strings.EqualFold(path[i], s) {
			return nil, false
		}
	}
	return path[len(at):], true
}

// set applies override x, whose remaining path below v is rel. It reports whether the path
// exists in the schema; when it does not, x.hint says what was found instead.
func (d *decoder) set(path string, v reflect.Value, rel []string, x *override) (bool, error) {
	if len(rel) == 0 {
		return true, d.decodeText(path, x.value, v)
	}
	t := v.Type()
	switch {
	case t.Kind() == reflect.Pointer:
		if !v.IsNil() {
			return d.set(path, v.Elem(), rel, x)
		}
		// Allocate only if the path really leads somewhere, so a typo changes nothing.
		nv := reflect.New(t.Elem())
		ok, err := d.set(path, nv.Elem(), rel, x)
		if ok && err == nil {
			v.Set(nv)
		}
		return ok, err
	case isRaw(t):
		return false, nil // for the Decode of that subtree
	case t.Kind() == reflect.Struct && t != durationType && !isTextUnmarshaler(t):
		fs := fields(v, true)
		for _, f := range fs {
			if strings.EqualFold(f.name, rel[0]) {
				return d.set(join(path, f.name), f.value, rel[1:], x)
			}
		}
		x.hint = "known keys"
		if path != "" {
			x.hint += " under " + path
		} else {
			x.rootKeys = x.rootKeys[:0]
			for _, f := range fs {
				x.rootKeys = append(x.rootKeys, f.name)
			}
		}
		x.hint += ": " + names(fs)
		return false, nil
	case t.Kind() == reflect.Map && t.Key().Kind() == reflect.String:
		// Replace an existing entry whatever its case: environment names are upper-case.
		key := rel[0]
		kv := reflect.ValueOf(key).Convert(t.Key())
		if !v.MapIndex(kv).IsValid() {
			keys := v.MapKeys()
			slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
			if i := slices.IndexFunc(keys, func(k reflect.Value) bool { return strings.EqualFold(k.String(), key) }); i >= 0 {
				kv, key = keys[i], keys[i].String()
			}
		}
		elem := reflect.New(t.Elem()).Elem()
		if old := v.MapIndex(kv); old.IsValid() {
			elem.Set(old)
		}
		ok, err := d.set(mapKey(path, key), elem, rel[1:], x)
		if ok && err == nil {
			out := reflect.MakeMapWithSize(t, v.Len()+1)
			for it := v.MapRange(); it.Next(); {
				out.SetMapIndex(it.Key(), it.Value())
			}
			out.SetMapIndex(kv, elem)
			v.Set(out)
		}
		return ok, err
	case t.Kind() == reflect.Slice:
		x.hint = fmt.Sprintf("%s is a list: set it whole, e.g. %s=[a, b]", path, path)
	default:
		x.hint = path + " is a single value, not a mapping"
	}
	return false, nil
}

// decodeText decodes an override value. Lists, maps and structs are written in YAML flow
// syntax ("[a, b]", "{k: v}"); a list may also be plain comma-separated "a,b".
func (d *decoder) decodeText(path, s string, v reflect.Value) error {
	t := v.Type()
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var composite bool
	switch t.Kind() {
	case reflect.Slice, reflect.Map, reflect.Interface:
		composite = true
	case reflect.Struct:
		composite = !isTextUnmarshaler(t)
	}
	if !composite {
		return d.decode(path, s, v)
	}
	var in any
	if t.Kind() == reflect.Slice && !strings.HasPrefix(strings.TrimSpace(s), "[") {
		in = splitList(s)
	} else if err := yaml.Unmarshal([]byte(s), &in); err != nil {
		return d.fail(path, "expected YAML such as [a, b] or {key: value}, got %s (%s)",
			quote(s), oneLine(strings.TrimPrefix(err.Error(), "yaml: ")))
	}
	return d.decode(path, in, v)
}

// splitList reads "a, b,c" as a list; "" is the empty list, so an override can clear one.
func splitList(s string) []any {
	out := []any{}
	if strings.TrimSpace(s) == "" {
		return out
	}
	for p := range strings.SplitSeq(s, ",") {
		out = append(out, strings.TrimSpace(p))
	}
	return out
}

// ApplyRaw writes the overrides under the dotted path at into tree, a settings section kept raw
// because its schema lives elsewhere (a plugin module decodes its own settings, strictly). Values are
// parsed as YAML scalars ("5" an integer, "true" a boolean, "10s" a string); a key matches an
// existing one case-insensitively, else it is created as spelled. The overrides count as used.
func (o Overrides) ApplyRaw(at string, tree map[string]any) {
	prefix := strings.Split(at, ".")
	for _, x := range o.list {
		rel, ok := under(x.path, prefix)
		if !ok || len(rel) == 0 {
			continue
		}
		m := tree
		for i, seg := range rel {
			key := seg
			for k := range m {
				if strings.EqualFold(k, seg) {
					key = k
					break
				}
			}
			if i == len(rel)-1 {
				var v any
				if err := yaml.Unmarshal([]byte(x.value), &v); err != nil || v == nil {
					v = x.value
				}
				m[key] = v
				break
			}
			next, ok := m[key].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[key] = next
			}
			m = next
		}
		x.used = true
	}
}

// Attribute gives each *Error in err (joined errors included) whose key an override set the source of
// that override instead of the file's: a check that runs after decoding (a module's Validate, the
// host's own ranges) then names KEDGE_MODULES__CONSOLE__PAGESIZE or the --set flag that gave the bad
// value, not a file that never held it. The last override of a key wins, as in Decode.
func (o Overrides) Attribute(err error) {
	switch e := err.(type) {
	case nil:
	case *Error:
		for i := len(o.list) - 1; i >= 0; i-- {
			if x := o.list[i]; x.used && strings.EqualFold(x.key, e.Key) {
				e.Source = x.source
				return
			}
		}
	case interface{ Unwrap() []error }:
		for _, inner := range e.Unwrap() {
			o.Attribute(inner)
		}
	case interface{ Unwrap() error }:
		o.Attribute(e.Unwrap())
	}
}
