package edgestream

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fileStats holds the container figures a rig's fileRuntime reports (keyed by the runtime).
var fileStats sync.Map // *fileRuntime -> []containerSample

func (r *fileRuntime) containerStats(context.Context) ([]containerSample, error) {
	v, _ := fileStats.Load(r)
	s, _ := v.([]containerSample)
	return append([]containerSample(nil), s...), nil
}

func writeProc(t *testing.T, stat, meminfo string) string {
	t.Helper()
	dir := t.TempDir()
	if stat != "" {
		if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if meminfo != "" {
		if err := os.WriteFile(filepath.Join(dir, "meminfo"), []byte(meminfo), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const (
	procStat    = "cpu  1000 50 250 9000 100 10 20 5 0 0\ncpu0 1000 50 250 9000 100 10 20 5 0 0\nintr 1\n"
	procMeminfo = "MemTotal:        8000000 kB\nMemFree:         1000000 kB\nMemAvailable:    6000000 kB\n"
)

func TestReadNodeTakesBusyCPUFromProcStatAndTotalMinusAvailableMemory(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_123)
	cases := []struct {
		name, stat, meminfo string
		wantCPU             float64
		wantMem             uint64
		wantErr             string
	}{
		{name: "busy is all but idle and iowait, in USER_HZ", stat: procStat, meminfo: procMeminfo,
			wantCPU: (1000 + 50 + 250 + 10 + 20 + 5) / 100.0, wantMem: 2000000 * 1024},
		{name: "no cpu line is an error naming the file", stat: "intr 1\n", meminfo: procMeminfo, wantErr: "has no cpu line"},
		{name: "a non-number cpu field is an error naming it", stat: "cpu 1 x 3 4 5\n", meminfo: procMeminfo, wantErr: `cpu field 2 "x"`},
		{name: "meminfo without MemAvailable is an error", stat: procStat, meminfo: "MemTotal: 1 kB\n", wantErr: "lacks MemTotal or MemAvailable"},
		{name: "a missing stat file is an error", meminfo: procMeminfo, wantErr: "stat"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := readNode(writeProc(t, c.stat, c.meminfo), now)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want it to contain %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.CPUSeconds != c.wantCPU || got.MemoryWorkingSet != c.wantMem || !got.Time.Equal(now) {
				t.Fatalf("got %+v, want cpu %v mem %d", got, c.wantCPU, c.wantMem)
			}
		})
	}
}

func TestWriteResourceMetricsWritesTheKubeletFamiliesWithMillisecondTimestamps(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_500)
	node := &nodeSample{CPUSeconds: 13.35, MemoryWorkingSet: 2048, Time: at}
	cs := []containerSample{
		{Namespace: "ns", Pod: "p", Container: "b", CPUSeconds: 1.5, CPUTime: at, MemoryWorkingSet: 100, MemoryTime: at},
		{Namespace: "ns", Pod: "p", Container: "a", CPUSeconds: 0.25, CPUTime: at.Add(-time.Second), MemoryWorkingSet: 50, MemoryTime: at},
		{Namespace: "ns", Pod: "q", Container: "c"}, // no figures yet: left out
	}
	var b strings.Builder
	if err := writeResourceMetrics(&b, node, cs, false); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`container_cpu_usage_seconds_total{container="a",namespace="ns",pod="p"} 0.25 1699999999500`,
		`container_cpu_usage_seconds_total{container="b",namespace="ns",pod="p"} 1.5 1700000000500`,
		`container_memory_working_set_bytes{container="a",namespace="ns",pod="p"} 50 1700000000500`,
		`node_cpu_usage_seconds_total 13.35 1700000000500`,
		`node_memory_working_set_bytes 2048 1700000000500`,
		`pod_cpu_usage_seconds_total{namespace="ns",pod="p"} 1.75 1700000000500`,
		`pod_memory_working_set_bytes{namespace="ns",pod="p"} 150 1700000000500`,
		"# TYPE container_cpu_usage_seconds_total counter",
		"\nscrape_error 0\n",
	}
	for _, w := range want {
		if !strings.Contains(b.String(), w) {
			t.Errorf("missing %q in\n%s", w, b.String())
		}
	}
	if strings.Contains(b.String(), `pod="q"`) {
		t.Errorf("a container without figures was written:\n%s", b.String())
	}
	b.Reset()
	if err := writeResourceMetrics(&b, nil, nil, true); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "scrape_error 1") || strings.Contains(b.String(), "node_cpu_usage_seconds_total ") {
		t.Fatalf("a failed node read must give scrape_error 1 and no node series:\n%s", b.String())
	}
}

func TestStatsSessionCarriesTheNodesResourceMetricsToTheCloud(t *testing.T) {
	old := procRoot
	procRoot = writeProc(t, procStat, procMeminfo)
	t.Cleanup(func() { procRoot = old })
	r := newRig(t)
	at := time.Now()
	fileStats.Store(r.rt, []containerSample{{Namespace: "ns", Pod: "p", Container: "c", CPUSeconds: 2, CPUTime: at, MemoryWorkingSet: 4096, MemoryTime: at}})
	t.Cleanup(func() { fileStats.Delete(r.rt) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	text, err := r.cloud.ScrapeNode(ctx, "edge-a")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`container_cpu_usage_seconds_total{container="c",namespace="ns",pod="p"} 2 `,
		"node_cpu_usage_seconds_total 13.35 ", "node_memory_working_set_bytes 2048000000 ", "scrape_error 0"} {
		if !strings.Contains(string(text), w) {
			t.Errorf("missing %q in\n%s", w, text)
		}
	}
	t.Run("a node without a tunnel is a clear error", func(t *testing.T) {
		_, err := r.cloud.ScrapeNode(ctx, "edge-b")
		if err == nil || !strings.Contains(err.Error(), "node edge-b has no stream tunnel") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("unreadable node figures give scrape_error 1 and still the containers", func(t *testing.T) {
		procRoot = t.TempDir()
		text, err := r.cloud.ScrapeNode(ctx, "edge-a")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(text), "scrape_error 1") || !strings.Contains(string(text), `pod="p"`) {
			t.Fatalf("got\n%s", text)
		}
	})
}
