package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func goBuild(t *testing.T, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command("go", append([]string{"build"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %v: %v\n%s", args, err, out)
	}
}

// pluginsAlive lists running processes whose executable is path.
func pluginsAlive(path string) []string {
	var pids []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == path {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

// The same nodestatus source runs as a plugin process, a WASM guest runs beside it, both chosen in
// edgecore.yaml; a running module is swapped between runtimes with `edgecore module swap`, and no
// plugin process outlives edgecore.
func TestEdgecoreRunsProcessAndWasmModulesAndSwapsBetweenRuntimes(t *testing.T) {
	needBinaries(t)
	dir := t.TempDir()
	plugin := filepath.Join(dir, "nodestatus-plugin")
	goBuild(t, nil, "-tags", "kedge_custom kedge_nodestatus", "-ldflags", "-X main.moduleName=nodestatus -X main.version=1.2.3", "-o", plugin, "github.com/kedge-io/kedge/cmd/kedge-module")
	raw, guest := filepath.Join(dir, "echo.raw.wasm"), filepath.Join(dir, "echo.wasm")
	goBuild(t, []string{"GOOS=wasip1", "GOARCH=wasm"}, "-buildmode=c-shared", "-o", raw, "github.com/kedge-io/kedge/wasm/examples/echo")
	pack := exec.Command("go", "run", "github.com/kedge-io/kedge/wasm/cmd/wasmpack", "-manifest", "../../wasm/examples/echo/manifest.yaml", "-in", raw, "-out", guest)
	if out, err := pack.CombinedOutput(); err != nil {
		t.Fatalf("wasmpack: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "edgecore.yaml")
	body := fmt.Sprintf(`node:
  name: edge-runtimes
plugins:
  cacheDir: %s
modules:
  nodestatus:
    runtime: process
    path: %s
    sha256: %s
    interval: 1s
  echo:
    runtime: wasm
    path: %s
    sha256: %s
    group: echo
`, filepath.Join(dir, "wasm-cache"), plugin, sha256File(t, plugin), guest, sha256File(t, guest))
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	// A camelCase setting of the plugin from the environment: the variable name arrives lower-cased
	// and the plugin, which decodes its own settings strictly, still finds maxPods.
	d := start(t, "edgecore", []string{"KEDGE_MODULES__NODESTATUS__MAXPODS=7"}, "--config", cfg)
	d.waitReady()
	d.moduleLs("nodestatus", "process", "echo", "wasm", "sha256:")
	// The plugin reports the release stamped into it (-X main.version) and module ls shows it.
	if out := d.moduleLs(); !moduleRow(out, "nodestatus", "process", "1.2.3", "sha256:"+sha256File(t, plugin)[:12]) {
		t.Fatalf("module ls does not show the plugin's release 1.2.3 beside its sha256:\n%s", out)
	}
	if len(pluginsAlive(plugin)) != 1 {
		t.Fatalf("want one nodestatus plugin process, got %v", pluginsAlive(plugin))
	}
	// The plugin's reports reach metamanager through the host services (SendSync over the broker).
	d.waitMetric("kedge_module_handled_total", 2, `module="metamanager"`, `result="ok"`)

	swap := func(args ...string) {
		t.Helper()
		code, out, stderr := run(t, "edgecore", nil, append([]string{"module", "swap", "nodestatus", "--socket", d.socket}, args...)...)
		if code != 0 || !strings.Contains(out, "swapped nodestatus") {
			t.Fatalf("module swap %v: exit %d\n%s%s", args, code, out, stderr)
		}
	}
	swap("--runtime", "builtin")
	deadline := time.Now().Add(10 * time.Second)
	for len(pluginsAlive(plugin)) != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if alive := pluginsAlive(plugin); len(alive) != 0 {
		t.Fatalf("the plugin process outlived its swap to builtin: %v", alive)
	}
	swap("--runtime", "process", "--path", plugin, "--sha256", sha256File(t, plugin), "--health-timeout", "30s")
	if out := d.moduleLs(); !moduleRow(out, "nodestatus", "process", "1.2.3") {
		t.Fatalf("module ls after the swap back to the plugin does not show its release 1.2.3:\n%s", out)
	}
	before := d.metric("kedge_module_handled_total", `module="metamanager"`, `result="ok"`)
	d.waitMetric("kedge_module_handled_total", before+1, `module="metamanager"`, `result="ok"`)

	// WASM to WASM: a second copy of the guest (v2 of the file), pinned by its own checksum.
	guest2 := filepath.Join(dir, "echo-v2.wasm")
	if b, err := os.ReadFile(guest); err != nil || os.WriteFile(guest2, b, 0o644) != nil {
		t.Fatalf("copy guest: %v", err)
	}
	code, out, stderr := run(t, "edgecore", nil, "module", "swap", "echo", "--socket", d.socket, "--runtime", "wasm", "--path", guest2, "--sha256", sha256File(t, guest2))
	if code != 0 || !strings.Contains(out, "swapped echo: wasm -> wasm") {
		t.Fatalf("swap echo to v2: exit %d\n%s%s", code, out, stderr)
	}
	if out := d.moduleLs("echo"); strings.Contains(out, "unhealthy") {
		t.Fatalf("module ls after the WASM swap:\n%s", out)
	}

	if code, _ := d.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	deadline = time.Now().Add(10 * time.Second)
	for len(pluginsAlive(plugin)) != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if alive := pluginsAlive(plugin); len(alive) != 0 {
		t.Fatalf("plugin processes outlived edgecore: %v", alive)
	}
}
