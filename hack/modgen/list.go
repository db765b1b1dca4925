package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ListPath is the module list, relative to the repository root.
const ListPath = "cmd/modules.yaml"

// Module is one line of the list's modules.
type Module struct {
	Name     string   `yaml:"name"`
	Side     string   `yaml:"side"`
	Package  string   `yaml:"package"`
	Runtimes []string `yaml:"runtimes"`
	Classes  []string `yaml:"classes"`
	line     int
}

// Class is one device class: an edgecore build.
type Class struct {
	Name     string   `yaml:"name"`
	Runtimes []string `yaml:"runtimes"`
	Without  []string `yaml:"without"`
	About    string   `yaml:"about"`
	line     int
}

// Feature is an optional part of a module, in every build unless a class leaves it out with the build
// tag kedge_no<name>.
type Feature struct {
	Name   string `yaml:"name"`
	Module string `yaml:"module"`
	About  string `yaml:"about"`
	line   int
}

// Unlisted is a package that calls sdk.Register but is no module of any build.
type Unlisted struct {
	Package string `yaml:"package"`
	Why     string `yaml:"why"`
}

// List is cmd/modules.yaml.
type List struct {
	Classes  []Class    `yaml:"classes"`
	Features []Feature  `yaml:"features"`
	Modules  []Module   `yaml:"modules"`
	Unlisted []Unlisted `yaml:"unlisted"`
}

