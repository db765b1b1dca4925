package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/kedge-io/kedge/test/k8senv"
)

// freeUDPPort is a UDP port free on 127.0.0.1 (QUIC listens on UDP).
func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// KubeEdge v1.23.1's edgecore with edgeHub.quic.enable dials Kedge's cloudcore (cloudhub.quic.enable):
// it joins over the certificate server with a Kedge token, then speaks Google QUIC (Q044, a plaintext
// CHLO: it links lucas-clemente/quic-go v0.10.1), which an IETF QUIC server cannot serve. Kedge's
// cloudcore must say so — the version, the cause and the way out (websocket) — instead of dropping
// the packets silently. (What the README's compatibility matrix marks ❌ for this cell.)
func TestUpstreamEdgecoreOnQUICIsToldByKedgeCloudcoreThatItSpeaksGoogleQUIC(t *testing.T) {
	needBinaries(t)
	keDir := kubeedgeDir(t, "edgecore")
	dir := t.TempDir()
	pkiDir := filepath.Join(dir, "pki")
	hubPort, certPort, quicPort := freePort(t), freePort(t), freeUDPPort(t)
	cloud := start(t, "cloudcore", []string{
		"KEDGE_MODULES__CLOUDHUB__ADDRESS=127.0.0.1:" + strconv.Itoa(hubPort),
		"KEDGE_MODULES__CLOUDHUB__CERTSERVERADDRESS=127.0.0.1:" + strconv.Itoa(certPort),
		"KEDGE_MODULES__CLOUDHUB__PKIDIR=" + pkiDir,
		"KEDGE_MODULES__CLOUDHUB__QUIC__ENABLE=true",
		"KEDGE_MODULES__CLOUDHUB__QUIC__ADDRESS=127.0.0.1:" + strconv.Itoa(quicPort),
	})
	cloud.waitReady()
	code, token, stderr := run(t, "cloudcore", nil, "token", "create", "--pki-dir", pkiDir)
	if code != 0 {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	edgeDir := filepath.Join(dir, "edge")
	if err := os.MkdirAll(edgeDir, 0o700); err != nil {
		t.Fatal(err)
	}
	node := fmt.Sprintf("ke-quic-%d", os.Getpid()%100000)
	cfgPath := upstreamEdgecoreConfig(t, filepath.Join(keDir, "edgecore"), edgeDir, node, strings.TrimSpace(token), hubPort, certPort, "unix:///nonexistent")
	// Only what the link needs: edgeHub on QUIC; no kubelet (no containerd or cgroup needed here).
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	mods := cfg["modules"].(map[string]any)
	for _, m := range []string{"edged", "deviceTwin", "eventBus", "serviceBus"} {
		mods[m].(map[string]any)["enable"] = false
	}
	eh := mods["edgeHub"].(map[string]any)
	eh["websocket"].(map[string]any)["enable"] = false
	q := eh["quic"].(map[string]any)
	q["enable"], q["server"] = true, "127.0.0.1:"+strconv.Itoa(quicPort)
	if raw, err = yaml.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	edgeLog := &syncBuffer{}
	edge := exec.Command(filepath.Join(keDir, "edgecore"), "--config", cfgPath, "--v", "2")
	edge.Stdout, edge.Stderr = edgeLog, edgeLog
	edge.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := edge.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = edge.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-edge.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-edge.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("upstream edgecore log (last 8 KiB):\n%s", tail(edgeLog.String(), 8<<10))
			t.Logf("cloudcore log (last 8 KiB):\n%s", tail(cloud.stderr.String(), 8<<10))
		}
	})
	waitFor(t, "cloudcore to name the upstream edgecore's Google QUIC", 3*time.Minute, func() (bool, string) {
		log := cloud.stderr.String()
		return strings.Contains(log, "it speaks Google QUIC Q044") && strings.Contains(log, "websocket"), "not in cloudcore's log yet"
	})
	if _, err := os.Stat(filepath.Join(edgeDir, "node.crt")); err != nil {
		t.Fatalf("the upstream edgecore did not get its certificate from Kedge's certificate server: %v", err)
	}
	if !strings.Contains(edgeLog.String(), "Quic") {
		t.Fatalf("the upstream edgecore never tried QUIC:\n%s", tail(edgeLog.String(), 4<<10))
	}
}

