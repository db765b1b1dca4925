package main

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var updateREADMEs = flag.Bool("update", false, "rewrite the module READMEs' generated metrics tables")

// TestModuleREADMEsFollowTheTemplateAndListTheMetricsTheCodeDefines proves every module's README
// (every module of cmd/modules.yaml) has the template's sections in order (docs/module-readme-
// template.md), its config block in Configuration, and in Metrics exactly the metrics its code
// defines: a metric added, renamed or removed in the code makes this fail until the table is
// regenerated (-update).
func TestModuleREADMEsFollowTheTemplateAndListTheMetricsTheCodeDefines(t *testing.T) {
	l, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	problems, err := ModuleREADMEs(root, l, *updateREADMEs)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

func writeGo(t *testing.T, dir, name, src string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestMetricsFindsEveryWayTheModulesNameAMetricAndRefusesOneItCannotRead proves the scan behind the
// tables: constant names, names joined from constants, labels of a Vec, names made by a constructor
// from a constant prefix; tests and testdata left out; a name built at run time is an error naming
// the file and line rather than a metric silently missing from the README.
func TestMetricsFindsEveryWayTheModulesNameAMetricAndRefusesOneItCannotRead(t *testing.T) {
	dir := t.TempDir()
	writeGo(t, dir, "m.go", `package m

import "github.com/prometheus/client_golang/prometheus"

func metrics() {
	_ = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_m_requests_total", Help: "Requests " + "by result."}, []string{"result"})
	_ = prometheus.NewGauge(prometheus.GaugeOpts{Name: "kedge_m_" + "up", Help: "1 while up."})
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_m_" + name, Help: help})
	}
	_ = c("a_total", "A.")
	_ = c("b_total", "B.")
	_ = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kedge_m_seconds", Help: "Time."})
}
`)
	writeGo(t, dir, "m_test.go", `package m
import "github.com/prometheus/client_golang/prometheus"
var _ = prometheus.NewGauge(prometheus.GaugeOpts{Name: "kedge_m_test_only"})
`)
	writeGo(t, filepath.Join(dir, "testdata"), "x.go", `package x
import "github.com/prometheus/client_golang/prometheus"
var _ = prometheus.NewGauge(prometheus.GaugeOpts{Name: "kedge_m_testdata_only"})
`)
	writeGo(t, filepath.Join(dir, "sub"), "s.go", `package sub
import "github.com/prometheus/client_golang/prometheus"
var _ = prometheus.NewSummary(prometheus.SummaryOpts{Name: "kedge_m_sub_summary", Help: "In a subpackage."})
`)
	ms, err := Metrics(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		got = append(got, m.Name+" "+m.Type+" "+strings.Join(m.Labels, ",")+" "+m.Help)
	}
	want := []string{
		"kedge_m_a_total counter  A.",
		"kedge_m_b_total counter  B.",
		"kedge_m_requests_total counter result Requests by result.",
		"kedge_m_seconds histogram  Time.",
		"kedge_m_sub_summary summary  In a subpackage.",
		"kedge_m_up gauge  1 while up.",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("metrics:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	writeGo(t, dir, "dyn.go", `package m
import "github.com/prometheus/client_golang/prometheus"
func dyn(module string) { _ = prometheus.NewGauge(prometheus.GaugeOpts{Name: "kedge_" + module + "_up"}) }
`)
	if _, err := Metrics(dir); err == nil || !strings.Contains(err.Error(), "dyn.go:3:") {
		t.Fatalf("a metric name built at run time: err = %v, want one naming dyn.go:3", err)
	}
}

// TestCheckREADMENamesEachWayAREADMEStraysFromTheTemplate proves each kind of drift is reported, and
// only with -update's rewrite of the metrics table does a stale one pass.
func TestCheckREADMENamesEachWayAREADMEStraysFromTheTemplate(t *testing.T) {
	code := []Metric{{Name: "kedge_m_up", Type: "gauge", Help: "1 while up."}}
	doc := func(sections []string, table string) string {
		var b strings.Builder
		b.WriteString("# m (edge)\n")
		for _, s := range sections {
			b.WriteString("\n## " + s + "\n\ntext\n")
			switch s {
			case "Configuration":
				b.WriteString("\n" + configStart + "x -->\n\n```yaml\nmodules: {}\n```\n\n<!-- config:end -->\n")
			case "Metrics":
				b.WriteString("\n" + table + "\n")
			}
		}
		return b.String()
	}
	good := doc(ReadmeSections, MetricsTable(code))
	swapped := slices.Clone(ReadmeSections)
	swapped[2], swapped[3] = swapped[3], swapped[2]
	tests := []struct {
		name, doc, want string
	}{
		{"follows the template", good, ""},
		{"a section missing", doc(slices.Delete(slices.Clone(ReadmeSections), 4, 5), MetricsTable(code)), "a module README has exactly"},
		{"sections out of order", doc(swapped, MetricsTable(code)), "a module README has exactly"},
		{"an extra section", doc(append(slices.Clone(ReadmeSections), "Notes"), MetricsTable(code)), "a module README has exactly"},
		{"lists a metric the code lacks", doc(ReadmeSections, MetricsTable(append(slices.Clone(code), Metric{Name: "kedge_m_gone_total", Type: "counter"}))), "the metrics table is not what the code defines"},
		{"misses a metric the code has", doc(ReadmeSections, MetricsTable(nil)), "the metrics table is not what the code defines"},
		{"no metrics table", doc(ReadmeSections, ""), "no generated metrics table"},
		{"no config block in Configuration", strings.Replace(good, configStart, "<!-- other -->", 1), "config block is not in its Configuration section"},
		{"an empty section", strings.Replace(good, "## How it is tested\n\ntext\n", "## How it is tested\n", 1), `section "How it is tested" is empty`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems, updated := CheckREADME("README.md", tt.doc, code)
			joined := strings.Join(problems, "\n")
			if tt.want == "" && joined != "" || !strings.Contains(joined, tt.want) {
				t.Fatalf("problems:\n%s\nwant one containing %q", joined, tt.want)
			}
			if strings.Contains(tt.want, "metrics table is not") {
				if again, _ := CheckREADME("README.md", updated, code); len(again) != 0 {
					t.Fatalf("after the update: %v", again)
				}
			}
		})
	}
}
