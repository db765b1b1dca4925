package process_test

import (
	"bufio"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPluginDiesWithItsHost SIGKILLs a host (no chance to clean up) that runs a plugin through the
// real manager, and checks the kernel takes the plugin down too (parent-death signal).
func TestPluginDiesWithItsHost(t *testing.T) {
	plugin := copyPlugin(t)
	host := exec.Command(filepath.Join(bin, "orphanhost"), plugin, sha256File(plugin), t.TempDir())
	var stderr strings.Builder
	host.Stderr = &stderr
	out, err := host.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = host.Process.Kill(); _ = host.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("the host did not report its plugin's PID: %v; its stderr:\n%s", err, stderr.String())
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || !alive(pid) {
		t.Fatalf("plugin PID %q: %v (alive: %v)", line, err, alive(pid))
	}
	if err := host.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = host.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("plugin %d still runs 10s after its host was SIGKILLed", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
