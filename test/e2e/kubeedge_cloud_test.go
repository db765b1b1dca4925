package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"sigs.k8s.io/yaml"

	"github.com/kedge-io/kedge/test/crienv"
	"github.com/kedge-io/kedge/test/k8senv"
)

// upstreamCloudcore runs KubeEdge v1.23.1's cloudcore (from kubeedgeDir) against the test's API
// server: its CRDs applied, namespace kubeedge, its hub on free loopback ports, iptablesManager,
// router and cloudStream off; its QUIC lane on quicPort if one is given. It returns the hub and
// certificate ports and cloudcore's log.
func upstreamCloudcore(t *testing.T, keDir string, env *k8senv.Env, quicPort ...int) (hubPort, certPort int, log *syncBuffer) {
	t.Helper()
	if out, err := env.Kubectl("create", "namespace", "kubeedge"); err != nil {
		t.Fatalf("create namespace kubeedge: %v\n%s", err, out)
	}
	if out, err := env.Kubectl("apply", "-R", "-f", filepath.Join(keDir, "crds")); err != nil {
		t.Fatalf("apply KubeEdge's CRDs: %v\n%s", err, out)
	}
	raw, err := exec.Command(filepath.Join(keDir, "cloudcore"), "--defaultconfig").Output()
	if err != nil {
		t.Fatalf("cloudcore --defaultconfig: %v", err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("cloudcore's default config: %v", err)
	}
	dir := t.TempDir()
	hubPort, certPort = freePort(t), freePort(t)
	obj := func(m map[string]any, keys ...string) map[string]any {
		for _, k := range keys {
			next, ok := m[k].(map[string]any)
			if !ok {
				t.Fatalf("cloudcore's default config has no %s", strings.Join(keys, "."))
			}
			m = next
		}
		return m
	}
	obj(cfg, "kubeAPIConfig")["kubeConfig"] = env.Kubeconfig
	common := obj(cfg, "commonConfig")
	obj(common, "monitorServer")["bindAddress"] = "127.0.0.1:" + strconv.Itoa(freePort(t))
	common["tunnelPort"] = freePort(t)
	hub := obj(cfg, "modules", "cloudHub")
	hub["advertiseAddress"] = []string{"127.0.0.1"}
	hub["dnsNames"] = []string{"localhost"}
	obj(hub, "https")["address"], obj(hub, "https")["port"] = "127.0.0.1", certPort
	obj(hub, "websocket")["address"], obj(hub, "websocket")["port"] = "127.0.0.1", hubPort
	obj(hub, "quic")["enable"] = false
	if len(quicPort) > 0 {
		obj(hub, "quic")["enable"], obj(hub, "quic")["address"], obj(hub, "quic")["port"] = true, "127.0.0.1", quicPort[0]
	}
	obj(hub, "unixsocket")["address"] = "unix://" + filepath.Join(dir, "kubeedge.sock")
	for k, f := range map[string]string{"tlsCAFile": "ca/rootCA.crt", "tlsCAKeyFile": "ca/rootCA.key", "tlsCertFile": "certs/server.crt", "tlsPrivateKeyFile": "certs/server.key"} {
		hub[k] = filepath.Join(dir, f)
	}
	obj(cfg, "modules", "iptablesManager")["enable"] = false
	obj(cfg, "modules", "router")["enable"] = false
	obj(cfg, "modules", "cloudStream")["enable"] = false
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "cloudcore.yaml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	log = &syncBuffer{}
	cmd := exec.Command(filepath.Join(keDir, "cloudcore"), "--config", path, "--v", "4")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("upstream cloudcore log (last 12 KiB):\n%s", tail(log.String(), 12<<10))
		}
	})
	return hubPort, certPort, log
}

