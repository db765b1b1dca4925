package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func (d *daemon) waitMetric(name string, atLeast float64, match ...string) {
	d.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for d.metric(name, match...) < atLeast {
		if time.Now().After(deadline) {
			d.t.Fatalf("%s%v stayed below %v for 30s\n%s", name, match, atLeast, d.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// moduleLs runs `edgecore module ls` against d and checks its output names every string in want.
func (d *daemon) moduleLs(want ...string) string {
	d.t.Helper()
	code, out, stderr := run(d.t, "edgecore", nil, "module", "ls", "--socket", d.socket)
	if code != 0 {
		d.t.Fatalf("module ls: exit %d: %s", code, stderr)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			d.t.Errorf("module ls output lacks %q:\n%s", w, out)
		}
	}
	return out
}

func (d *daemon) waitLog(s string) {
	d.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(d.stderr.String(), s) {
		if time.Now().After(deadline) {
			d.t.Fatalf("no %q in the log within 30s\n%s", s, d.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestModuleLsShowsRunningModulesOverTheControlSocket(t *testing.T) {
	needBinaries(t)
	d := start(t, "edgecore", nil)
	d.waitReady()
	d.moduleLs("NAME", "metamanager", "nodestatus", "builtin", "ok")
	if fi, err := os.Stat(d.socket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode = %v (%v), want 0600", fi.Mode().Perm(), err)
	}
}

func TestModuleSwapCommandReplacesAModuleAndRefusesABadOne(t *testing.T) {
	needBinaries(t)
	d := start(t, "edgecore", []string{"KEDGE_MODULES__NODESTATUS__INTERVAL=1s", "KEDGE_MODULES__NODESTATUS__UNCHANGEDINTERVAL=0s"})
	d.waitReady()
	code, out, stderr := run(t, "edgecore", nil, "module", "swap", "nodestatus", "--runtime", "builtin", "--socket", d.socket)
	if code != 0 || !strings.Contains(out, "swapped nodestatus: builtin -> builtin") {
		t.Fatalf("module swap: exit %d\n%s%s", code, out, stderr)
	}
	d.waitMetric("kedge_module_swaps_total", 1, `module="nodestatus"`, `result="ok"`)
	// The new instance reports every second: it kept the KEDGE_ settings (by default it would send an
	// unchanged report once a minute).
	before := d.metric("kedge_nodestatus_reports_total")
	d.waitMetric("kedge_nodestatus_reports_total", before+3)

	missing := filepath.Join(t.TempDir(), "absent-plugin")
	code, _, stderr = run(t, "edgecore", nil, "module", "swap", "nodestatus", "--runtime", "process", "--path", missing, "--sha256", strings.Repeat("a", 64), "--socket", d.socket)
	if code == 0 || !strings.Contains(stderr, "modules.nodestatus") {
		t.Fatalf("swap to a missing plugin: exit %d: %s", code, stderr)
	}
	before = d.metric("kedge_nodestatus_reports_total")
	d.waitMetric("kedge_nodestatus_reports_total", before+1) // the builtin instance still runs
	if code, _ := d.stop(syscall.SIGTERM, 5*time.Second); code != 0 {
		t.Fatalf("exit code %d after swaps", code)
	}
}

func TestEditingTheConfigSwapsChangedModulesAndRefusesInvalidEdits(t *testing.T) {
	needBinaries(t)
	cfg := filepath.Join(t.TempDir(), "edgecore.yaml")
	write := func(body string) {
		t.Helper()
		tmp := cfg + ".tmp" // replace the file the way editors do
		if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, cfg); err != nil {
			t.Fatal(err)
		}
	}
	write("node:\n  name: edge-reload\nmodules:\n  nodestatus:\n    interval: 1h\n    unchangedInterval: 0s\n")
	d := start(t, "edgecore", nil, "--config", cfg)
	d.waitReady()
	d.waitMetric("kedge_nodestatus_reports_total", 1)

	write("node:\n  name: edge-reload\nmodules:\n  nodestatus:\n    interval: 1s\n    unchangedInterval: 0s\n")
	d.waitMetric("kedge_module_swaps_total", 1, `module="nodestatus"`, `result="ok"`)
	d.waitMetric("kedge_nodestatus_reports_total", 3) // the swapped-in instance reports every second

	write("node:\n  name: edge-reload\nmodules:\n  nodestatus:\n    interval: often\n")
	d.waitLog("config reload refused, the running modules are unchanged")
	d.waitLog(`modules.nodestatus.interval`)

	write("node:\n  name: edge-reload\nmodules:\n  nodestatus:\n    enable: false\n")
	d.waitLog("config reload: stopping module")
	d.waitMetric("kedge_module_up", 1, `module="metamanager"`)
	if up := d.metric("kedge_module_up", `module="nodestatus"`); up != 0 {
		t.Fatalf("nodestatus still up after being disabled in the config")
	}
	if code, _ := d.stop(syscall.SIGTERM, 5*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// A device-class build carries only its modules: the others are not in the binary, and a config that
// asks for one is refused by name.
func TestTrimmedEdgecoreCarriesOnlyItsClassModules(t *testing.T) {
	needBinaries(t)
	bin := filepath.Join(t.TempDir(), "edgecore-minimal")
	build := exec.Command("go", "build", "-tags", classTags(t, "minimal"), "-o", bin, "github.com/kedge-io/kedge/cmd/edgecore")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build minimal edgecore: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.Contains(string(out), "metamanager") || !strings.Contains(string(out), "edgehub") || strings.Contains(string(out), "nodestatus") {
		t.Fatalf("minimal edgecore version (%v):\n%s", err, out)
	}
	cmd := exec.Command(bin, "validate", "--set", "modules.nodestatus.interval=5s")
	msg, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(msg), "modules.nodestatus") || !strings.Contains(string(msg), "unknown") {
		t.Fatalf("asking a minimal edgecore for nodestatus: exit %d: %s", cmd.ProcessState.ExitCode(), msg)
	}
	// The minimal class leaves the MetaServer out (and with it k8s.io/api): off by default, and a
	// config that turns it on is refused by name.
	state := t.TempDir()
	cmd = exec.Command(bin, "--set", "modules.metamanager.metaServer.enable=true")
	cmd.Env = append(daemonEnviron(), "KEDGE_STORE__PATH="+filepath.Join(state, "e.db"), "KEDGE_ADMIN__ADDRESS=127.0.0.1:0",
		"KEDGE_ADMIN__SOCKET="+filepath.Join(state, "e.sock"))
	msg, _ = cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() == 0 || !strings.Contains(string(msg), "metaServer.enable") || !strings.Contains(string(msg), "no MetaServer") {
		t.Fatalf("a minimal edgecore asked for the MetaServer: exit %d: %s", cmd.ProcessState.ExitCode(), msg)
	}
	admin := "127.0.0.1:" + strconv.Itoa(freePort(t))
	cmd = exec.Command(bin)
	cmd.Env = append(daemonEnviron(), "KEDGE_STORE__PATH="+filepath.Join(state, "d.db"), "KEDGE_ADMIN__ADDRESS="+admin,
		"KEDGE_ADMIN__SOCKET="+filepath.Join(state, "d.sock"))
	var log syncBuffer
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	waitFor(t, "the minimal edgecore ready with its defaults", 30*time.Second, func() (bool, string) {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false, err.Error() + "\n" + log.String()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
}
