// Package config loads cloudcore.yaml and edgecore.yaml for the Kedge binaries.
//
// Values are layered: the Go struct a caller passes to Decode holds the built-in defaults, the
// YAML file (LoadFile) overrides them, then environment variables (EnvOverrides) and --set flags
// (ParseSet) override the file. Decoding is strict: an unknown key, a wrong type or an
// out-of-range number is an *Error that names the source, the dotted key path and what was
// expected, in one line an operator can act on.
//
// A `map[string]any` field is kept raw so that a section such as `modules:` can be decoded later,
// piece by piece, into types this package does not know (Decode with a non-empty `at`).
//
// Node and Render turn a defaults struct back into commented YAML for --defaultconfig and
// --minconfig, using the `doc:"..."` and `cfg:"min"` struct tags.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"strings"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
	yamlv3 "go.yaml.in/yaml/v3"
)

// Error is a configuration mistake: where (Source: a file path, "environment KEDGE_X", or
// "flag --set a.b=c"), which key (dotted path), what is wrong. The binaries exit with code 2 on
// it; any other error from this package is a programming mistake, not the operator's.
type Error struct {
	Source  string
	Key     string
	Problem string
}

// Error formats "<source>: <key>: <problem>", without the key when it is empty.
func (e *Error) Error() string {
	if e.Key == "" {
		return e.Source + ": " + e.Problem
	}
	return e.Source + ": " + e.Key + ": " + e.Problem
}

// LoadFile reads a YAML file into a generic tree of nested map[string]any, []any and scalars.
// A missing or unreadable file and invalid YAML are an *Error naming the file; YAML syntax
// errors keep the parser's line number. An empty file is an empty tree.
func LoadFile(path string) (map[string]any, error) {
	k := koanf.New(".")
	if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
		return nil, &Error{Source: path, Problem: loadProblem(err)}
	}
	return k.Raw(), nil
}

// topLevelRe matches yaml.v3's complaint when the document is not a mapping.
var topLevelRe = regexp.MustCompile(`^(line \d+): cannot unmarshal !!(\w+)\b.* into map\[string\]interface \{\}$`)

func loadProblem(err error) string {
	if errors.Is(err, fs.ErrNotExist) {
		return "file not found"
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return "cannot read file: " + pe.Err.Error()
	}
	var te *yamlv3.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, len(te.Errors))
		for i, m := range te.Errors {
			if g := topLevelRe.FindStringSubmatch(m); g != nil {
				m = g[1] + ": the top level must be a mapping of keys (key: value), got " + yamlKind(g[2])
			}
			msgs[i] = m
		}
		return oneLine(strings.Join(msgs, "; "))
	}
	return oneLine(strings.TrimPrefix(err.Error(), "yaml: "))
}

func yamlKind(tag string) string {
	switch tag {
	case "seq":
		return "a list"
	case "str":
		return "a string"
	case "int":
		return "an integer"
	case "float":
		return "a number"
	case "bool":
		return "a boolean"
	}
	return "!!" + tag
}

// oneLine keeps messages from external code (the YAML parser, UnmarshalText) to a single line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// quote renders a value for an error message: quoted so blanks and newlines are visible, and
// truncated so one bad value cannot flood the log.
func quote(s string) string {
	const limit = 40
	if r := []rune(s); len(r) > limit {
		return fmt.Sprintf("%q...", string(r[:limit-3]))
	}
	return fmt.Sprintf("%q", s)
}
