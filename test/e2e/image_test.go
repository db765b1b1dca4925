package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kedge-io/kedge/test/crienv"
	"github.com/kedge-io/kedge/test/k8senv"
)

// The cloudcore release image (make images: a static binary in an OCI archive, non-root) is imported
// into the test containerd, runs there as a host-network pod with the kubeconfig and its config
// mounted, and serves an edgecore that joins it: the node becomes Ready in the API server.
func TestCloudcoreImageRunsUnderContainerdAndServesAnEdge(t *testing.T) {
	img := importImage(t, "cloudcore")
	cri, version, ref := img.cri, img.version, img.ref

	k8s, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Stop() })

	// What the pod mounts: the kubeconfig and config read-only, a data folder owned by its user.
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	etc, data := filepath.Join(dir, "etc"), filepath.Join(dir, "data")
	for _, d := range []string{etc, data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(data, 65532, 65532); err != nil {
		t.Fatal(err)
	}
	kc, err := os.ReadFile(k8s.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "kubeconfig"), kc, 0o644); err != nil {
		t.Fatal(err)
	}
	hubPort, certPort, adminPort := freePort(t), freePort(t), freePort(t)
	config := fmt.Sprintf(`admin: {address: "127.0.0.1:%d", socket: /var/lib/kedge/cloudcore.sock}
store: {path: /var/lib/kedge/cloudcore.db}
plugins: {cacheDir: /var/lib/kedge/wasm-cache}
modules:
  cloudhub: {address: "127.0.0.1:%d", certServerAddress: "127.0.0.1:%d", pkiDir: /var/lib/kedge/pki, heartbeat: 1s}
  edgecontroller: {enable: true, kubeconfig: /etc/kedge/kubeconfig, inventoryWait: 2s}
`, adminPort, hubPort, certPort)
	if err := os.WriteFile(filepath.Join(etc, "cloudcore.yaml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	labels := map[string]string{"kedge.test": "cloudcore-image", "run": version}
	t.Cleanup(func() { _ = cri.RemoveSandboxes(context.Background(), labels) })
	sbCfg := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "cloudcore-" + version, Namespace: "kedge-system", Uid: "uid-" + version},
		Labels:   labels, LogDirectory: t.TempDir(),
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}},
	}
	sb, err := cri.Runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbCfg})
	if err != nil {
		t.Fatal(err)
	}
	ctr, err := cri.Runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, SandboxConfig: sbCfg,
		Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "cloudcore"}, Image: &runtimeapi.ImageSpec{Image: ref},
			Args:    []string{"--config", "/etc/kedge/cloudcore.yaml"},
			LogPath: "cloudcore.log",
			Mounts: []*runtimeapi.Mount{{ContainerPath: "/etc/kedge", HostPath: etc, Readonly: true},
				{ContainerPath: "/var/lib/kedge", HostPath: data}},
			Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				ReadonlyRootfs: true, NoNewPrivs: true, RunAsUser: &runtimeapi.Int64Value{Value: 65532}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cri.Runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctr.ContainerId}); err != nil {
		t.Fatal(err)
	}
	logs := func() string {
		b, _ := os.ReadFile(filepath.Join(sbCfg.LogDirectory, "cloudcore.log"))
		return string(b)
	}
	waitFor(t, "cloudcore in the container ready", 60*time.Second, func() (bool, string) {
		d := &daemon{t: t, admin: "127.0.0.1:" + strconv.Itoa(adminPort)}
		code, body := d.get("/readyz")
		if code == 200 {
			return true, ""
		}
		return false, fmt.Sprintf("%d %s\n%s", code, body, tail(logs(), 10))
	})

	// An edgecore joins it (token from the CA the container made in its data folder) and becomes Ready.
	code, token, stderr := run(t, "cloudcore", nil, "token", "create", "--pki-dir", filepath.Join(data, "pki"))
	if code != 0 {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	// token create ran as root here (in a cluster: kubectl exec, as the container's user): hand the
	// token record to the container's user.
	if err := filepath.Walk(data, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, 65532, 65532)
	}); err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, k8s: k8s, dir: dir, node: "image-edge", edgeConfig: filepath.Join(dir, "edgecore.yaml"), edgeDB: filepath.Join(dir, "edge.db"),
		hubPort: hubPort, certPort: certPort}
	code, jout, stderr := run(t, "edgecore", nil, "join", "--cloudcore-address", "127.0.0.1", "--token", strings.TrimSpace(token),
		"--node-name", c.node, "--data-dir", filepath.Join(dir, "edge"), "--config-out", c.edgeConfig,
		"--cert-port", strconv.Itoa(certPort), "--hub-port", strconv.Itoa(hubPort))
	if code != 0 {
		t.Fatalf("join: %d %s %s", code, jout, stderr)
	}
	c.metaServer = "127.0.0.1:" + strconv.Itoa(freePort(t))
	c.startEdge()
	waitFor(t, "edge node served by the containerized cloudcore Ready", 90*time.Second, func() (bool, string) {
		ok, detail := c.nodeReady()
		return ok, detail + "\n" + tail(logs(), 5)
	})
}

func exitStderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// The edgecore release image (make images: static binary, entrypoint /edgecore, root as it runs
// pods) is imported into the test containerd; `edgecore --version` in it prints the tagged version,
// and edgecore runs from it as a host-network container on a joined config (the node's folder
// mounted at the same path) and serves its node: Ready in the API server through a cloudcore.
func TestEdgecoreImageRunsUnderContainerdAndItsNodeBecomesReady(t *testing.T) {
	img := importImage(t, "edgecore")
	cri, version, ref, sock := img.cri, img.version, img.ref, img.sock

	// The image's own binary answers --version with the tag it was built for.
	if b, err := exec.Command("ctr", "-a", sock, "-n", "k8s.io", "run", "--rm", ref, "edgecore-version-"+version, "/edgecore", "--version").CombinedOutput(); err != nil || !strings.Contains(string(b), version) {
		t.Fatalf("edgecore --version in the image: %v: %s (want %s)", err, b, version)
	}

	c := newClusterOnly(t)
	code, token, stderr := run(t, "cloudcore", nil, "token", "create", "--pki-dir", c.pkiDir)
	if code != 0 {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	node := filepath.Join(c.dir, "edge")
	code, jout, stderr := run(t, "edgecore", nil, "join", "--cloudcore-address", "127.0.0.1", "--token", strings.TrimSpace(token),
		"--node-name", c.node, "--data-dir", node, "--config-out", c.edgeConfig,
		"--cert-port", strconv.Itoa(c.certPort), "--hub-port", strconv.Itoa(c.hubPort))
	if code != 0 {
		t.Fatalf("join: %d %s %s", code, jout, stderr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	labels := map[string]string{"kedge.test": "edgecore-image", "run": version}
	t.Cleanup(func() { _ = cri.RemoveSandboxes(context.Background(), labels) })
	sbCfg := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "edgecore-" + version, Namespace: "kedge-system", Uid: "uid-" + version},
		Labels:   labels, LogDirectory: t.TempDir(),
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}},
	}
	sb, err := cri.Runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbCfg})
	if err != nil {
		t.Fatal(err)
	}
	var envs []*runtimeapi.KeyValue
	for _, kv := range []string{
		"KEDGE_STORE__PATH=" + c.edgeDB,
		"KEDGE_MODULES__NODESTATUS__INTERVAL=1s", "KEDGE_MODULES__EDGEHUB__HEARTBEAT=1s",
		"KEDGE_MODULES__METAMANAGER__CONSUMERS__POD=noruntime", "KEDGE_MODULES__NORUNTIME__ENABLE=true", "KEDGE_MODULES__EDGED__ENABLE=false",
		"KEDGE_MODULES__METAMANAGER__METASERVER__ADDRESS=127.0.0.1:" + strconv.Itoa(freePort(t)),
		"KEDGE_MODULES__EVENTBUS__INTERNALADDRESS=127.0.0.1:" + strconv.Itoa(freePort(t)),
		"KEDGE_ADMIN__ADDRESS=127.0.0.1:" + strconv.Itoa(freePort(t)), // host network: not the shared default port
	} {
		k, v, _ := strings.Cut(kv, "=")
		envs = append(envs, &runtimeapi.KeyValue{Key: k, Value: []byte(v)})
	}
	ctr, err := cri.Runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, SandboxConfig: sbCfg,
		Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "edgecore"}, Image: &runtimeapi.ImageSpec{Image: ref},
			Args: []string{"--config", c.edgeConfig}, Envs: envs, LogPath: "edgecore.log",
			// The node's folder (config, certificates, store) at the path the joined config names; the
			// root is read-only, so what edgecore writes by default gets volumes as on a box: its state
			// (/var/lib/kedge: the DMI socket, WASM cache) and /run/kedge (the admin socket).
			Mounts: []*runtimeapi.Mount{{ContainerPath: c.dir, HostPath: c.dir},
				{ContainerPath: "/var/lib/kedge", HostPath: t.TempDir()}, {ContainerPath: "/run/kedge", HostPath: t.TempDir()}},
			Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				ReadonlyRootfs: true, NoNewPrivs: true}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cri.Runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctr.ContainerId}); err != nil {
		t.Fatal(err)
	}
	logs := func() string {
		b, _ := os.ReadFile(filepath.Join(sbCfg.LogDirectory, "edgecore.log"))
		return string(b)
	}
	waitFor(t, "the node served by the containerized edgecore Ready", 90*time.Second, func() (bool, string) {
		ok, detail := c.nodeReady()
		return ok, detail + "\n" + tail(logs(), 10)
	})
	if !strings.Contains(logs(), version) {
		t.Errorf("edgecore in the container did not log its version %s:\n%s", version, tail(logs(), 20))
	}
}

