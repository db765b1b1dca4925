package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLoadFileReadsNestedTree(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edgecore.yaml")
	src := "# comment\nnode:\n  name: edge1\n  labels: {\"a.b/c\": x}\nports: [1, 2]\nratio: 0.5\n"
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"node":  map[string]any{"name": "edge1", "labels": map[string]any{"a.b/c": "x"}},
		"ports": []any{1, 2},
		"ratio": 0.5,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v", got)
	}
}

func TestLoadFileEmptyIsEmptyTree(t *testing.T) {
	for name, src := range map[string]string{"empty": "", "comments only": "# nothing\n", "null document": "~\n"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "edgecore.yaml")
			if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := LoadFile(path)
			if err != nil || got == nil || len(got) != 0 {
				t.Errorf("got %#v, %v; want an empty non-nil tree", got, err)
			}
		})
	}
}

func TestLoadFileErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, src string // src "" with name "missing" means no file is written
		want      string // message after "<path>: "
	}{
		{"missing", "", "file not found"},
		{"unterminated quote keeps line", "node:\n  name: a\n  address: \"x\n", "line 3: found unexpected end of stream"},
		{"bad indentation", "node:\n  name: a\n    bad: b\n", "line 3: mapping values are not allowed in this context"},
		{"duplicate key", "node: {}\nnode: {}\n", `line 2: mapping key "node" already defined at line 1`},
		{"top-level list", "- a\n- b\n", "line 1: the top level must be a mapping of keys (key: value), got a list"},
		{"top-level scalar", "hello\n", "line 1: the top level must be a mapping of keys (key: value), got a string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			if tc.name != "missing" {
				if err := os.WriteFile(path, []byte(tc.src), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := LoadFile(path)
			var ce *Error
			if !errors.As(err, &ce) || ce.Source != path {
				t.Fatalf("got %v, want *Error with Source %s", err, path)
			}
			if want := path + ": " + tc.want; err.Error() != want {
				t.Errorf("got  %s\nwant %s", err, want)
			}
		})
	}
}

func TestLoadFileDirectoryIsReadError(t *testing.T) {
	dir := t.TempDir()
	_, err := LoadFile(dir)
	if want := dir + ": cannot read file: is a directory"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}
