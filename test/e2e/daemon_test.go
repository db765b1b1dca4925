package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/store"
)

func TestBinariesStartWithDefaultConfigAndExitZeroOnSIGTERM(t *testing.T) {
	needBinaries(t)
	for _, bin := range []string{"cloudcore", "edgecore"} {
		t.Run(bin, func(t *testing.T) {
			t.Parallel()
			d := start(t, bin, nil)
			d.waitReady()
			code, _ := d.stop(syscall.SIGTERM, 5*time.Second)
			if code != 0 {
				t.Fatalf("exit code %d after SIGTERM, want 0\n%s", code, d.stderr)
			}
			if !strings.Contains(d.stderr.String(), "msg=stopped") {
				t.Fatalf("no clean-stop log line:\n%s", d.stderr)
			}
		})
	}
}

func TestEdgecoreExitsZeroOnSIGINT(t *testing.T) {
	needBinaries(t)
	d := start(t, "edgecore", nil)
	d.waitReady()
	if code, _ := d.stop(syscall.SIGINT, 5*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGINT, want 0\n%s", code, d.stderr)
	}
}

// A stop requested while the modules are still starting (an orchestrator that changes its mind) is
// a clean stop, exit 0, not a start failure.
func TestEdgecoreStoppedWhileStartingExitsZero(t *testing.T) {
	needBinaries(t)
	d := start(t, "edgecore", nil)
	d.waitLog("admin server listening") // signals are handled from here on; modules start right after
	if code, _ := d.stop(syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM during start, want 0\n%s", code, d.stderr)
	}
}

// The node status travels nodestatus -> router -> metamanager -> SQLite inside a real edgecore, and is
// on disk after the process is gone.
func TestEdgecoreNodeStatusReachesTheStoreThroughTheRouter(t *testing.T) {
	needBinaries(t)
	db := filepath.Join(t.TempDir(), "edge.db")
	d := start(t, "edgecore", []string{"KEDGE_MODULES__NODESTATUS__INTERVAL=1s", "KEDGE_MODULES__NODESTATUS__UNCHANGEDINTERVAL=0s", "KEDGE_STORE__PATH=" + db},
		"--set", "node.name=edge-e2e")
	d.waitReady()
	deadline := time.Now().Add(30 * time.Second)
	for d.metric("kedge_nodestatus_reports_total") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 2 node status reports in 30s\n%s", d.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := d.metric("kedge_router_delivered_total", `module="metamanager"`); got < 2 {
		t.Errorf("router delivered %v messages to metamanager, want >= 2", got)
	}
	if got := d.metric("kedge_module_handled_total", `module="metamanager"`, `result="ok"`); got < 2 {
		t.Errorf("metamanager handled %v messages ok, want >= 2", got)
	}
	if code, _ := d.stop(syscall.SIGTERM, 5*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}

	s, err := store.Open(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	obj, err := s.Objects("metamanager").Get(context.Background(), store.Key{Type: "nodestatus", Namespace: "default", Name: "edge-e2e"})
	if err != nil {
		t.Fatalf("node status not in the store after exit: %v", err)
	}
	var st struct {
		NodeName string            `json:"nodeName"`
		Capacity map[string]string `json:"capacity"`
	}
	if err := json.Unmarshal(obj.Value, &st); err != nil || st.NodeName != "edge-e2e" || st.Capacity["cpu"] == "" || st.Capacity["memory"] == "" {
		t.Fatalf("stored node status = %s (%v)", obj.Value, err)
	}
}

