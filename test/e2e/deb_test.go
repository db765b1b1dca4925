package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kedge-io/kedge/test/k8senv"
)

// The kedge-edgecore .deb (hack/deb.sh, dpkg-deb only) installs into a scratch root with the real
// dpkg (maintainer scripts run chrooted there, with busybox as /bin/sh), the installed edgecore runs,
// an upgrade keeps the data folder and the conffile, and purge leaves the root as it was.
func TestDebInstallsUpgradesAndPurgesCleanly(t *testing.T) {
	needBinaries(t)
	for _, tool := range []string{"dpkg", "dpkg-deb", "busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("dpkg --root runs maintainer scripts in a chroot: needs root")
	}
	out := t.TempDir()
	deb := func(version string) string {
		cmd := exec.Command(filepath.Join(k8senv.Repo(), "hack", "deb.sh"), "--binary", filepath.Join(binDir, "edgecore"), "--version", version, "--out", out)
		cmd.Env = append(os.Environ(), "DEB_COMPRESS=gzip") // xz of the -race binary takes long on a busy machine
		b, err := cmd.Output()
		if err != nil {
			t.Fatalf("hack/deb.sh: %v\n%s", err, b)
		}
		return strings.TrimSpace(string(b))
	}
	v1, v2 := deb("v0.9.0"), deb("v0.9.1-3-gabcdef")
	if filepath.Base(v2) != "kedge-edgecore_0.9.1+3.gabcdef_amd64.deb" && !strings.Contains(v2, "0.9.1+3.gabcdef") {
		t.Fatalf("package name %s does not carry the Debian version 0.9.1+3.gabcdef", v2)
	}
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "bin", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bb, _ := exec.LookPath("busybox")
	if b, err := exec.Command("cp", bb, filepath.Join(root, "bin", "busybox")).CombinedOutput(); err != nil {
		t.Fatal(string(b))
	}
	for _, c := range []string{"sh", "rm", "rmdir"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", c)); err != nil {
			t.Fatal(err)
		}
	}
	if b, err := exec.Command("mknod", "-m", "666", filepath.Join(root, "dev", "null"), "c", "1", "3").CombinedOutput(); err != nil {
		t.Skipf("mknod /dev/null in the scratch root: %v %s", err, b)
	}
	before := treeOf(t, root)
	dpkg := func(args ...string) string {
		b, err := exec.Command("dpkg", append([]string{"--root=" + root}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("dpkg %v: %v\n%s", args, err, b)
		}
		return string(b)
	}
	dpkg("-i", v1)
	for _, f := range []string{"usr/bin/edgecore", "lib/systemd/system/edgecore.service", "etc/default/edgecore"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("installed package lacks /%s: %v", f, err)
		}
	}
	if b, err := exec.Command(filepath.Join(root, "usr/bin/edgecore"), "--version").CombinedOutput(); err != nil || !strings.HasPrefix(string(b), "edgecore ") {
		t.Fatalf("installed edgecore --version: %v %s", err, b)
	}
	unit, _ := os.ReadFile(filepath.Join(root, "lib/systemd/system/edgecore.service"))
	if !strings.Contains(string(unit), "ExecStart=/usr/bin/edgecore --config /etc/kedge/edgecore.yaml") {
		t.Fatalf("packaged unit does not run /usr/bin/edgecore:\n%s", unit)
	}
	// What join and a running edgecore leave, and a local edit of the conffile.
	for f, data := range map[string]string{"var/lib/kedge/certs/node.key": "key", "var/lib/kedge/edgecore.db": "db", "etc/kedge/edgecore.yaml": "node: {name: box}\n"} {
		p := filepath.Join(root, f)
		_ = os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "etc/default/edgecore"), []byte("KEDGE_LOG__LEVEL=debug\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out2 := dpkg("--force-confold", "-i", v2)
	if !strings.Contains(out2, "over (0.9.0)") {
		t.Errorf("second install was not an upgrade over 0.9.0:\n%s", out2)
	}
	for f, want := range map[string]string{"var/lib/kedge/certs/node.key": "key", "var/lib/kedge/edgecore.db": "db", "etc/default/edgecore": "KEDGE_LOG__LEVEL=debug\n"} {
		if b, err := os.ReadFile(filepath.Join(root, f)); err != nil || string(b) != want {
			t.Errorf("upgrade did not keep /%s: %v %q", f, err, b)
		}
	}
	if st := dpkg("-s", "kedge-edgecore"); !strings.Contains(st, "Version: 0.9.1+3.gabcdef") {
		t.Errorf("dpkg -s after upgrade:\n%s", st)
	}
	dpkg("--purge", "kedge-edgecore")
	after := treeOf(t, root)
	var extra []string
	for _, p := range after {
		if !strings.HasPrefix(p, "var/lib/dpkg/") && !contains(before, p) {
			extra = append(extra, p)
		}
	}
	if len(extra) > 0 {
		t.Fatalf("purge left behind: %v", extra)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// treeOf lists every path under root, relative, folders with a trailing slash.
func treeOf(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		if fi.IsDir() {
			rel += "/"
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
