package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/kedge-io/kedge/host/daemon"
)

// runInstallCmd runs edgecore in-process with fresh join, reset and systemd-unit commands.
func runInstallCmd(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	s := spec
	s.Commands = []*cobra.Command{joinCommand(), resetCommand(), unitCommand()}
	cmd := daemon.Command(s)
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// tree lists every path under root (relative), folders with a trailing slash.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		if d.IsDir() {
			rel += "/"
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestSystemdUnitPassesSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (apt-get install systemd); hack/test.sh installs it")
	}
	exe, err := os.Executable() // an executable that exists, as verify checks ExecStart
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out, err := runInstallCmd(t, "", "systemd-unit", "--binary", exe, "--config-file", filepath.Join(dir, "edgecore.yaml"), "--data-dir", filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err, out)
	}
	for _, want := range []string{"ExecStart=" + exe + " --config " + dir + "/edgecore.yaml", "Restart=always", "LimitNOFILE=1048576",
		"ProtectSystem=strict", "ReadWritePaths=" + dir + "/data " + dir, "NoNewPrivileges=true", "WantedBy=multi-user.target"} {
		if !strings.Contains(out, want) {
			t.Errorf("unit lacks %q:\n%s", want, out)
		}
	}
	unit := filepath.Join(dir, UnitName)
	if err := os.WriteFile(unit, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(v)) != 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, v)
	}
	// The check is real: a misspelt directive is reported.
	bad := strings.Replace(out, "LimitNOFILE=", "LimitNOFILES=", 1)
	if err := os.WriteFile(unit, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if v, _ := exec.Command(analyze, "verify", unit).CombinedOutput(); !strings.Contains(string(v), "LimitNOFILES") {
		t.Fatalf("systemd-analyze verify did not report a misspelt key: %s", v)
	}
}

func TestSystemdUnitRefusesPathsAUnitCannotHold(t *testing.T) {
	for _, tc := range []struct{ name, flag, value, want string }{
		{"relative binary", "--binary", "edgecore", "absolute path"},
		{"space in data dir", "--data-dir", "/var/lib/my kedge", "space"},
		{"percent in config", "--config-file", "/etc/kedge/%i.yaml", "%"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runInstallCmd(t, "", "systemd-unit", tc.flag, tc.value)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.value) {
				t.Fatalf("want an error naming %q and %q, got %v\n%s", tc.value, tc.want, err, out)
			}
		})
	}
}

// join --install writes the unit; a second join --install refuses (saying why) before asking cloudcore
// for anything; --force overwrites; reset removes every file join and install wrote.
func TestJoinInstallRefusesAnExistingUnitAndResetRemovesEverything(t *testing.T) {
	ca, port := startCertServer(t)
	root := t.TempDir()
	for _, d := range []string{"etc/systemd/system", "var/lib", "run"} { // what a box has before
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	before := tree(t, root)
	unitDir, dataDir, config := filepath.Join(root, "etc/systemd/system"), filepath.Join(root, "var/lib/kedge"), filepath.Join(root, "etc/kedge/edgecore.yaml")
	join := func(extra ...string) (string, error) {
		return runInstallCmd(t, "", append([]string{"join", "--cloudcore-address", "127.0.0.1", "--cert-port", strconv.Itoa(port),
			"--token", newJoinToken(t, ca), "--node-name", "box-1", "--data-dir", dataDir, "--config-out", config,
			"--install", "--unit-dir", unitDir, "--no-runtime"}, extra...)...)
	}
	out, err := join()
	if err != nil {
		t.Fatalf("join --install: %v\n%s", err, out)
	}
	unit, err := os.ReadFile(filepath.Join(unitDir, UnitName))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "--config "+config) || !strings.Contains(string(unit), "ReadWritePaths="+dataDir+" ") {
		t.Fatalf("unit does not name the joined config and data folder:\n%s", unit)
	}
	installed := tree(t, root)

	// Again without --force: refused, with the reason, nothing changed (the token is not spent).
	out, err = join()
	if err == nil || !strings.Contains(err.Error(), UnitName+" exists") || !strings.Contains(err.Error(), "already installed") ||
		!strings.Contains(err.Error(), "edgecore reset") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second join --install: want a refusal naming the unit, reset and --force; got %v\n%s", err, out)
	}
	if got := tree(t, root); strings.Join(got, "\n") != strings.Join(installed, "\n") {
		t.Fatalf("a refused join changed files:\nbefore %v\nafter  %v", installed, got)
	}

	// What a running edgecore adds in its data folder (store, MetaServer files, a socket).
	for _, f := range []string{"edgecore.db", "edgecore.db-wal", "metaserver.crt", "metaserver.key", "metaserver-admin.token", "edged/pods/x/volumes/v"} {
		p := filepath.Join(dataDir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// reset without --force asks; "n" keeps everything.
	out, err = runInstallCmd(t, "n\n", "reset", "--config", config, "--unit-dir", unitDir)
	if err == nil || !strings.Contains(out, "proceed?") || !strings.Contains(out, dataDir) {
		t.Fatalf("reset answered n: want a cancelled reset listing %s; got %v\n%s", dataDir, err, out)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "certs", "node.key")); err != nil {
		t.Fatalf("a cancelled reset removed the node key: %v", err)
	}
	out, err = runInstallCmd(t, "", "reset", "--force", "--config", config, "--unit-dir", unitDir)
	if err != nil {
		t.Fatalf("reset: %v\n%s", err, out)
	}
	if got := tree(t, root); strings.Join(got, "\n") != strings.Join(before, "\n") {
		t.Fatalf("reset left files behind:\nbefore join %v\nafter reset %v", before, got)
	}
	// After reset the box joins again.
	if out, err := join(); err != nil && !strings.Contains(err.Error(), "409") {
		t.Fatalf("join --install after reset: %v\n%s", err, out)
	}
}

func TestResetRefusesADataFolderAtTheTopOfTheFileSystem(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "edgecore.yaml")
	if err := os.WriteFile(config, []byte("store:\n  path: /edgecore.db\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runInstallCmd(t, "", "reset", "--force", "--config", config, "--unit-dir", dir)
	if err == nil || !strings.Contains(err.Error(), "too close to /") {
		t.Fatalf("want a refusal to remove /, got %v\n%s", err, out)
	}
	if _, err := os.Stat(config); err != nil {
		t.Fatal("the config was removed:", err)
	}
}
