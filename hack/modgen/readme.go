package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// A module README follows docs/module-readme-template.md: these second-level sections, each once, in
// this order, and no others (a topic of its own is a ### under one of them).
var ReadmeSections = []string{"What it does", "Configuration", "Messages in and out", "Metrics", "How it is tested"}

// The markers around a module README's generated metrics table (in its Metrics section).
const (
	MetricsStart = "<!-- metrics:start: generated from the module's code by hack/modgen; update with go test ./hack/modgen -run TestModuleREADMEs -update -->"
	MetricsEnd   = "<!-- metrics:end -->"
	// configStart begins the generated config block (host/daemon.READMEConfigStart; modgen does not
	// import the host).
	configStart = "<!-- config:start: "
)

// Metric is one Prometheus metric a module's code defines.
type Metric struct {
	Name, Type, Help string
	Labels           []string
}

// Metrics returns the Prometheus metrics defined by the Go files under dir (tests and testdata left
// out), sorted by name: every prometheus.<Kind>Opts literal whose Name is a constant string, or the
// constant prefix + a parameter of a small constructor (c := func(name, help string) ... {Name:
// "kedge_x_" + name, Help: help}) called with constants. A Name it cannot evaluate is an error: write
// metric names so they can be found (and grepped).
func Metrics(dir string) ([]Metric, error) {
	fset := token.NewFileSet()
	var out []Metric
	var files []*ast.File
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		return nil, err
	}
	consts := stringConsts(files)
	for _, f := range files {
		ms, err := fileMetrics(fset, f)
		out = append(out, ms...)
		if err != nil {
			return out, err
		}
		ms, err = builderMetrics(fset, f, consts)
		out = append(out, ms...)
		if err != nil {
			return out, err
		}
	}
	slices.SortFunc(out, func(a, b Metric) int { return strings.Compare(a.Name, b.Name) })
	return out, err
}

// optsKinds maps the prometheus options types to the metric kind they make.
var optsKinds = map[string]string{"CounterOpts": "counter", "GaugeOpts": "gauge", "HistogramOpts": "histogram", "SummaryOpts": "summary"}

func fileMetrics(fset *token.FileSet, f *ast.File) ([]Metric, error) {
	var out []Metric
	var errs []string
	labels := map[*ast.CompositeLit][]string{} // opts literal → the label names of its NewXxxVec
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || len(call.Args) != 2 || !isPromSel(call.Fun, "") || !strings.HasSuffix(selName(call.Fun), "Vec") {
			return true
		}
		lit, ok1 := call.Args[0].(*ast.CompositeLit)
		names, ok2 := call.Args[1].(*ast.CompositeLit)
		if ok1 && ok2 {
			for _, e := range names.Elts {
				if s, ok := constString(e); ok {
					labels[lit] = append(labels[lit], s)
				}
			}
		}
		return true
	})
	// The innermost function around each node, for constructors taking the name as a parameter.
	var stack []ast.Node
	ast.Inspect(f, func(n ast.Node) bool {
		if n == nil {
			stack = stack[:len(stack)-1]
			return true
		}
		stack = append(stack, n)
		lit, ok := n.(*ast.CompositeLit)
		if !ok || !isPromSel(lit.Type, "Opts") {
			return true
		}
		kind := optsKinds[selName(lit.Type)]
		if kind == "" {
			return true
		}
		var nameExpr, helpExpr ast.Expr
		for _, e := range lit.Elts {
			kv, ok := e.(*ast.KeyValueExpr)
			if !ok {
				continue
			}
			switch id, _ := kv.Key.(*ast.Ident); {
			case id == nil:
			case id.Name == "Name":
				nameExpr = kv.Value
			case id.Name == "Help":
				helpExpr = kv.Value
			}
		}
		if name, ok := constString(nameExpr); ok {
			help, _ := constString(helpExpr)
			out = append(out, Metric{Name: name, Type: kind, Help: help, Labels: labels[lit]})
			return true
		}
		ms, err := viaConstructor(f, stack, nameExpr, helpExpr, kind)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", fset.Position(lit.Pos()), err))
		}
		out = append(out, ms...)
		return true
	})
	if len(errs) > 0 {
		return out, fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return out, nil
}

