package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kedge-io/kedge/test/crienv"
	"github.com/kedge-io/kedge/test/k8senv"
)

// A mixed fleet on one Kedge cloudcore: KubeEdge v1.23.1's edgecore (KubeEdge's JSON lane, told
// apart at the handshake) and Kedge's edgecore (the Kedge lane) at the same time. Both Nodes turn
// Ready; a pod with a ConfigMap volume runs on each (its content read where each runtime puts it);
// a ConfigMap change reaches only the node whose pod uses it; both pods are deleted cleanly; and Kedge
// refused or left unhandled nothing either edge sent (devicetwin's membership sync aside).
func TestUpstreamAndKedgeEdgecoreRunPodsSideBySideOnOneKedgeCloudcore(t *testing.T) {
	needBinaries(t)
	keDir := kubeedgeDir(t, "edgecore")
	kedgeCRI, kedgeCRIClient := crienv.Start(t)
	env, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	if err := env.InstallCRDs(); err != nil { // devicecontroller serves the upstream edge's devicetwin
		t.Fatal(err)
	}
	kcfg, err := clientcmd.BuildConfigFromFlags("", env.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kc := kubernetes.NewForConfigOrDie(kcfg)

	dir := t.TempDir()
	pkiDir := filepath.Join(dir, "pki")
	hubPort, certPort := freePort(t), freePort(t)
	cloud := start(t, "cloudcore", []string{
		"KEDGE_MODULES__CLOUDHUB__ADDRESS=127.0.0.1:" + strconv.Itoa(hubPort),
		"KEDGE_MODULES__CLOUDHUB__CERTSERVERADDRESS=127.0.0.1:" + strconv.Itoa(certPort),
		"KEDGE_MODULES__CLOUDHUB__PKIDIR=" + pkiDir,
		"KEDGE_MODULES__EDGECONTROLLER__ENABLE=true",
		"KEDGE_MODULES__EDGECONTROLLER__KUBECONFIG=" + env.Kubeconfig,
		"KEDGE_MODULES__EDGECONTROLLER__INVENTORYWAIT=2s",
		"KEDGE_MODULES__DEVICECONTROLLER__ENABLE=true", // upstream devicetwin asks for its membership
		"KEDGE_MODULES__DEVICECONTROLLER__KUBECONFIG=" + env.Kubeconfig,
	})
	cloud.waitReady()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cloudcore log (last 12 KiB):\n%s", tail(cloud.stderr.String(), 12<<10))
		}
	})
	token := func() string {
		t.Helper()
		code, tok, stderr := run(t, "cloudcore", nil, "token", "create", "--pki-dir", pkiDir)
		if code != 0 {
			t.Fatalf("token create: %d %s", code, stderr)
		}
		return strings.TrimSpace(tok)
	}
	ns := "mixed"
	upNode := fmt.Sprintf("mix-ke-%d", os.Getpid()%100000)
	kedgeNode := fmt.Sprintf("mix-kedge-%d", os.Getpid()%100000)

	// The upstream edgecore on a containerd of its own.
	up := newUpstreamEdge(t, keDir, upNode, token(), hubPort, certPort, "kemix0", "10.96.0.0/16", ns)
	// Kedge's edgecore with its edged on the shared containerd.
	kedgeDir := filepath.Join(dir, "kedge")
	kedgeCfg := filepath.Join(dir, "kedge-edgecore.yaml")
	if code, out, stderr := run(t, "edgecore", nil, "join", "--cloudcore-address", "127.0.0.1", "--token", token(),
		"--node-name", kedgeNode, "--data-dir", kedgeDir, "--config-out", kedgeCfg,
		"--cert-port", strconv.Itoa(certPort), "--hub-port", strconv.Itoa(hubPort)); code != 0 {
		t.Fatalf("Kedge edgecore join: %d %s %s", code, out, stderr)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := kedgeCRIClient.RemoveSandboxes(ctx, map[string]string{edgedManaged: "edged", edgedPodNamespace: ns}); err != nil {
			t.Errorf("removing the test's sandboxes: %v", err)
		}
	})
	kedge := start(t, "edgecore", []string{
		"KEDGE_STORE__PATH=" + filepath.Join(dir, "kedge-edge.db"),
		"KEDGE_MODULES__NODESTATUS__INTERVAL=2s",
		"KEDGE_MODULES__EDGEHUB__HEARTBEAT=5s",
		"KEDGE_MODULES__NORUNTIME__ENABLE=false",
		"KEDGE_MODULES__METAMANAGER__CONSUMERS__POD=edged",
		"KEDGE_MODULES__EDGED__ENABLE=true",
		"KEDGE_MODULES__EDGED__CRIENDPOINT=" + kedgeCRI,
		"KEDGE_MODULES__EDGED__ROOTDIR=" + filepath.Join(dir, "edged"),
		"KEDGE_MODULES__EDGED__PODSANDBOXIMAGE=" + crienv.Pause,
		"KEDGE_MODULES__EDGED__STATUSPERIOD=500ms",
		"KEDGE_MODULES__EVENTBUS__INTERNALADDRESS=127.0.0.1:" + strconv.Itoa(freePort(t)),
	}, "--config", kedgeCfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Kedge edgecore log (last 8 KiB):\n%s", tail(kedge.stderr.String(), 8<<10))
		}
	})
	ctx := context.Background()
	wait := func(what string, limit time.Duration, ok func() (bool, string)) {
		t.Helper()
		waitFor(t, what, limit, func() (bool, string) {
			if up.exited() {
				t.Fatalf("upstream edgecore exited while waiting for %s", what)
			}
			return ok()
		})
	}
	ready := func(node string) func() (bool, string) {
		return func() (bool, string) {
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
		}
	}
	wait("upstream edgecore's Node Ready", 3*time.Minute, ready(upNode))
	wait("Kedge edgecore's Node Ready", 3*time.Minute, ready(kedgeNode))
	// Each was served on its own lane, chosen at the handshake.
	if got := grepLines(cloud.stderr.String(), "node connected", 10); !strings.Contains(got, upNode) || !strings.Contains(got, kedgeNode) {
		t.Fatalf("cloudcore did not log both nodes connecting:\n%s", got)
	}

	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	configMap := func(name, value string) {
		t.Helper()
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"greeting": value}}
		if _, err := kc.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
			_, err = kc.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{})
			if err != nil {
				t.Fatal(err)
			}
		} else if err != nil {
			t.Fatal(err)
		}
	}
	configMap("cfg-up", "hello upstream "+upNode)
	configMap("cfg-kedge", "hello kedge "+kedgeNode)
	grace, no := int64(1), false
	pod := func(name, node, cm string) *corev1.Pod {
		t.Helper()
		p, err := kc.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{
			NodeName: node, AutomountServiceAccountToken: &no, TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "c", Image: crienv.Busybox, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sh", "-c", "exec sleep 3600"}, VolumeMounts: []corev1.VolumeMount{{Name: "cfg", MountPath: "/cfg"}}}},
			Volumes: []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: cm}}}}},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	upPod, kedgePod := pod("on-upstream", upNode, "cfg-up"), pod("on-kedge", kedgeNode, "cfg-kedge")
	for _, name := range []string{upPod.Name, kedgePod.Name} {
		wait("pod "+name+" Running", 3*time.Minute, func() (bool, string) {
			p, err := kc.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return p.Status.Phase == corev1.PodRunning, fmt.Sprintf("phase %s", p.Status.Phase)
		})
	}
	// The upstream kubelet wrote its ConfigMap into the pod's volume folder.
	upFile := filepath.Join(up.dir, "kubelet", "pods", string(upPod.UID), "volumes", "kubernetes.io~configmap", "cfg", "greeting")
	if b, err := os.ReadFile(upFile); err != nil || string(b) != "hello upstream "+upNode {
		t.Fatalf("upstream pod's ConfigMap volume holds %q (%v)", b, err)
	}
	// Kedge's edged: read inside the container.
	catInKedgePod := func() (string, error) {
		c, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		resp, err := kedgeCRIClient.Runtime.ListContainers(c, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
			State:         &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
			LabelSelector: map[string]string{edgedPodUID: string(kedgePod.UID), edgedContainer: "c"}}})
		if err != nil || len(resp.Containers) != 1 {
			return "", fmt.Errorf("running containers of the Kedge pod: %v %v", err, resp)
		}
		out, err := kedgeCRIClient.Runtime.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: resp.Containers[0].Id, Cmd: []string{"cat", "/cfg/greeting"}, Timeout: 10})
		if err != nil {
			return "", err
		}
		return string(out.Stdout), nil
	}
	wait("the Kedge pod's ConfigMap in its container", time.Minute, func() (bool, string) {
		got, err := catInKedgePod()
		return got == "hello kedge "+kedgeNode, fmt.Sprintf("%q %v", got, err)
	})

	// A change of the upstream pod's ConfigMap reaches its kubelet's volume.
	configMap("cfg-up", "changed for "+upNode)
	wait("the changed ConfigMap in the upstream pod's volume", 3*time.Minute, func() (bool, string) {
		b, err := os.ReadFile(upFile)
		return string(b) == "changed for "+upNode, fmt.Sprintf("%q %v", b, err)
	})
	if got, err := catInKedgePod(); err != nil || got != "hello kedge "+kedgeNode {
		t.Fatalf("the Kedge pod's ConfigMap after the other one changed: %q %v", got, err)
	}

	for _, name := range []string{upPod.Name, kedgePod.Name} {
		if err := kc.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{upPod.Name, kedgePod.Name} {
		wait("pod "+name+" deleted from the API by its edge", 3*time.Minute, func() (bool, string) {
			_, err := kc.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
	}
	wait("both edges to acknowledge everything cloudhub sent them", time.Minute, func() (bool, string) {
		pending := cloud.metric("kedge_cloudhub_downstream_pending")
		return pending == 0, fmt.Sprintf("%v entries still queued", pending)
	})
	n, what := refusedOf(cloud)
	t.Logf("refused or unhandled requests of the two edges: %v", what)
	if n != 0 {
		t.Errorf("Kedge refused or did not handle %v requests: %v\n%s", n, what, grepLines(cloud.stderr.String(), "edge node request", 40))
	}
	if strings.Contains(cloud.stderr.String(), "rejected frame") {
		t.Errorf("cloudcore rejected frames:\n%s", grepLines(cloud.stderr.String(), "rejected frame", 10))
	}
}
