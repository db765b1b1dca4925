package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kedge-io/kedge/test/crienv"
	"github.com/kedge-io/kedge/test/k8senv"
)

// Labels edged puts on its sandboxes and containers (plugins/builtin/edged/cri.go).
const (
	edgedManaged      = "kedge.io/managed"
	edgedPodUID       = "io.kubernetes.pod.uid"
	edgedPodNamespace = "io.kubernetes.pod.namespace"
	edgedContainer    = "io.kubernetes.container.name"
)

// edgedCluster is a cluster whose edgecore runs pods on the project's containerd through edged,
// with kube-controller-manager running Deployments, in a namespace of its own.
type edgedCluster struct {
	*cluster
	cri *crienv.Client
	ns  string
	// stopKCM stops the running kube-controller-manager.
	stopKCM func()
}

func newEdgedCluster(t *testing.T, opts ...k8senv.Option) *edgedCluster {
	t.Helper()
	return newEdgedClusterIn(t, "", opts...)
}

// newEdgedClusterIn is newEdgedCluster whose cloudcore keeps its CA in pkiDir (see newClusterIn).
func newEdgedClusterIn(t *testing.T, pkiDir string, opts ...k8senv.Option) *edgedCluster {
	t.Helper()
	needBinaries(t)
	ep, cri := crienv.Start(t)
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	ns := "edged-e2e-" + hex.EncodeToString(suffix)
	// Registered first, so it runs last: after edgecore is gone, nothing of this test stays in containerd.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := cri.RemoveSandboxes(ctx, map[string]string{edgedManaged: "edged", edgedPodNamespace: ns}); err != nil {
			t.Errorf("removing the test's sandboxes: %v", err)
		}
	})
	c := newClusterIn(t, pkiDir, []string{
		"KEDGE_MODULES__NORUNTIME__ENABLE=false",
		"KEDGE_MODULES__METAMANAGER__CONSUMERS__POD=edged", // the default, undoing the noruntime of startEdge
		"KEDGE_MODULES__EDGED__ENABLE=true",
		"KEDGE_MODULES__EDGED__CRIENDPOINT=" + ep,
		"KEDGE_MODULES__EDGED__ROOTDIR=" + t.TempDir(),
		"KEDGE_MODULES__EDGED__PODSANDBOXIMAGE=" + crienv.Pause,
		"KEDGE_MODULES__EDGED__STATUSPERIOD=500ms",
		"KEDGE_MODULES__EDGED__BACKOFF__BASE=500ms",
		"KEDGE_MODULES__EDGED__BACKOFF__MAX=30s",
		// Not the shared default 1884 of the embedded MQTT broker (other tests on this machine use it).
		"KEDGE_MODULES__EVENTBUS__INTERNALADDRESS=127.0.0.1:" + strconv.Itoa(freePort(t)),
	}, opts...)
	e := &edgedCluster{cluster: c, cri: cri, ns: ns}
	e.startControllerManager()
	e.kubectl("create", "namespace", ns)
	waitFor(t, "edge node Ready", 60*time.Second, c.nodeReady)
	return e
}

// startControllerManager runs the built kube-controller-manager (Deployments → ReplicaSets → pods,
// service accounts, node lifecycle, taint eviction) against the test's API server, with extra flags
// (later ones win); envtest's service-account signing key is not ours, so the token controller stays
// off. A cluster runs one: newEdgedCluster starts it, a second call stops the first.
func (e *edgedCluster) startControllerManager(extra ...string) {
	t := e.t
	if e.stopKCM != nil {
		e.stopKCM()
	}
	out := &syncBuffer{}
	cmd := exec.Command(filepath.Join(e.k8s.BinDir, "kube-controller-manager"), append([]string{
		"--kubeconfig", e.k8s.Kubeconfig, "--authentication-kubeconfig", e.k8s.Kubeconfig,
		"--authorization-kubeconfig", e.k8s.Kubeconfig, "--bind-address", "127.0.0.1", "--secure-port", "0",
		"--leader-elect=false", "--use-service-account-credentials=false", "--controllers", "*,-serviceaccount-token"}, extra...)...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	var once sync.Once
	e.stopKCM = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
			if t.Failed() {
				t.Logf("kube-controller-manager output (last 4000 bytes):\n%s", tail(out.String(), 4000))
			}
		})
	}
	t.Cleanup(e.stopKCM)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// apply writes manifest to a file and `kubectl apply`s it.