// viaConstructor handles Name: "prefix" + param inside a function literal assigned to a name (or a
// function declaration): each call of that name with constant arguments makes one metric.
func viaConstructor(f *ast.File, stack []ast.Node, nameExpr, helpExpr ast.Expr, kind string) ([]Metric, error) {
	bin, ok := nameExpr.(*ast.BinaryExpr)
	var prefix string
	var param *ast.Ident
	if ok && bin.Op == token.ADD {
		prefix, ok = constString(bin.X)
		param, _ = bin.Y.(*ast.Ident)
	}
	if !ok || param == nil {
		return nil, fmt.Errorf("a metric name that is not a constant string nor \"prefix\" + a constructor's parameter: write it so it can be found")
	}
	var fn string
	var ftype *ast.FuncType
	for i := len(stack) - 1; i >= 0 && ftype == nil; i-- {
		switch x := stack[i].(type) {
		case *ast.FuncDecl:
			fn, ftype = x.Name.Name, x.Type
		case *ast.FuncLit:
			ftype = x.Type
			if i > 0 {
				if as, ok := stack[i-1].(*ast.AssignStmt); ok && len(as.Lhs) == 1 {
					if id, ok := as.Lhs[0].(*ast.Ident); ok {
						fn = id.Name
					}
				}
			}
		}
	}
	nameAt, helpAt := paramIndex(ftype, param.Name), -1
	if id, ok := helpExpr.(*ast.Ident); ok {
		helpAt = paramIndex(ftype, id.Name)
	}
	if fn == "" || nameAt < 0 {
		return nil, fmt.Errorf("metric name %q + %s: %s is not a parameter of a named constructor", prefix, param.Name, param.Name)
	}
	var out []Metric
	var bad error
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if id, isID := callee(call); !ok || !isID || id != fn || len(call.Args) <= nameAt {
			return true
		}
		suffix, ok := constString(call.Args[nameAt])
		if !ok {
			bad = fmt.Errorf("a call of %s with a metric name that is not a constant string", fn)
			return true
		}
		m := Metric{Name: prefix + suffix, Type: kind}
		if helpAt >= 0 && helpAt < len(call.Args) {
			m.Help, _ = constString(call.Args[helpAt])
		} else {
			m.Help, _ = constString(helpExpr)
		}
		out = append(out, m)
		return true
	})
	return out, bad
}

func callee(call *ast.CallExpr) (string, bool) {
	if call == nil {
		return "", false
	}
	id, ok := call.Fun.(*ast.Ident)
	if !ok {
		return "", false
	}
	return id.Name, true
}

func paramIndex(ft *ast.FuncType, name string) int {
	if ft == nil {
		return -1
	}
	i := 0
	for _, field := range ft.Params.List {
		for _, n := range field.Names {
			if n.Name == name {
				return i
			}
			i++
		}
	}
	return -1
}

// isPromSel reports whether e is prometheus.<X> with X ending in suffix.
func isPromSel(e ast.Expr, suffix string) bool {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	pkg, ok := sel.X.(*ast.Ident)
	return ok && pkg.Name == "prometheus" && strings.HasSuffix(sel.Sel.Name, suffix)
}

func selName(e ast.Expr) string { return e.(*ast.SelectorExpr).Sel.Name }

// stringConsts maps the top-level string constants of files (a package's Name, say) to their values.
func stringConsts(files []*ast.File) map[string]string {
	out := map[string]string{}
	for _, f := range files {
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						if v, ok := constString(vs.Values[i]); ok {
							out[n.Name] = v
						}
					}
				}
			}
		}
	}
	return out
}

// builderMetrics finds the counters a cloud controller makes through sdk/kube/controller's builder:
// b := controller.NewMetrics(reg, Name) names every b.Counter(name, help) and
// b.CounterVec(name, help, labels...) kedge_<Name>_<name>. Names must be constants.
func builderMetrics(fset *token.FileSet, f *ast.File, consts map[string]string) ([]Metric, error) {
	prefixes := map[string]string{} // builder variable → metric name prefix
	var errs []string
	ast.Inspect(f, func(n ast.Node) bool {
		as, ok := n.(*ast.AssignStmt)
		if !ok || len(as.Lhs) != 1 || len(as.Rhs) != 1 {
			return true
		}
		call, ok := as.Rhs[0].(*ast.CallExpr)
		id, ok2 := as.Lhs[0].(*ast.Ident)
		if !ok || !ok2 || len(call.Args) != 2 {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok || sel.Sel.Name != "NewMetrics" {
			return true
		}
		if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "controller" {
			return true
		}
		module, ok := constString(call.Args[1])
		if arg, isID := call.Args[1].(*ast.Ident); !ok && isID {
			module, ok = consts[arg.Name]
		}
		if !ok {
			errs = append(errs, fmt.Sprintf("%s: controller.NewMetrics with a module name that is not a constant", fset.Position(call.Pos())))
			return true
		}
		prefixes[id.Name] = "kedge_" + module + "_"
		return true
	})
	var out []Metric
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || len(call.Args) < 2 {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok || (sel.Sel.Name != "Counter" && sel.Sel.Name != "CounterVec") {
			return true
		}
		b, ok := sel.X.(*ast.Ident)
		prefix, known := prefixes[b.Name]
		if !ok || !known {
			return true
		}
		name, ok1 := constString(call.Args[0])
		help, ok2 := constString(call.Args[1])
		if !ok1 || !ok2 {
			errs = append(errs, fmt.Sprintf("%s: %s.%s with a name or help that is not a constant string", fset.Position(call.Pos()), b.Name, sel.Sel.Name))
			return true
		}
		m := Metric{Name: prefix + name, Type: "counter", Help: help}
		for _, l := range call.Args[2:] {
			if v, ok := constString(l); ok {
				m.Labels = append(m.Labels, v)
			}
		}
		out = append(out, m)
		return true
	})
	if len(errs) > 0 {
		return out, fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return out, nil
}

// constString evaluates a string literal or a sum of them.
func constString(e ast.Expr) (string, bool) {
	switch x := e.(type) {
	case *ast.BasicLit:
		if x.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(x.Value)
		return s, err == nil
	case *ast.BinaryExpr:
		if x.Op != token.ADD {
			return "", false
		}
		a, ok1 := constString(x.X)
		b, ok2 := constString(x.Y)
		return a + b, ok1 && ok2
	case *ast.ParenExpr:
		return constString(x.X)
	}
	return "", false
}

// MetricsTable renders the generated metrics block of a module README, markers included.
func MetricsTable(ms []Metric) string {
	var b strings.Builder
	b.WriteString(MetricsStart + "\n\n")
	if len(ms) == 0 {
		b.WriteString("The module defines no metrics of its own.\n")
	} else {
		b.WriteString("| metric | type | labels | what it measures |\n|---|---|---|---|\n")
		for _, m := range ms {
			labels := "—"
			if len(m.Labels) > 0 {
				labels = "`" + strings.Join(m.Labels, "`, `") + "`"
			}
			help := strings.ReplaceAll(strings.ReplaceAll(m.Help, "|", `\|`), "\n", " ")
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", m.Name, m.Type, labels, help)
		}
	}
	b.WriteString("\n" + MetricsEnd)
	return b.String()
}

// Sections returns a markdown document's second-level headings in order, outside code fences.
func Sections(doc string) []string {
	var out []string
	fence := false
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fence = !fence
			continue
		}
		if h, ok := strings.CutPrefix(line, "## "); ok && !fence {
			out = append(out, strings.TrimSpace(h))
		}
	}
	return out
}

