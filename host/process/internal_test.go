package process

import (
	"strings"
	"testing"
	"time"
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
