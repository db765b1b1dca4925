package config

import (
	"encoding"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Decode strictly decodes the subtree of tree at the dotted path at ("" for the root) into dst,
// a pointer to a value already holding the defaults: keys absent from the tree, and YAML nulls,
// keep their defaults. Then it applies the overrides in ov (may be nil) whose path falls under
// at, and marks them used. source names the file in errors.
//
// Struct keys come from `yaml:"name"` tags; fields without a yaml tag, or tagged "-", are not
// configuration. `yaml:",inline"` on a struct, pointer-to-struct or interface-holding-a-pointer
// field flattens its keys into the parent. A map[string]any field is copied raw, and overrides
// below it are left for a later Decode of that subtree.
//
// Mistakes in the tree or in override values are *Error; a dst that is not a non-nil pointer,
// or a field type Decode does not support, is a plain error.
func Decode(source string, tree map[string]any, at string, ov *Overrides, dst any) error {
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("config.Decode: dst must be a non-nil pointer, got %T", dst)
	}
	var segs []string
	if at != "" {
		segs = strings.Split(at, ".")
	}
	d := &decoder{source: source}
	var sub any
	if tree != nil {
		sub = tree
	}
	for i, s := range segs {
		if sub == nil {
			break
		}
		m, ok := asMap(sub)
		if !ok {
			return d.fail(strings.Join(segs[:i], "."), "expected a mapping, got %s", d.describe(sub))
		}
		sub = m[s]
	}
	if err := d.decode(at, sub, rv.Elem()); err != nil {
		return err
	}
	if ov == nil {
		return nil
	}
	for _, x := range ov.list {
		rel, ok := under(x.path, segs)
		if !ok {
			continue
		}
		od := &decoder{source: x.source, text: true}
		applied, err := od.set(at, rv.Elem(), rel, x)
		x.used = x.used || applied
		if err != nil {
			return err
		}
	}
	return nil
}

// decoder carries what error messages need. text is set for override values, which arrive as
// strings ("10", "true") that must be parsed rather than rejected as the wrong YAML type.
type decoder struct {
	source string
	text   bool
}

var (
	durationType        = reflect.TypeFor[time.Duration]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	textMarshalerType   = reflect.TypeFor[encoding.TextMarshaler]()
)

func (d *decoder) fail(key, format string, args ...any) error {
	return &Error{Source: d.source, Key: key, Problem: fmt.Sprintf(format, args...)}
}