// Host runtimes a class may link besides builtin modules.
var hostRuntimes = []string{"process", "wasm"}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9]*$`)

// Load reads and checks the list at root/ListPath.
func Load(root string) (*List, error) {
	data, err := os.ReadFile(filepath.Join(root, ListPath))
	if err != nil {
		return nil, err
	}
	return Parse(ListPath, data)
}

// Parse decodes and checks a module list; errors name the file, the line and the field.
func Parse(source string, data []byte) (*List, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var l List
	if err := dec.Decode(&l); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	// Line numbers for messages: the n-th item of each sequence.
	if len(doc.Content) == 1 {
		root := doc.Content[0]
		for i := 0; i+1 < len(root.Content); i += 2 {
			items := root.Content[i+1].Content
			switch root.Content[i].Value {
			case "modules":
				for j := range l.Modules {
					if j < len(items) {
						l.Modules[j].line = items[j].Line
					}
				}
			case "classes":
				for j := range l.Classes {
					if j < len(items) {
						l.Classes[j].line = items[j].Line
					}
				}
			case "features":
				for j := range l.Features {
					if j < len(items) {
						l.Features[j].line = items[j].Line
					}
				}
			}
		}
	}
	return &l, l.check(source)
}

func (l *List) check(source string) error {
	var errs []string
	bad := func(line int, format string, args ...any) {
		errs = append(errs, fmt.Sprintf("%s:%d: %s", source, line, fmt.Sprintf(format, args...)))
	}
	if len(l.Classes) == 0 {
		bad(1, "no classes")
	}
	classes := map[string]bool{}
	for _, c := range l.Classes {
		switch {
		case !nameRE.MatchString(c.Name):
			bad(c.line, "class name %q: want lower-case letters and digits", c.Name)
		case classes[c.Name]:
			bad(c.line, "class %q is listed twice", c.Name)
		}
		classes[c.Name] = true
		for _, r := range c.Runtimes {
			if !slices.Contains(hostRuntimes, r) {
				bad(c.line, "class %s: runtime %q is not one of %s", c.Name, r, strings.Join(hostRuntimes, ", "))
			}
		}
	}
	if !classes["full"] {
		bad(1, "no class named full (the build with every edge module)")
	}
	names := map[string]bool{}
	for _, m := range l.Modules {
		names[m.Name] = true
	}
	features := map[string]bool{}
	for _, f := range l.Features {
		if !nameRE.MatchString(f.Name) || features[f.Name] {
			bad(f.line, "feature name %q: want lower-case letters and digits, listed once", f.Name)
		}
		features[f.Name] = true
		if !names[f.Module] {
			bad(f.line, "feature %s: module %q is not listed under modules", f.Name, f.Module)
		}
	}
	for _, c := range l.Classes {
		for _, f := range c.Without {
			if !features[f] {
				bad(c.line, "class %s: without %q, which is not listed under features", c.Name, f)
			}
		}
	}
	names = map[string]bool{}
	for _, m := range l.Modules {
		switch {
		case !nameRE.MatchString(m.Name):
			bad(m.line, "module name %q: want lower-case letters and digits (it becomes the build tag kedge_<name>)", m.Name)
		case names[m.Name]:
			bad(m.line, "module %q is listed twice", m.Name)
		case slices.Contains(hostRuntimes, m.Name) || m.Name == "custom":
			bad(m.line, "module name %q is taken by a build tag of the host", m.Name)
		case classes[m.Name]:
			bad(m.line, "module %q has the name of a class", m.Name)
		}
		names[m.Name] = true
		if m.Side != "cloud" && m.Side != "edge" {
			bad(m.line, "module %s: side %q, want cloud or edge", m.Name, m.Side)
		}
		if m.Package == "" || strings.HasPrefix(m.Package, "/") || strings.Contains(m.Package, "..") {
			bad(m.line, "module %s: package %q, want a folder of this repository such as plugins/mappers/%s", m.Name, m.Package, m.Name)
		}
		if len(m.Runtimes) == 0 {
			bad(m.line, "module %s: no runtimes (builtin and/or process)", m.Name)
		}
		for _, r := range m.Runtimes {
			if r != "builtin" && r != "process" {
				bad(m.line, "module %s: runtime %q, want builtin or process", m.Name, r)
			}
		}
		for _, c := range m.Classes {
			if !classes[c] {
				bad(m.line, "module %s: class %q is not listed under classes", m.Name, c)
			}
		}
		if m.Side == "cloud" && len(m.Classes) > 0 {
			bad(m.line, "module %s: a cloud module belongs to no device class", m.Name)
		}
		if m.Side == "edge" && m.has("builtin") && !slices.Contains(m.Classes, "full") {
			bad(m.line, "module %s: an edge module with runtime builtin must be in class full (a plain go build links it)", m.Name)
		}
		if m.Side == "edge" && !m.has("builtin") && len(m.Classes) > 0 {
			bad(m.line, "module %s: classes list builtin modules; this one has no runtime builtin", m.Name)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

func (m Module) has(runtime string) bool { return slices.Contains(m.Runtimes, runtime) }

// ClassModules returns the builtin modules of class c, in list order.
func (l *List) ClassModules(class string) []string {
	var out []string
	for _, m := range l.Modules {
		if slices.Contains(m.Classes, class) {
			out = append(out, m.Name)
		}
	}
	return out
}

// ClassTags returns the build tags of class c.
func (l *List) ClassTags(c Class) []string {
	tags := []string{"kedge_custom"}
	for _, m := range l.ClassModules(c.Name) {
		tags = append(tags, "kedge_"+m)
	}
	for _, r := range c.Runtimes {
		tags = append(tags, "kedge_"+r)
	}
	for _, f := range c.Without {
		tags = append(tags, "kedge_no"+f)
	}
	// grpcnotrace: gRPC-Go without golang.org/x/net/trace, whose init registers /debug/requests and
	// /debug/events on http.DefaultServeMux and whose html/template rendering is a reflective method
	// call: with it the linker keeps every exported method of every type (gateway 27.2 -> ~22 MiB
	// without it; BENCHMARKS.md "Device classes"). Kedge never turns gRPC tracing on.
	// nethttpomithttp2: net/http without its bundled HTTP/2 (about 0.5 MiB). On the edge every net/http
	// use is HTTP/1.1 (the hub's websocket, edgestream's upgrades, join, the admin server, the
	// MetaServer's watches); gRPC (DMI, plugin processes, the CRI) has its own HTTP/2.
	// kedge_nopprof: the admin server without Go's profiler (net/http/pprof, runtime/pprof, html:
	// about 0.5 MiB; admin.pprof is refused by name). A plain go build keeps it for profiling.
	return append(tags, "grpcnotrace", "nethttpomithttp2", "kedge_nopprof")
}

// Names returns the names of the modules on side (any side when empty) with runtime (any when
// empty).
func (l *List) Names(side, runtime string) []string {
	var out []string
	for _, m := range l.Modules {
		if (side == "" || m.Side == side) && (runtime == "" || m.has(runtime)) {
			out = append(out, m.Name)
		}
	}
	return out
}