// Kedge's edgecore with edgehub.quic.enable joins KubeEdge v1.23.1's cloudcore (cloudHub.quic.enable)
// with the upstream token, then dials its QUIC lane. Observed: upstream cloudcore (Google QUIC,
// quic-go v0.10.1) drops an IETF QUIC v1 Initial without answering, not even with a version
// negotiation, so the client sees only silence; edgehub's log must say what that silence likely
// means and the way out (not a bare timeout), while it keeps redialing with backoff.
func TestKedgeEdgecoreOnQUICIsToldUpstreamCloudcoreSpeaksGoogleQUIC(t *testing.T) {
	needBinaries(t)
	keDir := kubeedgeDir(t, "cloudcore")
	env, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	kcfg, err := clientcmd.BuildConfigFromFlags("", env.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kc := kubernetes.NewForConfigOrDie(kcfg)
	quicPort := freeUDPPort(t)
	hubPort, certPort, cloudLog := upstreamCloudcore(t, keDir, env, quicPort)
	token := upstreamToken(t, kc)
	node := fmt.Sprintf("kedge-quic-%d", os.Getpid()%100000)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "edgecore.yaml")
	waitFor(t, "edgecore join with the upstream token", time.Minute, func() (bool, string) {
		code, out, stderr := run(t, "edgecore", nil, "join", "--cloudcore-address", "127.0.0.1", "--token", token,
			"--node-name", node, "--data-dir", dir, "--config-out", cfg,
			"--cert-port", strconv.Itoa(certPort), "--hub-port", strconv.Itoa(hubPort))
		return code == 0, fmt.Sprintf("exit %d: %s %s", code, out, stderr)
	})
	waitFor(t, "upstream cloudcore's QUIC listener", time.Minute, func() (bool, string) {
		log := cloudLog.String()
		return strings.Contains(strings.ToLower(log), "quic"), "no QUIC line in its log yet"
	})
	edge := start(t, "edgecore", []string{
		"KEDGE_STORE__PATH=" + filepath.Join(dir, "edge.db"),
		"KEDGE_MODULES__EDGEHUB__QUIC__ENABLE=true",
		"KEDGE_MODULES__EDGEHUB__QUIC__SERVER=127.0.0.1:" + strconv.Itoa(quicPort),
	}, "--config", cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Kedge edgecore log (last 8 KiB):\n%s", tail(edge.stderr.String(), 8<<10))
		}
	})
	waitFor(t, "edgehub to name upstream cloudcore's Google QUIC", 3*time.Minute, func() (bool, string) {
		log := edge.stderr.String()
		return strings.Contains(log, "cannot reach the cloud") && strings.Contains(log, "no QUIC answer within") &&
			strings.Contains(log, "it speaks Google QUIC and drops IETF QUIC packets") && strings.Contains(log, "use its websocket lane"), "not in edgecore's log yet"
	})
}

// Kedge's edgecore with edgehub.quic.enable under Kedge's cloudcore with cloudhub.quic.enable: the
// node, joined with a token over the certificate server, links over QUIC only (its websocket is never
// dialed) and turns Ready; a pod bound to it with a ConfigMap and a Secret reaches the edge's store
// with the ConfigMap's content, and the status the edge writes reaches the API.
func TestKedgeEdgecoreOverQUICUnderKedgeCloudcoreTurnsReadyAndGetsItsPodAndConfigMap(t *testing.T) {
	quicPort := freeUDPPort(t)
	quicAddr := "127.0.0.1:" + strconv.Itoa(quicPort)
	// The websocket address points nowhere: Ready can only come over QUIC.
	c := newClusterWith(t, []string{"KEDGE_MODULES__EDGEHUB__QUIC__ENABLE=true", "KEDGE_MODULES__EDGEHUB__QUIC__SERVER=" + quicAddr,
		"KEDGE_MODULES__EDGEHUB__SERVER=127.0.0.1:1"})
	// newCluster starts cloudcore before the join; bring it back with its QUIC lane on.
	if code, _ := c.cloud.stop(syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("cloudcore exit %d", code)
	}
	c.cloudEnv = append(c.cloudEnv, "KEDGE_MODULES__CLOUDHUB__QUIC__ENABLE=true", "KEDGE_MODULES__CLOUDHUB__QUIC__ADDRESS="+quicAddr)
	c.startCloud()
	waitFor(t, "edge node Ready over QUIC", 2*time.Minute, c.nodeReady)
	if log := c.cloud.stderr.String(); !strings.Contains(log, "serving edge nodes on QUIC") || !strings.Contains(log, "node connected") {
		t.Fatalf("cloudcore did not serve the node on QUIC:\n%s", tail(log, 4<<10))
	}
	ctx := context.Background()
	if _, err := c.k8s.Client.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "app"}, Data: map[string]string{"v": "quic"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.k8s.Client.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "app-secret"}, StringData: map[string]string{"pw": "s3cret"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.createPod("p1", "app")
	c.waitOnEdge("p1", nil)
	waitFor(t, "pod status written by the edge", 60*time.Second, func() (bool, string) {
		out, _ := c.k8s.Kubectl("get", "pod", "p1", "--no-headers")
		return strings.Contains(out, "NoContainerRuntime"), out
	})
	cm, err := c.edgeClient.CoreV1().ConfigMaps("default").Get(ctx, "app", metav1.GetOptions{})
	if err != nil || cm.Data["v"] != "quic" {
		t.Fatalf("configmap on the edge: %v %v", err, cm)
	}
}
