package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const root = "../.."

func TestGeneratedModuleFilesMatchTheList(t *testing.T) {
	l, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	write, remove, err := Plan(root, l)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range sortedKeys(write) {
		t.Errorf("%s is stale: run go generate ./cmd/edgecore", p)
	}
	for _, p := range remove {
		t.Errorf("%s names a module %s does not list: remove it or add the module, then go generate ./cmd/edgecore", p, ListPath)
	}
}

// registering returns the folders (relative to root, slash-separated) of the non-test Go files that
// call sdk.Register.
func registering(t *testing.T) []string {
	t.Helper()
	var dirs []string
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			if path != root {
				if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
					return filepath.SkipDir // a nested module (the control plane's builders)
				}
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		sdkName := ""
		for _, imp := range f.Imports {
			if imp.Path.Value == `"github.com/kedge-io/kedge/sdk"` {
				sdkName = "sdk"
				if imp.Name != nil {
					sdkName = imp.Name.Name
				}
			}
		}
		if sdkName == "" {
			return nil
		}
		found := false
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return !found
			}
			if sel, ok := call.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Register" {
				if id, ok := sel.X.(*ast.Ident); ok && id.Name == sdkName {
					found = true
				}
			}
			return !found
		})
		if found {
			rel, _ := filepath.Rel(root, filepath.Dir(path))
			if rel = filepath.ToSlash(rel); !slices.Contains(dirs, rel) {
				dirs = append(dirs, rel)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dirs
}

func TestEveryPackageCallingSDKRegisterIsInTheList(t *testing.T) {
	l, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, m := range l.Modules {
		listed[m.Package] = true
	}
	for _, u := range l.Unlisted {
		listed[u.Package] = true
	}
	dirs := registering(t)
	if len(dirs) < len(l.Modules) {
		t.Fatalf("found %d packages calling sdk.Register (%v), fewer than the %d modules listed: the scan is broken", len(dirs), dirs, len(l.Modules))
	}
	for _, d := range dirs {
		if !listed[d] {
			t.Errorf("%s calls sdk.Register but %s does not list it: add a line under modules (or under unlisted, with why)", d, ListPath)
		}
	}
	for p := range listed {
		if !slices.Contains(dirs, p) {
			t.Errorf("%s lists %s, which calls no sdk.Register", ListPath, p)
		}
	}
}

func TestBadListsAreRefusedNamingLineAndField(t *testing.T) {
	const classes = "classes:\n  - {name: full, runtimes: [process]}\n"
	for _, tc := range []struct {
		name, list, want string
	}{
		{"unknown field", classes + "modules:\n  - {name: a, side: edge, package: p/a, runtimes: [builtin], classes: [full], colour: red}\n", "field colour not found"},
		{"bad side", classes + "modules:\n  - {name: a, side: sky, package: p/a, runtimes: [builtin], classes: [full]}\n", `x.yaml:4: module a: side "sky", want cloud or edge`},
		{"unknown class", classes + "modules:\n  - {name: a, side: edge, package: p/a, runtimes: [builtin], classes: [full, tiny]}\n", `x.yaml:4: module a: class "tiny" is not listed`},
		{"edge builtin not in full", classes + "modules:\n  - {name: a, side: edge, package: p/a, runtimes: [builtin]}\n", "must be in class full"},
		{"twice", classes + "modules:\n  - {name: a, side: cloud, package: p/a, runtimes: [builtin]}\n  - {name: a, side: cloud, package: p/b, runtimes: [builtin]}\n", `x.yaml:5: module "a" is listed twice`},
		{"bad runtime", classes + "modules:\n  - {name: a, side: cloud, package: p/a, runtimes: [wasm]}\n", `runtime "wasm", want builtin or process`},
		{"bad class runtime", "classes:\n  - {name: full, runtimes: [jvm]}\n", `x.yaml:2: class full: runtime "jvm" is not one of process, wasm`},
		{"no full", "classes:\n  - {name: tiny}\n", "no class named full"},
		{"tag clash", classes + "modules:\n  - {name: process, side: cloud, package: p/a, runtimes: [builtin]}\n", "taken by a build tag"},
		{"bad name", classes + "modules:\n  - {name: My-Mod, side: cloud, package: p/a, runtimes: [builtin]}\n", `module name "My-Mod"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("x.yaml", []byte(tc.list))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want one containing %q", err, tc.want)
			}
		})
	}
	if _, err := Parse("x.yaml", []byte(classes+"modules:\n  - {name: a, side: edge, package: p/a, runtimes: [builtin], classes: [full]}\n")); err != nil {
		t.Fatalf("a good list is refused: %v", err)
	}
}

func TestMakeRefusesAClassOrModuleThatDoesNotExistListingTheValidNames(t *testing.T) {
	for _, target := range []string{"edgecore-nosuch", "edgecore-metamanager,nosuch", "module-nosuch"} {
		t.Run(target, func(t *testing.T) {
			cmd := exec.Command("make", "-s", "--no-print-directory", target)
			cmd.Dir = root
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("make %s succeeded:\n%s", target, out)
			}
			for _, want := range []string{"named nosuch", "metamanager", "devicetwin"} {
				if !strings.Contains(string(out), want) {
					t.Errorf("make %s says %q; want it to mention %q", target, out, want)
				}
			}
			if strings.HasPrefix(target, "edgecore-") && !strings.Contains(string(out), "classes:  minimal gateway full") {
				t.Errorf("make %s says %q; want the list of classes", target, out)
			}
		})
	}
}
