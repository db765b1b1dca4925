package config

import (
	"reflect"
	"slices"
	"strings"
)

// field is one configuration key of a struct, after flattening inline fields.
type field struct {
	name  string
	value reflect.Value
	doc   string
	min   bool
	depth int
}

// fields lists the keys of the addressable struct v in declaration order. alloc lets inline
// nil pointers be allocated (Decode needs somewhere to write; rendering skips them). As in
// encoding/json, a key declared less deeply hides an inlined one of the same name.
func fields(v reflect.Value, alloc bool) []field {
	var all []field
	collect(v, alloc, 0, &all)
	depth := map[string]int{}
	for _, f := range all {
		if d, ok := depth[f.name]; !ok || f.depth < d {
			depth[f.name] = f.depth
		}
	}
	out := all[:0]
	for _, f := range all {
		if depth[f.name] == f.depth {
			out = append(out, f)
			depth[f.name] = -1 // the first one at that depth wins
		}
	}
	return out
}

func collect(v reflect.Value, alloc bool, depth int, out *[]field) {
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		tag, ok := sf.Tag.Lookup("yaml")
		if !ok || tag == "-" || (!sf.IsExported() && !(sf.Anonymous && sf.Type.Kind() == reflect.Struct)) {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		fv := v.Field(i)
		if slices.Contains(strings.Split(opts, ","), "inline") {
			if inner, ok := inlined(fv, alloc); ok {
				collect(inner, alloc, depth+1, out)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name) // yaml.v3's default
		}
		min := slices.Contains(strings.Split(sf.Tag.Get("cfg"), ","), "min")
		*out = append(*out, field{name: name, value: fv, doc: sf.Tag.Get("doc"), min: min, depth: depth})
	}
}

func inlined(fv reflect.Value, alloc bool) (reflect.Value, bool) {
	switch fv.Kind() {
	case reflect.Struct:
		return fv, true
	case reflect.Pointer:
		if fv.Type().Elem().Kind() != reflect.Struct {
			return reflect.Value{}, false
		}
		if fv.IsNil() {
			if !alloc || !fv.CanSet() {
				return reflect.Value{}, false
			}
			fv.Set(reflect.New(fv.Type().Elem()))
		}
		return fv.Elem(), true
	case reflect.Interface:
		// Lets a caller wrap a value it only knows at run time, e.g. a module's settings next
		// to the module manager's own enable key.
		if e := fv.Elem(); e.Kind() == reflect.Pointer && !e.IsNil() && e.Elem().Kind() == reflect.Struct {
			return e.Elem(), true
		}
	}
	return reflect.Value{}, false
}
