package nodestatus

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"

	_ "github.com/kedge-io/kedge/plugins/builtin/metamanager"
)

func fakeProc(t *testing.T, meminfo, osrelease, uptime string) string {
	t.Helper()
	return writeFiles(t, map[string]string{"meminfo": meminfo, "sys/kernel/osrelease": osrelease, "uptime": uptime,
		"loadavg": "0.10 0.20 0.30 2/300 4242\n", "sys/kernel/pid_max": "32768\n", "sys/kernel/random/boot_id": "0d6c1b8e-boot\n"})
}

// writeFiles makes a directory holding the given files (name -> content).
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestGatherReadsCapacityKernelAndBootTime(t *testing.T) {
	root := fakeProc(t, "MemTotal:       2048000 kB\nMemFree: 1 kB\n", "6.1.0-test\n", "3600.50 7000.00\n")
	st, err := Gather(root, "edge-1")
	if err != nil {
		t.Fatal(err)
	}
	if st.Capacity["memory"] != "2048000Ki" || st.KernelVersion != "6.1.0-test" || st.NodeName != "edge-1" || st.Capacity["cpu"] == "" {
		t.Fatalf("Gather = %+v", st)
	}
	if up := st.ReportedAt.Sub(st.BootTime); up < time.Hour-2*time.Second || up > time.Hour+2*time.Minute {
		t.Fatalf("boot time %s is not ~1h before %s", st.BootTime, st.ReportedAt)
	}
}

func TestGatherRejectsDamagedProcFiles(t *testing.T) {
	tests := []struct{ name, meminfo, uptime, want string }{
		{"no MemTotal", "MemFree: 1 kB\n", "1 1", "no MemTotal line"},
		{"MemTotal not a number", "MemTotal: lots kB\n", "1 1", `MemTotal "lots"`},
		{"empty uptime", "MemTotal: 1 kB\n", "", "is empty"},
		{"uptime not a number", "MemTotal: 1 kB\n", "x 1", `uptime "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Gather(fakeProc(t, tt.meminfo, "6.1", tt.uptime), "n")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Gather error = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestReportsReachTheHubThroughMetamanagerWhenTheyChangeOrAreDue runs nodestatus with a real
// metamanager on a real store: a report goes at start, then each interval only when it differs from
// the last one sent, when unchangedInterval has passed since, or when edgehub says the link came up.
func TestReportsReachTheHubThroughMetamanagerWhenTheyChangeOrAreDue(t *testing.T) {
	const meminfo = "MemTotal: 1024 kB\nMemAvailable: 512 kB\n"
	tests := []struct {
		name      string
		unchanged string
		after     func(t *testing.T, rt *router.Router, proc string) // after the first report
		want      string                                             // "report" within 10s, or "none" for 3 intervals
		wantMem   string                                             // capacity memory of the next report
	}{
		{"unchangedInterval 0 sends every report", "0s", func(*testing.T, *router.Router, string) {}, "report", "1024Ki"},
		{"an unchanged report waits for unchangedInterval", "1h", func(*testing.T, *router.Router, string) {}, "none", ""},
		{"a change goes at the next interval", "1h", func(t *testing.T, _ *router.Router, proc string) {
			if err := os.WriteFile(filepath.Join(proc, "meminfo"), []byte("MemTotal: 2048 kB\nMemAvailable: 512 kB\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "report", "2048Ki"},
		{"the link coming up sends one at once", "1h", func(t *testing.T, rt *router.Router, _ string) {
			if err := rt.SendToGroup(context.Background(), "hubevents", message.New("edgehub", "hub", message.OpConnected, "")); err != nil {
				t.Fatal(err)
			}
		}, "report", "1024Ki"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, err := store.Open(filepath.Join(t.TempDir(), "edge.db"), store.Options{Synchronous: "normal"})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			rt := router.New(nil)
			hub, _ := rt.Register("edgehub", "hub", router.Options{Capacity: 16})
			mm, _ := sdk.Lookup("metamanager")
			ns, _ := sdk.Lookup(Name)
			proc := fakeProc(t, meminfo, "6.1", "10 10")
			tree := map[string]any{"modules": map[string]any{"metamanager": map[string]any{"metaServer": map[string]any{"enable": false}},
				Name: map[string]any{"interval": "1s", "unchangedInterval": tt.unchanged, "procRoot": proc, "storagePath": t.TempDir()}}}
			plan, err := modules.Plan("test", tree, nil, []sdk.Info{ns, mm}, nil)
			if err != nil {
				t.Fatal(err)
			}
			mgr := modules.NewManager(modules.Deps{NodeName: "edge-1", Router: rt, Store: db})
			if err := mgr.Start(context.Background(), plan); err != nil {
				t.Fatal(err)
			}
			defer mgr.Stop(context.Background())
			next := func(wait time.Duration) (Status, error) {
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				defer cancel()
				m, err := hub.Receive(ctx)
				if err != nil {
					return Status{}, err
				}
				var st Status
				if err := json.Unmarshal(m.Content, &st); err != nil || len(st.Conditions) != 3 || st.Allocatable["pods"] != "110" || m.Route.Resource != "default/nodestatus/edge-1" {
					t.Fatalf("report: %s %s (%v)", m.Route.Resource, m.Content, err)
				}
				return st, nil
			}
			if _, err := next(10 * time.Second); err != nil {
				t.Fatalf("the report at start never reached the hub: %v", err)
			}
			tt.after(t, rt, proc)
			switch st, err := next(map[string]time.Duration{"report": 10 * time.Second, "none": 3 * time.Second}[tt.want]); {
			case tt.want == "none" && err == nil:
				t.Fatalf("an unchanged report was sent within unchangedInterval: %+v", st)
			case tt.want == "report" && err != nil:
				t.Fatalf("no report reached the hub: %v", err)
			case tt.want == "report" && st.Capacity["memory"] != tt.wantMem:
				t.Fatalf("capacity memory %s, want %s", st.Capacity["memory"], tt.wantMem)
			}
			if _, err := db.Objects("metamanager").Get(context.Background(), store.Key{Type: "nodestatus", Namespace: "default", Name: "edge-1"}); err != nil {
				t.Fatalf("report not stored: %v", err)
			}
		})
	}
}

// TestIntervalBelowOneSecondIsRefusedAtStart proves a caller that skips the host's validation (Start
// called directly) still gets the setting's problem.
func TestIntervalBelowOneSecondIsRefusedAtStart(t *testing.T) {
	m := New()
	m.Interval = 10 * time.Millisecond
	if err := m.Start(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "interval: must be at least 1s, got 10ms") {
		t.Fatalf("Start error = %v", err)
	}
}