// runShell applies a busybox pod on the edge node whose one container ("c") runs script with sh -c,
// and waits until it runs.
func (e *edgedCluster) runShell(name, script string) {
	e.t.Helper()
	e.apply(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
spec:
  nodeName: %s
  containers:
  - name: c
    image: localhost/busybox:local
    command: ["sh", "-c", %q]
`, name, e.node, script))
	waitFor(e.t, name+" running", 90*time.Second, func() (bool, string) {
		ready, status, _, raw := e.kubectlRow(name)
		return status == "Running", ready + " " + raw
	})
}

func (e *edgedCluster) apply(manifest string) {
	e.t.Helper()
	f := filepath.Join(e.t.TempDir(), "manifest.yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o600); err != nil {
		e.t.Fatal(err)
	}
	e.kubectl("apply", "-n", e.ns, "-f", f)
}

// containers lists, through CRI, the containers edged runs for a pod (every state), by name.
func (e *edgedCluster) containers(uid string) (map[string]*runtimeapi.Container, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := e.cri.Runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		LabelSelector: map[string]string{edgedManaged: "edged", edgedPodUID: uid}}})
	if err != nil {
		return nil, err
	}
	byName := map[string]*runtimeapi.Container{}
	for _, c := range resp.Containers {
		name := c.Labels[edgedContainer]
		if old, ok := byName[name]; ok && old.CreatedAt > c.CreatedAt {
			continue // an older instance kept for its logs
		}
		byName[name] = c
	}
	return byName, nil
}

// running waits until every named container of the pod runs in containerd and returns their IDs.
func (e *edgedCluster) running(uid string, names ...string) map[string]string {
	e.t.Helper()
	ids := map[string]string{}
	waitFor(e.t, "containers "+strings.Join(names, ",")+" of pod "+uid+" RUNNING in containerd", 90*time.Second, func() (bool, string) {
		cs, err := e.containers(uid)
		if err != nil {
			return false, err.Error()
		}
		for _, n := range names {
			c, ok := cs[n]
			if !ok || c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
				return false, fmt.Sprintf("%s: %v", n, c)
			}
			ids[n] = c.Id
		}
		return true, ""
	})
	return ids
}

func (e *edgedCluster) sandboxes(uid string) ([]*runtimeapi.PodSandbox, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := e.cri.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		LabelSelector: map[string]string{edgedManaged: "edged", edgedPodUID: uid}}})
	if err != nil {
		return nil, err
	}
	return resp.Items, nil
}

// exec runs a command in a container through CRI ExecSync and returns its stdout.
func (e *edgedCluster) exec(id string, cmd ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, err := e.cri.Runtime.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 10})
	if err != nil {
		return "", err
	}
	if resp.ExitCode != 0 {
		return string(resp.Stdout), fmt.Errorf("%v exited %d: %s", cmd, resp.ExitCode, resp.Stderr)
	}
	return string(resp.Stdout), nil
}

// onlyPod waits for exactly one pod matching selector in the API and returns it.
func (e *edgedCluster) onlyPod(selector string) *corev1.Pod {
	e.t.Helper()
	var pod *corev1.Pod
	waitFor(e.t, "one pod "+selector, 60*time.Second, func() (bool, string) {
		l, err := e.k8s.Client.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err.Error()
		}
		if len(l.Items) != 1 {
			return false, fmt.Sprintf("%d pods", len(l.Items))
		}
		pod = &l.Items[0]
		return true, ""
	})
	return pod
}

func (e *edgedCluster) pod(name string) (*corev1.Pod, error) {
	return e.k8s.Client.CoreV1().Pods(e.ns).Get(context.Background(), name, metav1.GetOptions{})
}

// kubectlRow is one row of `kubectl get pod <name>`: READY, STATUS, RESTARTS.
func (e *edgedCluster) kubectlRow(name string) (ready, status, restarts string, raw string) {
	out, err := e.k8s.Kubectl("get", "pod", "-n", e.ns, name, "--no-headers")
	if err != nil {
		return "", "", "", out
	}
	f := strings.Fields(out)
	if len(f) < 4 {
		return "", "", "", out
	}
	return f[1], f[2], f[3], out
}

// waitKubectlRunning waits until kubectl shows the pod Running, 1/1 and restarts as given.
func (e *edgedCluster) waitKubectlRunning(name, restarts string) {
	e.t.Helper()
	waitFor(e.t, "kubectl get pod "+name+": Running 1/1, "+restarts+" restarts", 90*time.Second, func() (bool, string) {
		ready, status, r, raw := e.kubectlRow(name)
		return ready == "1/1" && status == "Running" && r == restarts, raw
	})
}

func restartCount(p *corev1.Pod, container string) int32 {
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == container {
			return s.RestartCount
		}
	}
	return -1
}

func containerStatus(p *corev1.Pod, container string) *corev1.ContainerStatus {
	for i := range p.Status.ContainerStatuses {
		if p.Status.ContainerStatuses[i].Name == container {
			return &p.Status.ContainerStatuses[i]
		}
	}
	return nil
}

// syncedAfter waits until edged has begun at least rounds reconciliation rounds per pod since its
// start (a worker's rounds are serial, so the earlier ones are complete).
func (e *edgedCluster) syncedAfter(pods, rounds int) {
	e.t.Helper()
	waitFor(e.t, "edged reconciled its pods after the start", 60*time.Second, func() (bool, string) {
		n := e.edge.metric("kedge_edged_pod_syncs_total", `result="ok"`)
		return n >= float64(pods*rounds), fmt.Sprint(n)
	})
}

const webDeployment = `apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
data:
  greeting: hello-1
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web, e2e: edged}
    spec:
      nodeName: e2e-edge
      hostNetwork: true
      terminationGracePeriodSeconds: 5
      containers:
      - name: web
        image: localhost/busybox:local
        imagePullPolicy: IfNotPresent
        command: ["sleep", "3600"]
        readinessProbe:
          exec: {command: ["cat", "/etc/web/greeting"]}
          periodSeconds: 1
        volumeMounts:
        - {name: config, mountPath: /etc/web}
      volumes:
      - name: config
        configMap: {name: web-config}
`

const crashingPods = `apiVersion: v1
kind: Pod
metadata:
  name: crasher
  labels: {e2e: edged}
spec:
  nodeName: e2e-edge
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: crash
    image: localhost/busybox:local
    command: ["sh", "-c", "exit 3"]
---
apiVersion: v1
kind: Pod
metadata:
  name: unhealthy
  labels: {e2e: edged}
spec:
  nodeName: e2e-edge
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: sleeper
    image: localhost/busybox:local
    command: ["sleep", "3600"]
    livenessProbe:
      exec: {command: ["test", "-e", "/tmp/healthy"]}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: polite
  labels: {e2e: edged}
spec:
  nodeName: e2e-edge
  hostNetwork: true
  terminationGracePeriodSeconds: 30
  containers:
  - name: polite
    image: localhost/busybox:local
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
`

// The acceptance path of Edged with the real binaries, containerd and a control plane with
// kube-controller-manager: a Deployment pinned to the edge runs in containerd and is Running/Ready in
// kubectl; ConfigMap updates reach the mounted file; crashes back off with growing delays; a failing
// liveness probe restarts its container; a deleted pod stops within its grace period and leaves the
// API and the runtime; edgecore restarts (online, then twice offline) adopt running containers; on
// reconnect statuses converge.
func TestEdgedRunsDeploymentOnContainerdAdoptsAcrossRestartsAndConvergesAfterOffline(t *testing.T) {
	e := newEdgedCluster(t)
	ctx := context.Background()

	// 1. kubectl apply of a Deployment: the pod runs in containerd, kubectl shows it Running and Ready.
	e.apply(webDeployment)
	web := e.onlyPod("app=web")
	webIDs := e.running(string(web.UID), "web")
	e.waitKubectlRunning(web.Name, "0")
	if got, err := e.exec(webIDs["web"], "cat", "/etc/web/greeting"); err != nil || got != "hello-1" {
		t.Fatalf("mounted ConfigMap file: %q %v", got, err)
	}
	e.kubectl("patch", "configmap", "-n", e.ns, "web-config", "--type=merge", "-p", `{"data":{"greeting":"hello-2"}}`)
	waitFor(t, "the ConfigMap update in the mounted file", 60*time.Second, func() (bool, string) {
		got, err := e.exec(webIDs["web"], "cat", "/etc/web/greeting")
		return err == nil && got == "hello-2", fmt.Sprintf("%q %v", got, err)
	})

	// 2. A crashing container backs off with growing delays; a failing liveness probe restarts a
	// container whose process would otherwise run for an hour.
	e.apply(crashingPods)
	crasher, unhealthy, polite := e.podNamed("crasher"), e.podNamed("unhealthy"), e.podNamed("polite")
	var seen []time.Time // when each new restart count was first seen in the API
	last := int32(0)
	crashLoop := false
	waitFor(t, "crasher restarted 4 times", 120*time.Second, func() (bool, string) {
		p, err := e.pod("crasher")
		if err != nil {
			return false, err.Error()
		}
		if s := containerStatus(p, "crash"); s != nil {
			if s.State.Waiting != nil && s.State.Waiting.Reason == "CrashLoopBackOff" {
				crashLoop = true
			}
			if s.RestartCount > last {
				if s.RestartCount != last+1 && len(seen) > 0 {
					t.Logf("restart count jumped %d -> %d", last, s.RestartCount)
				}
				last = s.RestartCount
				seen = append(seen, time.Now())
			}
		}
		return last >= 4, fmt.Sprintf("restarts %d", last)
	})
	if !crashLoop {
		t.Fatalf("crasher never showed waiting: CrashLoopBackOff between restarts")
	}
	if len(seen) < 4 {
		t.Fatalf("restart counts seen at %v", seen)
	}
	first, later := seen[1].Sub(seen[0]), seen[len(seen)-1].Sub(seen[len(seen)-2])
	t.Logf("crasher: restart counts 1..%d first seen at intervals %s ... %s", len(seen), first, later)
	if ratio := float64(later) / float64(first); ratio < 1.5 {
		t.Fatalf("back-off does not grow: first interval %s, last %s (ratio %.2f)", first, later, ratio)
	}
	waitFor(t, "kubectl shows crasher in CrashLoopBackOff", 60*time.Second, func() (bool, string) {
		_, status, _, raw := e.kubectlRow("crasher")
		return status == "CrashLoopBackOff", raw
	})
	p, err := e.pod("crasher")
	if err != nil {
		t.Fatal(err)
	}
	if s := containerStatus(p, "crash"); s == nil || s.LastTerminationState.Terminated == nil || s.LastTerminationState.Terminated.ExitCode != 3 {
		t.Fatalf("crasher's last state: %+v", s)
	}
	waitFor(t, "the liveness probe restarts sleeper twice", 90*time.Second, func() (bool, string) {
		p, err := e.pod("unhealthy")
		if err != nil {
			return false, err.Error()
		}
		return restartCount(p, "sleeper") >= 2, fmt.Sprint(restartCount(p, "sleeper"))
	})

	// 3. kubectl delete: a pod that exits on SIGTERM is gone from the API well within its 30 s grace
	// period, and the runtime has no sandbox of it left; the other two go the same way.
	e.running(string(polite.UID), "polite")
	e.kubectl("delete", "pod", "-n", e.ns, "polite", "--wait=false")
	waitFor(t, "polite leaves the API within its grace period", 30*time.Second, func() (bool, string) {
		_, err := e.pod("polite")
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	for _, gone := range []*corev1.Pod{polite, crasher, unhealthy} {
		if gone != polite {
			e.kubectl("delete", "pod", "-n", e.ns, gone.Name, "--wait=false")
		}
		waitFor(t, "no sandbox of "+gone.Name+" in containerd", 60*time.Second, func() (bool, string) {
			sbs, err := e.sandboxes(string(gone.UID))
			return err == nil && len(sbs) == 0, fmt.Sprint(len(sbs), err)
		})
	}
	waitFor(t, "crasher and unhealthy leave the API", 60*time.Second, func() (bool, string) {
		l, err := e.k8s.Client.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{LabelSelector: "e2e=edged,!app"})
		return err == nil && len(l.Items) == 0, fmt.Sprint(err, l)
	})

	// 4. An edgecore restart adopts the running container: same ID, restart count still 0.
	e.restartEdge()
	e.syncedAfter(1, 4)
	if ids := e.running(string(web.UID), "web"); ids["web"] != webIDs["web"] {
		t.Fatalf("after an edgecore restart the container is %s, was %s", ids["web"], webIDs["web"])
	}
	e.waitKubectlRunning(web.Name, "0")

	// 5. Offline: cloudcore stops; edgecore restarts twice; the container keeps running, not recreated.
	if code, _ := e.cloud.stop(syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("cloudcore exit %d", code)
	}
	for i := range 2 {
		e.restartEdge()
		e.syncedAfter(1, 4)
		if ids := e.running(string(web.UID), "web"); ids["web"] != webIDs["web"] {
			t.Fatalf("offline restart %d: the container is %s, was %s", i, ids["web"], webIDs["web"])
		}
		if got, err := e.exec(webIDs["web"], "cat", "/etc/web/greeting"); err != nil || got != "hello-2" {
			t.Fatalf("offline restart %d: mounted file %q %v", i, got, err)
		}
	}
	// While the link is down the node goes Unknown in the API (edgecontroller's nodeGracePeriod).
	waitFor(t, "the node Unknown while offline", 60*time.Second, func() (bool, string) {
		ok, detail := e.nodeReady()
		return !ok && strings.HasPrefix(detail, "Unknown"), detail
	})
	// ...and kube-controller-manager's node lifecycle controller marks its pods not Ready, so the
	// API's status differs from the edge's until the edge reports again.
	waitFor(t, "the API marks the pod not Ready while its node is Unknown", 90*time.Second, func() (bool, string) {
		p, err := e.pod(web.Name)
		if err != nil {
			return false, err.Error()
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady {
				return c.Status == corev1.ConditionFalse, string(c.Status) + " " + c.Reason
			}
		}
		return false, "no Ready condition"
	})

	// Reconnect: the node is Ready again and kubectl shows the same pod Running, 1/1, no restarts.
	e.startCloud()
	waitFor(t, "node Ready again", 60*time.Second, e.nodeReady)
	e.waitKubectlRunning(web.Name, "0")
	if now := e.onlyPod("app=web"); now.UID != web.UID {
		t.Fatalf("the Deployment's pod was replaced: %s, was %s", now.UID, web.UID)
	}
	if ids := e.running(string(web.UID), "web"); ids["web"] != webIDs["web"] {
		t.Fatalf("after reconnecting the container is %s, was %s", ids["web"], webIDs["web"])
	}
}

func (e *edgedCluster) podNamed(name string) *corev1.Pod {
	e.t.Helper()
	var pod *corev1.Pod
	waitFor(e.t, "pod "+name+" in the API", 30*time.Second, func() (bool, string) {
		p, err := e.pod(name)
		if err != nil {
			return false, err.Error()
		}
		pod = p
		return true, ""
	})
	return pod
}

// restartEdge stops edgecore with SIGTERM and starts it again on the same store.
func (e *edgedCluster) restartEdge() {
	e.t.Helper()
	if code, _ := e.edge.stop(syscall.SIGTERM, 60*time.Second); code != 0 {
		e.t.Fatalf("edgecore exit %d\n%s", code, e.edge.stderr)
	}
	e.startEdge()
}

// Kubelet fidelity with the whole stack (issue 6 follow-ups): a pod that finished (restartPolicy
// Never) stays Succeeded in the API with its exit code, its sandbox is stopped but its container
// kept, and `kubectl logs` still shows its output; a pod deleted with a grace period shows its
// container terminated (exit code, reason) in the API before the pod object goes.
func TestEdgedFinishedPodKeepsStatusAndLogsAndADeletedPodEndsWithItsContainersTerminated(t *testing.T) {
	e := newEdgedCluster(t)
	e.withStreams()
	ctx := context.Background()
	e.apply(`apiVersion: v1
kind: Pod
metadata:
  name: oneshot
spec:
  nodeName: ` + e.node + `
  hostNetwork: true
  restartPolicy: Never
  containers:
  - name: job
    image: localhost/busybox:local
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo done-on-edge"]
---
apiVersion: v1
kind: Pod
metadata:
  name: stopper
spec:
  nodeName: ` + e.node + `
  hostNetwork: true
  terminationGracePeriodSeconds: 10
  containers:
  - name: s
    image: localhost/busybox:local
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 7' TERM; while true; do sleep 0.2; done"]
`)
	var oneshot *corev1.Pod
	waitFor(t, "oneshot Succeeded in the API", 90*time.Second, func() (bool, string) {
		p, err := e.pod("oneshot")
		if err != nil {
			return false, err.Error()
		}
		oneshot = p
		return p.Status.Phase == corev1.PodSucceeded, string(p.Status.Phase)
	})
	if cs := containerStatus(oneshot, "job"); cs == nil || cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 0 {
		t.Fatalf("oneshot container status %+v", cs)
	}
	waitFor(t, "oneshot's sandbox stopped, its container kept", 30*time.Second, func() (bool, string) {
		sbs, err := e.sandboxes(string(oneshot.UID))
		if err != nil {
			return false, err.Error()
		}
		cs, err := e.containers(string(oneshot.UID))
		if err != nil {
			return false, err.Error()
		}
		return len(sbs) == 1 && sbs[0].State == runtimeapi.PodSandboxState_SANDBOX_NOTREADY && cs["job"] != nil,
			fmt.Sprintf("sandboxes %v containers %v", sbs, cs)
	})
	waitFor(t, "kubectl logs of the finished container", 30*time.Second, func() (bool, string) {
		out, code := e.kubectlCode("logs", "-n", e.ns, "oneshot")
		return code == 0 && out == "done-on-edge\n", out
	})

	e.waitKubectlRunning("stopper", "0")
	stopper, err := e.pod("stopper")
	if err != nil {
		t.Fatal(err)
	}
	w, err := e.k8s.Client.CoreV1().Pods(e.ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=stopper", ResourceVersion: stopper.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if err := e.k8s.Client.CoreV1().Pods(e.ns).Delete(ctx, "stopper", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var final *corev1.ContainerStatus
	timeout := time.After(90 * time.Second)
	for deleted := false; !deleted; {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatal("watch closed before the pod was deleted")
			}
			p, _ := ev.Object.(*corev1.Pod)
			if p == nil {
				continue
			}
			if ev.Type == "DELETED" {
				deleted = true
				continue
			}
			if cs := containerStatus(p, "s"); cs != nil && cs.State.Terminated != nil {
				final = cs
			}
		case <-timeout:
			t.Fatal("stopper not deleted within 90s")
		}
	}
	if final == nil || final.State.Terminated.ExitCode != 7 || final.State.Terminated.Reason != "Error" {
		t.Fatalf("no terminated state with exit code 7 before the pod was removed: %+v", final)
	}
}
