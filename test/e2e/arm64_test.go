package e2e

import (
	"bufio"
	"context"
	"database/sql"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/test/k8senv"
	"github.com/kedge-io/kedge/test/slow"
)

// classTags reads a device class's build tags from hack/classes.mk (generated from cmd/modules.yaml).
func classTags(t *testing.T, class string) string {
	t.Helper()
	f, err := os.Open("../../hack/classes.mk")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CLASS_TAGS_"+class+" := "); ok {
			return v
		}
	}
	t.Fatalf("hack/classes.mk has no class %s", class)
	return ""
}

// needTools fails (with what to install) unless every command is on PATH; hack/test.sh installs them.
func needTools(t *testing.T, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s not found: apt-get install -y qemu-user-static gcc-aarch64-linux-gnu (hack/test.sh does)", c)
		}
	}
}

// The linux/arm64 gateway edgecore, built as make release builds it (static, stripped, cgo SQLite
// through Debian's cross compiler), runs under qemu-aarch64-static on this amd64 machine: it joins an
// amd64 cloudcore beside a real kube-apiserver, its Node turns Ready with arch arm64, and a pod and
// the ConfigMap it mounts reach its SQLite store.
func TestArm64GatewayEdgecoreUnderQemuJoinsAnAmd64CloudAndStoresWhatTheCloudSends(t *testing.T) {
	needBinaries(t)
	if runtime.GOARCH == "arm64" {
		t.Skip("this machine is arm64: the rest of the suite already runs edgecore natively")
	}
	needTools(t, "qemu-aarch64-static", "aarch64-linux-gnu-gcc")
	bin := filepath.Join(t.TempDir(), "edgecore-gateway-arm64")
	goBuild(t, []string{"CGO_ENABLED=1", "GOOS=linux", "GOARCH=arm64", "CC=aarch64-linux-gnu-gcc"},
		"-trimpath", "-tags", classTags(t, "gateway")+" netgo osusergo sqlite_omit_load_extension",
		"-ldflags", `-s -w -X github.com/kedge-io/kedge/host/daemon.Version=arm64-e2e -linkmode external -extldflags "-static"`,
		"-o", bin, "github.com/kedge-io/kedge/cmd/edgecore")
	// Under qemu: the binary is really arm64.
	out, err := exec.Command("qemu-aarch64-static", bin, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "arm64-e2e") || !strings.Contains(string(out), "linux/arm64") {
		t.Fatalf("qemu-aarch64-static edgecore version: %v\n%s", err, out)
	}

	env, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	dir := t.TempDir()
	pkiDir := filepath.Join(dir, "pki")
	hubPort, certPort := freePort(t), freePort(t)
	cloud := start(t, "cloudcore", []string{
		"KEDGE_MODULES__CLOUDHUB__ADDRESS=127.0.0.1:" + strconv.Itoa(hubPort),
		"KEDGE_MODULES__CLOUDHUB__CERTSERVERADDRESS=127.0.0.1:" + strconv.Itoa(certPort),
		"KEDGE_MODULES__CLOUDHUB__PKIDIR=" + pkiDir,
		"KEDGE_MODULES__CLOUDHUB__HEARTBEAT=1s", "KEDGE_MODULES__CLOUDHUB__ACKTIMEOUT=5s",
		"KEDGE_MODULES__EDGECONTROLLER__ENABLE=true",
		"KEDGE_MODULES__EDGECONTROLLER__KUBECONFIG=" + env.Kubeconfig,
		"KEDGE_MODULES__EDGECONTROLLER__NODEGRACEPERIOD=30s",
		"KEDGE_MODULES__EDGECONTROLLER__INVENTORYWAIT=2s",
	})
	cloud.waitReady()
	code, token, stderr := run(t, "cloudcore", nil, "token", "create", "--pki-dir", pkiDir)
	if code != 0 {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	const node = "arm64-edge"
	data, config := filepath.Join(dir, "edge"), filepath.Join(dir, "edgecore.yaml")
	join := exec.Command("qemu-aarch64-static", bin, "join", "--cloudcore-address", "127.0.0.1", "--token", strings.TrimSpace(token),
		"--node-name", node, "--data-dir", data, "--config-out", config, "--no-runtime",
		"--cert-port", strconv.Itoa(certPort), "--hub-port", strconv.Itoa(hubPort))
	if out, err := join.CombinedOutput(); err != nil {
		t.Fatalf("arm64 edgecore join: %v\n%s", err, out)
	}

	admin := "127.0.0.1:" + strconv.Itoa(freePort(t))
	db := filepath.Join(data, "edgecore.db")
	cmd := exec.Command("qemu-aarch64-static", bin, "--config", config)
	cmd.Env = append(daemonEnviron(), "KEDGE_ADMIN__ADDRESS="+admin, "KEDGE_ADMIN__SOCKET="+filepath.Join(dir, "edgecore.sock"),
		"KEDGE_STORE__PATH="+db, "KEDGE_MODULES__EVENTBUS__INTERNALADDRESS=127.0.0.1:0",
		"KEDGE_MODULES__DMI__SOCKET="+filepath.Join(dir, "dmi.sock"), "KEDGE_MODULES__NODESTATUS__INTERVAL=2s",
		"KEDGE_MODULES__EDGEHUB__HEARTBEAT=2s", "KEDGE_MODULES__EDGEHUB__BACKOFFMAX=1s", "KEDGE_MODULES__EDGEHUB__ACKTIMEOUT=5s")
	edgeLog := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = edgeLog, edgeLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(slow.Scale(30 * time.Second)):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("arm64 edgecore log:\n%s", edgeLog)
		}
	})
	alive := func() string {
		select {
		case <-exited:
			t.Fatalf("the arm64 edgecore exited: %v\n%s", cmd.ProcessState, edgeLog)
		default:
		}
		return ""
	}
	waitFor(t, "the arm64 edgecore ready", 120*time.Second, func() (bool, string) {
		alive()
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	ctx := context.Background()
	waitFor(t, "node "+node+" Ready with arch arm64 in the API server", 120*time.Second, func() (bool, string) {
		alive()
		n, err := env.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue && n.Status.NodeInfo.Architecture == "arm64",
					string(c.Status) + " arch " + n.Status.NodeInfo.Architecture
			}
		}
		return false, "no Ready condition"
	})

	if _, err := env.Client.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "arm-settings"},
		Data: map[string]string{"greeting": "hello from amd64"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "arm-pod", Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "localhost/busybox:local"}},
			Volumes: []corev1.Volume{{Name: "settings", VolumeSource: corev1.VolumeSource{
				ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "arm-settings"}}}}}}}
	if _, err := env.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The edge's own SQLite store, read beside the running edgecore (WAL: readers do not block it).
	store, err := sql.Open("sqlite3", "file:"+db+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	waitFor(t, "the pod and its ConfigMap in the arm64 edgecore's store", 120*time.Second, func() (bool, string) {
		alive()
		var value string
		err := store.QueryRow(`SELECT CAST(value AS TEXT) FROM objects WHERE type = 'configmap' AND namespace = 'default' AND name = 'arm-settings'`).Scan(&value)
		if err != nil {
			return false, "configmap: " + err.Error()
		}
		var pods int
		if err := store.QueryRow(`SELECT count(*) FROM objects WHERE type = 'pod' AND namespace = 'default' AND name = 'arm-pod'`).Scan(&pods); err != nil {
			return false, "pod: " + err.Error()
		}
		return strings.Contains(value, "hello from amd64") && pods == 1, value
	})
}
