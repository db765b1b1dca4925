package process

import (
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

func TestBackoffDoublesWithJitterAndStaysBounded(t *testing.T) {
	lo, hi := 100*time.Millisecond, 3*time.Second
	for _, tc := range []struct {
		fails    int
		min, max time.Duration
	}{
		{0, 80 * time.Millisecond, 120 * time.Millisecond},
		{1, 160 * time.Millisecond, 240 * time.Millisecond},
		{3, 640 * time.Millisecond, 960 * time.Millisecond},
		{5, 2400 * time.Millisecond, hi}, // 3.2s is capped at hi before jitter
		{200, 2400 * time.Millisecond, hi},
	} {
		for _, j := range []float64{0, 0.5, 0.999} {
			if d := backoff(lo, hi, tc.fails, j); d < tc.min || d > tc.max {
				t.Errorf("backoff(fails=%d, jitter=%v) = %s, want within [%s, %s]", tc.fails, j, d, tc.min, tc.max)
			}
		}
	}
}

func TestPluginEnvKeepsRuntimeBasicsAndDropsTheHostsSettings(t *testing.T) {
	got := pluginEnv([]string{"PATH=/bin", "HOME=/root", "KEDGE_HUB__TOKEN=secret", "AWS_SECRET_ACCESS_KEY=x",
		"LC_ALL=C", "GOMAXPROCS=2", "TZ=UTC", "PATHOLOGICAL=1"})
	want := []string{"PATH=/bin", "HOME=/root", "LC_ALL=C", "GOMAXPROCS=2", "TZ=UTC"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("plugin environment %v, want %v", got, want)
	}
}

func TestSeriesIDRefusesWhatWouldBreakTheHostsMetrics(t *testing.T) {
	counter := dto.MetricType_COUNTER
	fam := &dto.MetricFamily{Name: proto.String("reads_total"), Type: &counter}
	lp := func(n, v string) *dto.LabelPair { return &dto.LabelPair{Name: proto.String(n), Value: proto.String(v)} }
	c := &dto.Counter{Value: proto.Float64(1)}
	for _, tc := range []struct {
		name string
		m    *dto.Metric
		ok   bool
	}{
		{"plain", &dto.Metric{Label: []*dto.LabelPair{lp("device", "a")}, Counter: c}, true},
		{"the host's module label", &dto.Metric{Label: []*dto.LabelPair{lp("module", "other")}, Counter: c}, false},
		{"a label twice", &dto.Metric{Label: []*dto.LabelPair{lp("a", "1"), lp("a", "2")}, Counter: c}, false},
		{"a bad label name", &dto.Metric{Label: []*dto.LabelPair{lp("bad-name", "1")}, Counter: c}, false},
		{"a reserved label", &dto.Metric{Label: []*dto.LabelPair{lp("__name__", "x")}, Counter: c}, false},
		{"a gauge in a counter family", &dto.Metric{Gauge: &dto.Gauge{Value: proto.Float64(1)}}, false},
	} {
		if _, ok := seriesID(fam, tc.m); ok != tc.ok {
			t.Errorf("%s: accepted=%v, want %v", tc.name, ok, tc.ok)
		}
	}
	a, _ := seriesID(fam, &dto.Metric{Label: []*dto.LabelPair{lp("x", "ab"), lp("y", "")}, Counter: c})
	b, _ := seriesID(fam, &dto.Metric{Label: []*dto.LabelPair{lp("x", "a"), lp("y", "b")}, Counter: c})
	if a == b {
		t.Error("different series share an id")
	}
}