// newClusterOnly is a kube-apiserver and a cloudcore (CA in pkiDir) with no edge node yet.
func newClusterOnly(t *testing.T) *cluster {
	t.Helper()
	k8s, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Stop() })
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, k8s: k8s, dir: dir, pkiDir: filepath.Join(dir, "pki"), hubPort: freePort(t), certPort: freePort(t),
		node: "image-edge", edgeConfig: filepath.Join(dir, "edgecore.yaml"), edgeDB: filepath.Join(dir, "edge.db")}
	c.startCloud()
	return c
}

// releaseImage is a release image of this tree, built by hack/images.sh with a fresh version tag and
// imported into the test containerd (removed again when the test ends).
type releaseImage struct {
	cri                *crienv.Client
	version, ref, sock string
}

// importImage builds the release image of binary (cloudcore or edgecore) and imports it; without ctr
// the test is skipped.
func importImage(t *testing.T, binary string) releaseImage {
	t.Helper()
	needBinaries(t)
	if _, err := exec.LookPath("ctr"); err != nil {
		t.Skip("ctr (containerd) not installed")
	}
	_, cri := crienv.Start(t)
	repo := k8senv.Repo()
	version := "e2e-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	out, err := exec.Command(filepath.Join(repo, "hack", "images.sh"), "--only", binary, "--version", version, "--out", t.TempDir()).Output()
	if err != nil {
		t.Fatalf("hack/images.sh: %v %s", err, exitStderr(err))
	}
	archive := strings.TrimSpace(string(out))
	ref := "localhost/kedge/" + binary + ":" + version
	envOut, err := exec.Command(filepath.Join(repo, "hack", "containerd.sh"), "env").Output()
	if err != nil {
		t.Fatal(err)
	}
	sock := strings.TrimPrefix(strings.TrimSpace(string(envOut)), "CONTAINERD_ADDRESS=")
	if b, err := exec.Command("ctr", "-a", sock, "-n", "k8s.io", "images", "import", archive).CombinedOutput(); err != nil {
		t.Fatalf("ctr images import %s: %v\n%s", archive, err, b)
	}
	t.Cleanup(func() { _ = exec.Command("ctr", "-a", sock, "-n", "k8s.io", "images", "rm", ref).Run() })
	return releaseImage{cri: cri, version: version, ref: ref, sock: sock}
}
