package config

import (
	"bytes"
	"encoding"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Node renders v (a struct or pointer to struct, typically the defaults) as a YAML mapping
// node for --defaultconfig. Each field's `doc:"..."` tag becomes a comment above its key.
//
// With minimal (--minconfig) only fields tagged `cfg:"min"` are kept, with the structs that
// lead to them; a struct field tagged `cfg:"min"` is kept whole. Durations render as "10s",
// encoding.TextMarshaler values as their text, map[string]any fields as their content.
func Node(v any, minimal bool) (*yaml.Node, error) {
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer && !rv.IsNil() {
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct {
		return nil, fmt.Errorf("config.Node: want a struct or pointer to struct, got %T", v)
	}
	n, _, err := structNode(addressable(rv), minimal, 0, true)
	return n, err
}

// ValueNode renders any value the way Node renders a field, e.g. ValueNode(true) for a key the
// caller adds with AddKey. Structs are rendered in full, with their doc comments.
func ValueNode(v any) (*yaml.Node, error) {
	if v == nil {
		return nullNode(), nil
	}
	n, _, err := valueNode(addressable(reflect.ValueOf(v)), false, 0, true)
	return n, err
}

// MappingNode returns an empty YAML mapping to fill with AddKey.
func MappingNode() *yaml.Node {
	return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
}

// AddKey appends key: value to the mapping m, with doc (may be empty) as a comment above it.
func AddKey(m *yaml.Node, key, doc string, value *yaml.Node) {
	addKey(m, key, comment(doc, 98), value)
}

func addKey(m *yaml.Node, key, headComment string, value *yaml.Node) {
	k := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key, HeadComment: headComment}
	m.Content = append(m.Content, k, value)
}

// AppendKeys appends the keys of mapping src to mapping dst, e.g. a module's settings after the
// module manager's enable key.
func AppendKeys(dst, src *yaml.Node) {
	dst.Content = append(dst.Content, src.Content...)
}

// Render encodes n as YAML with a 2-space indent.
func Render(n *yaml.Node) ([]byte, error) {
	var b bytes.Buffer
	e := yaml.NewEncoder(&b)
	e.SetIndent(2)
	if err := e.Encode(n); err != nil {
		return nil, err
	}
	if err := e.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// structNode renders the fields of struct v; keep reports whether anything was included
// (always, unless minimal). docs is off inside lists and maps, where each element would repeat
// the same comments.
func structNode(v reflect.Value, minimal bool, depth int, docs bool) (*yaml.Node, bool, error) {
	n := MappingNode()
	for _, f := range fields(v, false) {
		val, keep, err := valueNode(f.value, minimal && !f.min, depth+1, docs)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", f.name, err)
		}
		if !keep {
			continue
		}
		head := ""
		if docs {
			head = comment(f.doc, 98-2*depth) // keep lines near 100 columns after indenting
		}
		addKey(n, f.name, head, val)
	}
	if len(n.Content) == 0 {
		n.Style = yaml.FlowStyle // "{}" rather than an empty block
	}
	return n, !minimal || len(n.Content) > 0, nil
}

// valueNode renders v. In minimal mode only structs can contribute (through their cfg:"min"
// fields); every other value is left out.
func valueNode(v reflect.Value, minimal bool, depth int, docs bool) (*yaml.Node, bool, error) {
	t := v.Type()
	switch {
	case t.Kind() == reflect.Pointer:
		if v.IsNil() {
			return nullNode(), !minimal, nil
		}
		return valueNode(v.Elem(), minimal, depth, docs)
	case t == nodeType:
		return v.Addr().Interface().(*yaml.Node), !minimal, nil // composed by the caller
	case t == durationType:
		return stringNode(time.Duration(v.Int()).String()), !minimal, nil
	case t.Implements(textMarshalerType) || reflect.PointerTo(t).Implements(textMarshalerType):
		m, ok := v.Interface().(encoding.TextMarshaler)
		if !ok {
			m = addressable(v).Addr().Interface().(encoding.TextMarshaler)
		}
		b, err := m.MarshalText()
		if err != nil {
			return nil, false, err
		}
		return stringNode(string(b)), !minimal, nil
	case t.Kind() == reflect.Struct:
		return structNode(addressable(v), minimal, depth, docs)
	case minimal:
		return nil, false, nil
	case t.Kind() == reflect.Slice:
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for i := range v.Len() {
			e, _, err := valueNode(v.Index(i), false, depth+1, false)
			if err != nil {
				return nil, false, err
			}
			n.Content = append(n.Content, e)
		}
		if len(n.Content) == 0 {
			n.Style = yaml.FlowStyle
		}
		return n, true, nil
	case t.Kind() == reflect.Map && t.Key().Kind() == reflect.String:
		n := MappingNode()
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
		for _, k := range keys {
			e, _, err := valueNode(addressable(v.MapIndex(k)), false, depth+1, false)
			if err != nil {
				return nil, false, err
			}
			addKey(n, k.String(), "", e)
		}
		if len(n.Content) == 0 {
			n.Style = yaml.FlowStyle
		}
		return n, true, nil
	case t.Kind() == reflect.Interface:
		if v.IsNil() {
			return nullNode(), true, nil
		}
		return valueNode(addressable(v.Elem()), false, depth, docs)
	}
	var n yaml.Node
	if err := n.Encode(v.Interface()); err != nil {
		return nil, false, err
	}
	return &n, true, nil
}

var nodeType = reflect.TypeFor[yaml.Node]()

func stringNode(s string) *yaml.Node {
	var n yaml.Node
	_ = n.Encode(s) // cannot fail for a string; Encode quotes "true", "10" and the like
	return &n
}

func nullNode() *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}
}

// addressable returns v itself or an addressable copy, for pointer-receiver MarshalText and
// for fields(), which hands out settable field values.
func addressable(v reflect.Value) reflect.Value {
	if v.CanAddr() {
		return v
	}
	c := reflect.New(v.Type()).Elem()
	c.Set(v)
	return c
}

// comment wraps doc at width columns as a YAML comment block. Blank lines become "#" so a
// multi-paragraph doc stays one block attached to its key.
func comment(doc string, width int) string {
	doc = strings.TrimSpace(doc)
	if doc == "" {
		return ""
	}
	width = max(width, 40)
	var lines []string
	for para := range strings.SplitSeq(doc, "\n") {
		line := ""
		for _, w := range strings.Fields(para) {
			if line != "" && len(line)+1+len(w) > width {
				lines = append(lines, "# "+line)
				line = ""
			}
			if line != "" {
				line += " "
			}
			line += w
		}
		if line == "" {
			lines = append(lines, "#")
		} else {
			lines = append(lines, "# "+line)
		}
	}
	return strings.Join(lines, "\n")
}