// section returns the text of the second-level section named title (up to the next one).
func section(doc, title string) string {
	start := strings.Index(doc, "\n## "+title+"\n")
	if start < 0 {
		return ""
	}
	rest := doc[start+len("\n## "+title+"\n"):]
	if end := strings.Index(rest, "\n## "); end >= 0 {
		rest = rest[:end]
	}
	return rest
}

// CheckREADME returns what is wrong with a module README (doc, at path) against the template and
// the metrics its code defines, and the README with its metrics block brought up to date.
func CheckREADME(path, doc string, ms []Metric) (problems []string, updated string) {
	updated = doc
	table := MetricsTable(ms)
	start, end := strings.Index(doc, MetricsStart), strings.Index(doc, MetricsEnd)
	switch {
	case start >= 0 && end > start:
		updated = doc[:start] + table + doc[end+len(MetricsEnd):]
		if updated != doc {
			problems = append(problems, fmt.Sprintf("%s: the metrics table is not what the code defines (go test ./hack/modgen -run TestModuleREADMEs -update)", path))
		}
	case start < 0 && end < 0:
		problems = append(problems, fmt.Sprintf("%s: no generated metrics table (%s ... %s) in its Metrics section", path, MetricsStart, MetricsEnd))
	default:
		problems = append(problems, fmt.Sprintf("%s: the metrics table markers are incomplete or out of order", path))
	}
	if got := Sections(doc); !slices.Equal(got, ReadmeSections) {
		problems = append(problems, fmt.Sprintf("%s: sections are %q; a module README has exactly %q in this order (docs/module-readme-template.md)", path, got, ReadmeSections))
		return problems, updated
	}
	if !strings.Contains(section(doc, "Configuration"), configStart) {
		problems = append(problems, fmt.Sprintf("%s: the generated config block is not in its Configuration section", path))
	}
	if start >= 0 && !strings.Contains(section(doc, "Metrics"), MetricsStart) {
		problems = append(problems, fmt.Sprintf("%s: the generated metrics table is not in its Metrics section", path))
	}
	for _, s := range ReadmeSections {
		if strings.TrimSpace(strings.ReplaceAll(section(doc, s), table, "")) == "" && s != "Metrics" {
			problems = append(problems, fmt.Sprintf("%s: section %q is empty", path, s))
		}
	}
	return problems, updated
}

// ModuleREADMEs checks every listed module's README under root; with update it rewrites the
// metrics tables (the rest is written by hand).
func ModuleREADMEs(root string, l *List, update bool) ([]string, error) {
	var problems []string
	for _, m := range l.Modules {
		dir := filepath.Join(root, filepath.FromSlash(m.Package))
		ms, err := Metrics(dir)
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", m.Name, err)
		}
		path := filepath.Join(dir, "README.md")
		doc, err := os.ReadFile(path)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: module %s has no README: %v", path, m.Name, err))
			continue
		}
		p, updated := CheckREADME(path, string(doc), ms)
		if update && updated != string(doc) {
			if err := os.WriteFile(path, []byte(updated), 0o644); err != nil {
				return nil, err
			}
			p, _ = CheckREADME(path, updated, ms)
		}
		problems = append(problems, p...)
	}
	return problems, nil
}