func TestBadConfigExitsTwoWithOneLineNamingFileAndKey(t *testing.T) {
	needBinaries(t)
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		env  []string
		args []string
		want []string // every string must be in the single stderr line
	}{
		{"malformed yaml", nil, []string{"--config", write("bad.yaml", "node:\n  name: [x\n")}, []string{"bad.yaml", "line"}},
		{"unknown module", nil, []string{"--config", write("mod.yaml", "modules:\n  nosuch:\n    enable: true\n")}, []string{"mod.yaml", "modules.nosuch", "unknown module", "metamanager"}},
		{"unknown key", nil, []string{"--config", write("key.yaml", "node:\n  nmae: x\n")}, []string{"key.yaml", "node.nmae", "unknown key"}},
		{"unknown module key", nil, []string{"--config", write("mkey.yaml", "modules:\n  nodestatus:\n    intervall: 5s\n")}, []string{"mkey.yaml", "modules.nodestatus.intervall", "unknown key"}},
		{"wrong type", nil, []string{"--config", write("type.yaml", "modules:\n  nodestatus:\n    interval: 5\n")}, []string{"type.yaml", "modules.nodestatus.interval", "duration"}},
		{"wrong type bool", nil, []string{"--config", write("bool.yaml", "modules:\n  metamanager:\n    enable: maybe\n")}, []string{"bool.yaml", "modules.metamanager.enable"}},
		{"missing file", nil, []string{"--config", filepath.Join(dir, "absent.yaml")}, []string{"absent.yaml"}},
		{"bad env override", []string{"KEDGE_NODE__NAMEX=a"}, nil, []string{"KEDGE_NODE__NAMEX", "unknown key"}},
		{"bad set value", nil, []string{"--set", "shutdownTimeout=soon"}, []string{"shutdownTimeout", "duration"}},
		{"invalid node name", nil, []string{"--set", "node.name=Not_Valid"}, []string{"node.name", "not a valid node name"}},
		{"unsupported runtime", nil, []string{"--set", "modules.nodestatus.runtime=jvm"}, []string{"modules.nodestatus.runtime", "builtin, process, wasm"}},
		{"unknown flag", nil, []string{"--no-such-flag"}, []string{"no-such-flag"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := append([]string{"KEDGE_STORE__PATH=" + filepath.Join(dir, "never.db")}, tt.env...)
			code, _, stderr := run(t, "edgecore", env, tt.args...)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; stderr:\n%s", code, stderr)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 {
				t.Fatalf("want exactly one line on stderr, got %d:\n%s", len(lines), stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(lines[0], w) {
					t.Errorf("stderr %q does not mention %q", lines[0], w)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "never.db")); err == nil {
		t.Error("a rejected config still created the store")
	}
}

func TestDefaultAndMinimalConfigsAreAcceptedAsTheyArePrinted(t *testing.T) {
	needBinaries(t)
	for _, bin := range []string{"cloudcore", "edgecore"} {
		for _, flag := range []string{"--defaultconfig", "--minconfig"} {
			t.Run(bin+flag, func(t *testing.T) {
				code, out, stderr := run(t, bin, nil, flag)
				if code != 0 || !strings.Contains(out, "modules:") {
					t.Fatalf("%s %s: exit %d\n%s%s", bin, flag, code, out, stderr)
				}
				if flag == "--defaultconfig" && !strings.Contains(out, "# ") {
					t.Errorf("%s --defaultconfig has no comments:\n%s", bin, out)
				}
				p := filepath.Join(t.TempDir(), bin+".yaml")
				if err := os.WriteFile(p, []byte(out), 0o600); err != nil {
					t.Fatal(err)
				}
				code, _, stderr = run(t, bin, nil, "validate", "--config", p)
				if code != 0 {
					t.Fatalf("printed config rejected (exit %d): %s\n--- config:\n%s", code, stderr, out)
				}
			})
		}
	}
}

func TestVersionListsCompiledModules(t *testing.T) {
	needBinaries(t)
	code, out, _ := run(t, "edgecore", nil, "version")
	if code != 0 || !strings.Contains(out, "edgecore") || !strings.Contains(out, "metamanager") || !strings.Contains(out, "nodestatus") {
		t.Fatalf("edgecore version: exit %d\n%s", code, out)
	}
}