// upstreamToken reads the join token upstream cloudcore keeps in Secret kubeedge/tokensecret.
func upstreamToken(t *testing.T, kc kubernetes.Interface) string {
	t.Helper()
	var token string
	waitFor(t, "upstream cloudcore's token in Secret kubeedge/tokensecret", 2*time.Minute, func() (bool, string) {
		s, err := kc.CoreV1().Secrets("kubeedge").Get(context.Background(), "tokensecret", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		token = strings.TrimSpace(string(s.Data["tokendata"]))
		return token != "", "tokendata is empty"
	})
	return token
}

// Kedge's edgecore under KubeEdge v1.23.1's cloudcore (websocket, KubeEdge's JSON lane): it joins with
// the upstream token, registers its Node as KubeEdge's edged does and reports it Ready; a pod bound to
// it with a ConfigMap volume runs on Kedge's edged, the container reads the ConfigMap's content, and
// the pod's status reaches the API as Running.
func TestKedgeEdgecoreRegistersReadyAndRunsAPodWithAConfigMapUnderUpstreamCloudcore(t *testing.T) {
	needBinaries(t)
	keDir := kubeedgeDir(t, "cloudcore")
	ep, cri := crienv.Start(t)
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
	hubPort, certPort, cloudLog := upstreamCloudcore(t, keDir, env)
	token := upstreamToken(t, kc)

	node := fmt.Sprintf("kedge-under-ke-%d", os.Getpid()%100000)
	ns := "kedge-under-ke"
	dir := t.TempDir()
	cfg := filepath.Join(dir, "edgecore.yaml")
	var code int
	var out, stderr string
	// The certificate server may come up a moment after the token is written.
	waitFor(t, "edgecore join with the upstream token", time.Minute, func() (bool, string) {
		code, out, stderr = run(t, "edgecore", nil, "join", "--cloudcore-address", "127.0.0.1", "--token", token,
			"--node-name", node, "--data-dir", dir, "--config-out", cfg,
			"--cert-port", strconv.Itoa(certPort), "--hub-port", strconv.Itoa(hubPort))
		return code == 0, fmt.Sprintf("exit %d: %s %s", code, out, stderr)
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := cri.RemoveSandboxes(ctx, map[string]string{edgedManaged: "edged", edgedPodNamespace: ns}); err != nil {
			t.Errorf("removing the test's sandboxes: %v", err)
		}
	})
	edge := start(t, "edgecore", []string{
		"KEDGE_STORE__PATH=" + filepath.Join(dir, "edge.db"),
		"KEDGE_MODULES__NODESTATUS__INTERVAL=2s",
		"KEDGE_MODULES__EDGEHUB__HEARTBEAT=5s",
		"KEDGE_MODULES__NORUNTIME__ENABLE=false",
		"KEDGE_MODULES__METAMANAGER__CONSUMERS__POD=edged",
		"KEDGE_MODULES__EDGED__ENABLE=true",
		"KEDGE_MODULES__EDGED__CRIENDPOINT=" + ep,
		"KEDGE_MODULES__EDGED__ROOTDIR=" + filepath.Join(dir, "edged"),
		"KEDGE_MODULES__EDGED__PODSANDBOXIMAGE=" + crienv.Pause,
		"KEDGE_MODULES__EDGED__STATUSPERIOD=500ms",
	}, "--config", cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Kedge edgecore log (last 8 KiB):\n%s", tail(edge.stderr.String(), 8<<10))
		}
	})
	ctx := context.Background()

	began := time.Now()
	waitFor(t, "Node "+node+" registered through upstream cloudcore and Ready", 3*time.Minute, func() (bool, string) {
		n, err := kc.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue, fmt.Sprintf("Ready=%s %s", c.Status, c.Message)
			}
		}
		return false, "no Ready condition"
	})
	t.Logf("node Ready %s after edgecore started", time.Since(began).Round(time.Second))
	n, err := kc.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := n.Labels["node-role.kubernetes.io/edge"]; !ok {
		t.Errorf("node labels %v lack node-role.kubernetes.io/edge (upstream cloudcore sends pods only to nodes with it)", n.Labels)
	}
	if n.Status.Capacity.Cpu().IsZero() || n.Status.NodeInfo.KernelVersion == "" {
		t.Errorf("node status lacks capacity or nodeInfo: capacity %v, nodeInfo %+v", n.Status.Capacity, n.Status.NodeInfo)
	}

	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	greeting := "hello from upstream cloudcore to " + node
	if _, err := kc.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg"}, Data: map[string]string{"greeting": greeting}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	grace, no := int64(1), false
	pod, err := kc.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.PodSpec{
			NodeName: node, AutomountServiceAccountToken: &no, TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "c", Image: crienv.Busybox, ImagePullPolicy: corev1.PullNever,
				Command:      []string{"sh", "-c", "exec sleep 3600"},
				VolumeMounts: []corev1.VolumeMount{{Name: "cfg", MountPath: "/cfg"}}}},
			Volumes: []corev1.Volume{
				{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bound := time.Now()
	waitFor(t, "pod Running in the API (its status from Kedge's edged through upstream cloudcore)", 3*time.Minute, func() (bool, string) {
		p, err := kc.CoreV1().Pods(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodRunning, fmt.Sprintf("phase %s %+v", p.Status.Phase, p.Status.ContainerStatuses)
	})
	t.Logf("pod Running %s after it was bound", time.Since(bound).Round(time.Second))

	// The container reads the ConfigMap's content from its volume.
	var id string
	waitFor(t, "the pod's container RUNNING in containerd", time.Minute, func() (bool, string) {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		resp, err := cri.Runtime.ListContainers(c, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
			LabelSelector: map[string]string{edgedPodUID: string(pod.UID), edgedContainer: "c"}}})
		if err != nil {
			return false, err.Error()
		}
		for _, ct := range resp.Containers {
			if ct.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
				id = ct.Id
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d containers, none running", len(resp.Containers))
	})
	c, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	resp, err := cri.Runtime.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"cat", "/cfg/greeting"}, Timeout: 10})
	if err != nil || resp.ExitCode != 0 {
		t.Fatalf("cat /cfg/greeting in the pod: %v %v", err, resp)
	}
	if got := string(resp.Stdout); got != greeting {
		t.Fatalf("the pod's ConfigMap volume holds %q, want %q", got, greeting)
	}

	// Deleted in the API, the pod stops on the edge; edged's confirmation lets cloudcore remove it.
	if err := kc.CoreV1().Pods(ns).Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted pod gone from the API (edged's confirmation through upstream cloudcore)", 2*time.Minute, func() (bool, string) {
		p, err := kc.CoreV1().Pods(ns).Get(ctx, "web", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		return false, fmt.Sprintf("still there, phase %s, deletionTimestamp %v", p.Status.Phase, p.DeletionTimestamp)
	})
	waitFor(t, "the pod's container stopped in containerd", time.Minute, func() (bool, string) {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		resp, err := cri.Runtime.ListContainers(c, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
			LabelSelector: map[string]string{edgedPodUID: string(pod.UID)}}})
		if err != nil {
			return false, err.Error()
		}
		for _, ct := range resp.Containers {
			if ct.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
				return false, "container " + ct.Id + " still running"
			}
		}
		return true, ""
	})

	// Nothing the edge sent was refused: cloudcore logs a failure naming the message for each.
	if bad := grepLines(cloudLog.String(), "process failure", 10); bad != "" {
		t.Errorf("upstream cloudcore failed to process messages of the edge:\n%s", bad)
	}
	if bad := grepLines(cloudLog.String(), "node "+node+" not found", 10); bad != "" {
		t.Errorf("upstream cloudcore could not find the node for some report:\n%s", bad)
	}
}

// grepLines returns up to max lines of s containing sub.
func grepLines(s, sub string, max int) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return strings.Join(out, "\n")
}
