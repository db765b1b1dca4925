package process_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestConfigLoadRefusesBadPluginFiles(t *testing.T) {
	good := copyPlugin(t)
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		block map[string]any
		want  []string
	}{
		{"no checksum", map[string]any{"runtime": "process", "path": good},
			[]string{"test.yaml: modules.echo: sha256 is not set", "sha256sum " + good}},
		{"checksum not hex", map[string]any{"runtime": "process", "path": good, "sha256": "abc"},
			[]string{`sha256 "abc" is not a SHA-256 in hex`}},
		{"wrong checksum", map[string]any{"runtime": "process", "path": good, "sha256": strings.Repeat("ab", 32)},
			[]string{"plugin " + good + " has sha256 " + sha256File(good), "but the config pins " + strings.Repeat("ab", 32)}},
		{"missing binary", map[string]any{"runtime": "process", "path": filepath.Join(dir, "nope"), "sha256": strings.Repeat("ab", 32)},
			[]string{"plugin file " + filepath.Join(dir, "nope") + " does not exist"}},
		{"a directory", map[string]any{"runtime": "process", "path": dir, "sha256": strings.Repeat("ab", 32)},
			[]string{"is not a regular file"}},
		{"not executable", map[string]any{"runtime": "process", "path": notExec, "sha256": sha256File(notExec)},
			[]string{"is not executable", "chmod +x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := manager(t, map[string]any{"echo": tc.block}, fast, nil)
			if err == nil {
				t.Fatal("the config was accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
		})
	}
}

func TestLoaderDirRestrictsWherePluginsLive(t *testing.T) {
	path := copyPlugin(t)
	opts := fast
	opts.Dir = t.TempDir() // not where the plugin is
	_, err := manager(t, map[string]any{"echo": echoBlock(path, nil)}, opts, nil)
	if err == nil || !strings.Contains(err.Error(), "is outside the plugin directory "+opts.Dir) {
		t.Fatalf("got %v, want the plugin refused for being outside Dir", err)
	}
	opts.Dir = filepath.Dir(path)
	if _, err := manager(t, map[string]any{"echo": echoBlock(path, nil)}, opts, nil); err != nil {
		t.Fatalf("a plugin inside Dir: %v", err)
	}
}

func TestStartRefusesWhatIsNotAPlugin(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	trueBin, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true(1) on this machine")
	}
	trueCopy := write("true", string(must(os.ReadFile(trueBin))))
	for _, tc := range []struct {
		name string
		path string
		want []string
	}{
		{"a program that exits at once", trueCopy,
			[]string{"plugin " + trueCopy + " exited", "not a Kedge plugin"}},
		{"a script printing to stdout", write("chatty.sh", "#!/bin/sh\necho 'starting up...'\n"),
			[]string{"plugin " + filepath.Join(dir, "chatty.sh") + ` wrote "starting up..." to stdout before the go-plugin handshake`}},
		{"a real plugin behind a stray print", write("wrapped.sh", "#!/bin/sh\necho debug: loading\nexec "+copyPlugin(t)+"\n"),
			[]string{"plugin " + filepath.Join(dir, "wrapped.sh") + ` wrote "debug: loading" to stdout`, "log to stderr"}},
		{"a program that fails with a message", write("fails.sh", "#!/bin/sh\necho 'cannot open /dev/ttyUSB0' >&2\nexit 1\n"),
			[]string{"exited", "cannot open /dev/ttyUSB0"}},
		{"not an executable format", write("garbage", "\x00\x01\x02 not a program"),
			[]string{"plugin " + filepath.Join(dir, "garbage") + " cannot be executed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := manager(t, map[string]any{"echo": echoBlock(tc.path, nil)}, fast, nil)
			if err == nil {
				t.Fatal("started")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
			t.Log(err)
			if pids := processesOf(tc.path); len(pids) > 0 {
				t.Errorf("processes left: %v", pids)
			}
		})
	}
	hostStillWorks(t)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestChecksumIsVerifiedAgainBeforeEveryLaunch(t *testing.T) {
	path := copyPlugin(t)
	block := echoBlock(path, nil)
	// The file changes after the config was checked and before the launch.
	loaded := block["sha256"].(string)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("tampered"))
	f.Close()
	block["sha256"] = loaded
	_, err = manager(t, map[string]any{"echo": block}, fast, nil)
	// Plan checks the file too, so tampering before Plan is refused there; the restart path below
	// is the one that proves the check before each launch.
	if err == nil || !strings.Contains(err.Error(), "but the config pins "+loaded) {
		t.Fatalf("got %v, want a checksum mismatch", err)
	}

	// A running plugin whose file is replaced is not relaunched after a crash.
	path = copyPlugin(t)
	var l logs
	mgr, err := manager(t, map[string]any{"echo": echoBlock(path, nil)}, fast, l.logger())
	if err != nil {
		t.Fatal(err)
	}
	_ = mgr
	pids := processesOf(path)
	if len(pids) != 1 {
		t.Fatalf("plugin processes: %v", pids)
	}
	// Replace the file (a new inode, as an upgrade would) and kill the running plugin.
	if err := os.WriteFile(path+".new", append(must(os.ReadFile(path)), "v2"...), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r := l.waitRecord(t, "plugin restart failed; trying again")
	if !strings.Contains(r["err"].(string), "has sha256 "+sha256File(path)) {
		t.Errorf("restart error: %v, want the checksum mismatch with the actual sum", r["err"])
	}
	time.Sleep(50 * time.Millisecond)
	if pids := processesOf(path); len(pids) > 0 {
		t.Errorf("a plugin with the wrong checksum runs: %v", pids)
	}
}
