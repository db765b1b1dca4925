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

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
	"github.com/kedge-io/kedge/test/k8senv"
)

// Version skew, edgecore N-1 against cloudcore N (docs/install.md: cloud first, edges after): the
// edgecore of the previous version, built from git, joins the current cloudcore and the pod and
// device paths work. The previous version is $KEDGE_SKEW_BASE, else the newest release tag (v*)
// before HEAD, else the commit in hack/skew-base (the repository has no release tag yet).
func TestPreviousEdgecoreWorksWithCurrentCloudcore(t *testing.T) {
	needBinaries(t)
	ensureMosquittoClients(t)
	repo := k8senv.Repo()
	base, why := strings.TrimSpace(os.Getenv("KEDGE_SKEW_BASE")), "$KEDGE_SKEW_BASE"
	if base == "" {
		// The last release: the newest v* tag before this commit (HEAD^, so a tagged release tests
		// against the release before it).
		if b, err := exec.Command("git", "-C", repo, "describe", "--tags", "--abbrev=0", "--match", "v[0-9]*", "HEAD^").Output(); err == nil {
			base, why = strings.TrimSpace(string(b)), "the newest release tag before HEAD"
		}
	}
	if base == "" {
		why = "hack/skew-base (no release tag in this checkout)"
		b, err := os.ReadFile(filepath.Join(repo, "hack", "skew-base"))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				base = l
				break
			}
		}
	}
	src := t.TempDir()
	archive := exec.Command("sh", "-c", "git -C \"$1\" archive \"$2\" | tar -x -C \"$3\"", "sh", repo, base, src)
	if b, err := archive.CombinedOutput(); err != nil {
		t.Skipf("previous version %s not in this checkout (a shallow clone?): %v %s", base, err, b)
	}
	prev := filepath.Join(binDir, "edgecore-prev")
	build := exec.Command("go", "build", "-ldflags", "-X github.com/kedge-io/kedge/host/daemon.Version="+base, "-o", prev, "./cmd/edgecore")
	build.Dir = src
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build edgecore at %s: %v\n%s", base, err, b)
	}
	b, _ := exec.Command(prev, "version").Output()
	t.Logf("previous edgecore %s (from %s): %s", base, why, strings.SplitN(string(b), "\n", 2)[0])

	k8s, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Stop() })
	if err := k8s.InstallCRDs(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c := &cluster{t: t, k8s: k8s, dir: dir, pkiDir: filepath.Join(dir, "pki"), hubPort: freePort(t), certPort: freePort(t),
		node: "skew-edge", edgeConfig: filepath.Join(dir, "edgecore.yaml"), edgeDB: filepath.Join(dir, "edge.db"),
		cloudEnv: []string{"KEDGE_MODULES__DEVICECONTROLLER__ENABLE=true", "KEDGE_MODULES__DEVICECONTROLLER__KUBECONFIG=" + k8s.Kubeconfig,
			"KEDGE_MODULES__DEVICECONTROLLER__INVENTORYWAIT=2s"}}
	c.startCloud()
	code, token, stderr := run(t, "cloudcore", nil, "token", "create", "--pki-dir", c.pkiDir)
	if code != 0 {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	// The previous edgecore's own join.
	join := exec.Command(prev, "join", "--cloudcore-address", "127.0.0.1", "--token", strings.TrimSpace(token),
		"--node-name", c.node, "--data-dir", filepath.Join(dir, "edge"), "--config-out", c.edgeConfig,
		"--cert-port", strconv.Itoa(c.certPort), "--hub-port", strconv.Itoa(c.hubPort))
	if b, err := join.CombinedOutput(); err != nil {
		t.Fatalf("previous edgecore join: %v\n%s", err, b)
	}
	c.metaServer = "127.0.0.1:" + strconv.Itoa(freePort(t))
	mqPort := freePort(t)
	c.edge = start(t, "edgecore-prev", []string{
		"KEDGE_STORE__PATH=" + c.edgeDB,
		"KEDGE_MODULES__NODESTATUS__INTERVAL=1s",
		"KEDGE_MODULES__EDGEHUB__HEARTBEAT=1s", "KEDGE_MODULES__EDGEHUB__BACKOFFMAX=1s", "KEDGE_MODULES__EDGEHUB__ACKTIMEOUT=2s",
		"KEDGE_MODULES__METAMANAGER__CONSUMERS__POD=noruntime", "KEDGE_MODULES__NORUNTIME__ENABLE=true", "KEDGE_MODULES__EDGED__ENABLE=false",
		"KEDGE_MODULES__METAMANAGER__METASERVER__ADDRESS=" + c.metaServer,
		"KEDGE_MODULES__EVENTBUS__MQTTMODE=internal", "KEDGE_MODULES__EVENTBUS__INTERNALADDRESS=127.0.0.1:" + strconv.Itoa(mqPort),
		"KEDGE_MODULES__DMI__SOCKET=" + filepath.Join(dir, "dmi.sock"),
	}, "--config", c.edgeConfig)
	c.edge.waitReadyOffline()
	if c.edgeClient, err = kubernetes.NewForConfig(&rest.Config{Host: "https://" + c.metaServer, BearerTokenFile: filepath.Join(dir, "edge", "metaserver-admin.token"),
		TLSClientConfig: rest.TLSClientConfig{CAFile: filepath.Join(dir, "edge", "metaserver.crt")}}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	waitFor(t, "previous edgecore's node Ready", 60*time.Second, c.nodeReady)

	t.Run("pod with a ConfigMap reaches the previous edgecore and its status the API", func(t *testing.T) {
		c.t = t
		if _, err := k8s.Client.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "app"}, Data: map[string]string{"v": "1"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := k8s.Client.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "app-secret"}, StringData: map[string]string{"pw": "x"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		c.createPod("p1", "app")
		c.waitOnEdge("p1", nil)
		waitFor(t, "pod status from the previous edgecore", 60*time.Second, func() (bool, string) {
			p, err := k8s.Client.CoreV1().Pods("default").Get(ctx, "p1", metav1.GetOptions{})
			return err == nil && p.Status.Reason == "NoContainerRuntime", fmt.Sprint(err)
		})
	})
	t.Run("device membership and a reported twin with the previous edgecore", func(t *testing.T) {
		c.t = t
		api, err := devicecontroller.NewRESTClient(k8s.Config)
		if err != nil {
			t.Fatal(err)
		}
		d := &deviceRig{t: t, c: c, api: api, ns: "skew-devices", device: "thermometer-1"}
		d.mq = startMQTTSub(t, mqPort)
		d.applyExamples()
		d.mq.await(t, 0, "$hw/events/node/"+c.node+"/membership/updated", func(p map[string]any) bool {
			added, _ := p["added_devices"].([]any)
			for _, x := range added {
				if m, _ := x.(map[string]any); m["name"] == d.device {
					return true
				}
			}
			return false
		})
		d.report(t, "skew-1", "temperature", "22.5", time.Now().UnixMilli())
		waitFor(t, "reported temperature in the Device status", 60*time.Second, func() (bool, string) {
			tw := d.twin("temperature")
			return tw.Reported.Value == "22.5", fmt.Sprintf("%+v", tw)
		})
	})
	c.t = t
}