// decode stores in (a YAML value: map, list, scalar or nil) into v, which is addressable.
func (d *decoder) decode(path string, in any, v reflect.Value) error {
	if in == nil {
		return nil // YAML null, or the key is absent: keep the default
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return d.decode(path, in, v.Elem())
	}
	if v.Type() == durationType {
		return d.duration(path, in, v)
	}
	if isTextUnmarshaler(v.Type()) {
		s, ok := scalarText(in)
		if !ok {
			return d.fail(path, "expected a string, got %s", d.describe(in))
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
			return d.fail(path, "invalid value %s: %s", quote(s), oneLine(err.Error()))
		}
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		s, ok := in.(string)
		if !ok && d.text {
			s, ok = scalarText(in)
		}
		if !ok {
			if _, scalar := scalarText(in); scalar {
				return d.fail(path, "expected a string, got %s (quote it to make it a string)", d.describe(in))
			}
			return d.fail(path, "expected a string, got %s", d.describe(in))
		}
		v.SetString(s)
	case reflect.Bool:
		b, ok := in.(bool)
		if s, isStr := in.(string); isStr && d.text {
			var err error
			b, err = strconv.ParseBool(s)
			ok = err == nil
		}
		if !ok {
			return d.fail(path, "expected a boolean (true or false), got %s", d.describe(in))
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return d.integer(path, in, v)
	case reflect.Float32, reflect.Float64:
		var f float64
		switch x := in.(type) {
		case int:
			f = float64(x)
		case int64:
			f = float64(x)
		case uint64:
			f = float64(x)
		case float64:
			f = x
		case string:
			var err error
			if f, err = strconv.ParseFloat(x, 64); err != nil || !d.text {
				return d.fail(path, "expected a number, got %s", d.describe(in))
			}
		default:
			return d.fail(path, "expected a number, got %s", d.describe(in))
		}
		if v.OverflowFloat(f) {
			return d.fail(path, "expected a number that fits in %s, got %s", v.Type(), d.describe(in))
		}
		v.SetFloat(f)
	case reflect.Slice:
		list, ok := in.([]any)
		if s, isStr := in.(string); isStr && d.text {
			list, ok = splitList(s), true
		}
		if !ok {
			return d.fail(path, "expected a list, got %s", d.describe(in))
		}
		out := reflect.MakeSlice(v.Type(), len(list), len(list))
		for i, item := range list {
			if err := d.decode(fmt.Sprintf("%s[%d]", path, i), item, out.Index(i)); err != nil {
				return err
			}
		}
		v.Set(out)
	case reflect.Map:
		return d.mapping(path, in, v)
	case reflect.Struct:
		m, ok := asMap(in)
		if !ok {
			return d.fail(path, "expected a mapping, got %s", d.describe(in))
		}
		fs := fields(v, true)
		for _, k := range sortedKeys(m) {
			i := slices.IndexFunc(fs, func(f field) bool { return f.name == k })
			if i < 0 && k == strings.ToLower(k) {
				// Environment overrides arrive lower-cased (variable names carry no case); where the
				// schema is not the host's (a plugin's own settings) they reach the decoder so.
				i = lowerMatch(k, fs)
			}
			if i < 0 {
				return d.fail(mapKey(path, k), "%s", unknownKey(k, fs))
			}
			if err := d.decode(join(path, k), m[k], fs[i].value); err != nil {
				return err
			}
		}
	case reflect.Interface:
		if v.NumMethod() != 0 {
			return fmt.Errorf("config: %s: unsupported field type %s", path, v.Type())
		}
		v.Set(reflect.ValueOf(copyTree(in)))
	default:
		return fmt.Errorf("config: %s: unsupported field type %s", path, v.Type())
	}
	return nil
}

func (d *decoder) duration(path string, in any, v reflect.Value) error {
	const want = `expected a duration like "10s"`
	s, ok := in.(string)
	if !ok {
		return d.fail(path, "%s, got %s", want, d.describe(in))
	}
	dur, err := time.ParseDuration(s)
	if err != nil {
		return d.fail(path, "%s, got %s", want, d.describe(in))
	}
	v.SetInt(int64(dur))
	return nil
}

// integer goes through big.Int so that every source (int, int64, uint64, whole floats, text)
// is range-checked against every target kind the same way.
func (d *decoder) integer(path string, in any, v reflect.Value) error {
	n := new(big.Int)
	ok := true
	switch x := in.(type) {
	case int:
		n.SetInt64(int64(x))
	case int64:
		n.SetInt64(x)
	case uint64:
		n.SetUint64(x)
	case float64:
		if ok = !math.IsInf(x, 0) && x == math.Trunc(x); ok {
			big.NewFloat(x).Int(n)
		}
	case string:
		_, ok = n.SetString(x, 0)
		ok = ok && d.text
	default:
		ok = false
	}
	if !ok {
		return d.fail(path, "expected an integer, got %s", d.describe(in))
	}
	bits := uint(v.Type().Bits())
	lo, hi := new(big.Int), new(big.Int).Lsh(big.NewInt(1), bits)
	if v.CanInt() {
		hi.Rsh(hi, 1)
		lo.Neg(hi)
	}
	hi.Sub(hi, big.NewInt(1))
	if n.Cmp(lo) < 0 || n.Cmp(hi) > 0 {
		return d.fail(path, "expected an integer between %s and %s, got %s", lo, hi, d.describe(in))
	}
	if v.CanInt() {
		v.SetInt(n.Int64())
	} else {
		v.SetUint(n.Uint64())
	}
	return nil
}

func (d *decoder) mapping(path string, in any, v reflect.Value) error {
	m, ok := asMap(in)
	if !ok {
		return d.fail(path, "expected a mapping, got %s", d.describe(in))
	}
	if v.Type().Key().Kind() != reflect.String {
		return fmt.Errorf("config: %s: unsupported map key type in %s", path, v.Type())
	}
	// Work on a copy: the defaults may share a map with other values (a package-level default).
	out := reflect.MakeMapWithSize(v.Type(), v.Len()+len(m))
	for it := v.MapRange(); it.Next(); {
		out.SetMapIndex(it.Key(), it.Value())
	}
	if isRaw(v.Type()) {
		// Raw sections are merged key by key into their defaults, and copied so that later
		// Decodes of the subtree cannot alias the caller's tree.
		for _, k := range sortedKeys(m) {
			kv := reflect.ValueOf(k).Convert(v.Type().Key())
			var old any
			if e := out.MapIndex(kv); e.IsValid() {
				old = e.Interface()
			}
			val := reflect.Zero(v.Type().Elem()) // a null entry without a default stays null
			if merged := mergeTree(old, m[k]); merged != nil {
				val = reflect.ValueOf(merged)
			}
			out.SetMapIndex(kv, val)
		}
		v.Set(out)
		return nil
	}
	for _, k := range sortedKeys(m) {
		kv := reflect.ValueOf(k).Convert(v.Type().Key())
		elem := reflect.New(v.Type().Elem()).Elem()
		if old := out.MapIndex(kv); old.IsValid() {
			elem.Set(old)
		}
		if err := d.decode(mapKey(path, k), m[k], elem); err != nil {
			return err
		}
		out.SetMapIndex(kv, elem)
	}
	v.Set(out)
	return nil
}

// describe says what the user wrote, for "expected X, got Y".
func (d *decoder) describe(in any) string {
	switch x := in.(type) {
	case string:
		if d.text {
			return quote(x)
		}
		return "string " + quote(x)
	case bool:
		return fmt.Sprintf("boolean %t", x)
	case int, int64, uint64:
		return fmt.Sprintf("integer %d", x)
	case float64:
		return "number " + strconv.FormatFloat(x, 'g', -1, 64)
	case time.Time:
		return "timestamp " + x.Format(time.RFC3339Nano)
	case []any:
		return "a list"
	case map[string]any, map[any]any:
		return "a mapping"
	}
	return fmt.Sprintf("%T %s", in, quote(fmt.Sprint(in)))
}

// scalarText is the text of a YAML scalar, for targets that are text anyway.
func scalarText(in any) (string, bool) {
	switch x := in.(type) {
	case string:
		return x, true
	case bool, int, int64, uint64:
		return fmt.Sprint(x), true
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), true
	case encoding.TextMarshaler: // time.Time from an unquoted timestamp
		b, err := x.MarshalText()
		return string(b), err == nil
	}
	return "", false
}

// lowerMatch is the index of the one field whose name is k but for case, or -1 (none, or ambiguous).
func lowerMatch(k string, fs []field) int {
	i := -1
	for j, f := range fs {
		if strings.EqualFold(f.name, k) {
			if i >= 0 {
				return -1
			}
			i = j
		}
	}
	return i
}

func unknownKey(k string, fs []field) string {
	for _, f := range fs {
		if strings.EqualFold(f.name, k) {
			return fmt.Sprintf("unknown key, did you mean %q? (keys are case-sensitive)", f.name)
		}
	}
	return "unknown key (known keys: " + names(fs) + ")"
}

func names(fs []field) string {
	ns := make([]string, len(fs))
	for i, f := range fs {
		ns[i] = f.name
	}
	return strings.Join(ns, ", ")
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// mapKey appends a key the user wrote to a path, bracketed and quoted when it could not be read
// back as one segment (label keys such as "node-role.kubernetes.io/edge" contain dots) or
// would break the one-line message.
func mapKey(path, key string) string {
	odd := func(r rune) bool { return r == ' ' || !unicode.IsGraphic(r) || strings.ContainsRune(`.[]"`, r) }
	if key == "" || strings.ContainsFunc(key, odd) {
		return path + "[" + strconv.Quote(key) + "]"
	}
	return join(path, key)
}

// asMap accepts both shapes a YAML mapping takes in a generic tree: map[string]any (koanf,
// string keys) and map[any]any (yaml.v3 with non-string keys such as `1: x`).
func asMap(in any) (map[string]any, bool) {
	switch m := in.(type) {
	case map[string]any:
		return m, true
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, v := range m {
			out[fmt.Sprint(k)] = v
		}
		return out, true
	}
	return nil, false
}

func sortedKeys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// copyTree deep-copies a generic tree, normalising mappings to map[string]any.
func copyTree(in any) any {
	if m, ok := asMap(in); ok {
		out := make(map[string]any, len(m))
		for k, v := range m {
			out[k] = copyTree(v)
		}
		return out
	}
	if l, ok := in.([]any); ok {
		out := make([]any, len(l))
		for i, v := range l {
			out[i] = copyTree(v)
		}
		return out
	}
	return in
}

// mergeTree overlays b on a copy of a: mappings merge key by key, anything else replaces, and
// a null in b keeps a (as it does for struct fields).
func mergeTree(a, b any) any {
	if b == nil {
		return copyTree(a)
	}
	ma, okA := asMap(a)
	mb, okB := asMap(b)
	if !okA || !okB {
		return copyTree(b)
	}
	out := copyTree(ma).(map[string]any)
	for k, v := range mb {
		out[k] = mergeTree(out[k], v)
	}
	return out
}

func isRaw(t reflect.Type) bool {
	return t.Kind() == reflect.Map && t.Key().Kind() == reflect.String &&
		t.Elem().Kind() == reflect.Interface && t.Elem().NumMethod() == 0
}

func isTextUnmarshaler(t reflect.Type) bool {
	return t.Kind() != reflect.Pointer && reflect.PointerTo(t).Implements(textUnmarshalerType)
}
