package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kedge-io/kedge/test/crienv"
	"github.com/kedge-io/kedge/test/k8senv"
)

// metricSamples returns the samples of a metric as "labels value" lines (for a test's log).
func (d *daemon) metricSamples(name string) []string {
	d.t.Helper()
	resp, err := http.Get("http://" + d.admin + "/metrics")
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, name+"{") || strings.HasPrefix(l, name+" ") {
			out = append(out, strings.TrimPrefix(l, name))
		}
	}
	return out
}

// refusedOf sums kedge_edgecontroller_refused_total and the upstream messages cloudhub could not hand
// to any module, leaving out devicetwin's membership sync (get of membership/detail: devices, another
// part of issue 15), and lists them.
func refusedOf(cloud *daemon) (float64, []string) {
	var n float64
	var what []string
	for _, s := range cloud.metricSamples("kedge_edgecontroller_refused_total") {
		v, _ := strconv.ParseFloat(s[strings.LastIndexByte(s, ' ')+1:], 64)
		if v == 0 {
			continue
		}
		n += v
		what = append(what, "edgecontroller"+s)
	}
	for _, s := range cloud.metricSamples("kedge_cloudhub_upstream_total") {
		v, _ := strconv.ParseFloat(s[strings.LastIndexByte(s, ' ')+1:], 64)
		if v == 0 || !(strings.Contains(s, `"no_handler"`) || strings.Contains(s, `"invalid"`)) {
			continue
		}
		n += v
		what = append(what, "cloudhub"+s)
	}
	return n, what
}

// KubeEdge v1.23.1's edgecore under Kedge's cloudcore, with kube-controller-manager running: a pod
// with the default service-account token volume (kube-api-access-*, added by the API server) runs;
// the token upstream edged asked the cloud for is in the volume and the API server accepts it as the
// pod's ServiceAccount; the kubelet's Events about the pod reach the API server; the pod is deleted
// cleanly; and over all of it Kedge refused or left unhandled none of the edge's requests
// (kedge_edgecontroller_refused_total and cloudhub's no_handler/invalid stay zero).
func TestUpstreamEdgecoreGetsItsServiceAccountTokenAndEventsThroughKedgeWithNothingRefused(t *testing.T) {
	needBinaries(t)
	keDir := kubeedgeDir(t, "edgecore")
	// The ServiceAccount admission plugin on (envtest turns it off), so pods get the default token volume.
	env, err := k8senv.Start(k8senv.APIServerFlag("disable-admission-plugins", ""))
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
	runControllerManager(t, env)

	pkiDir := filepath.Join(t.TempDir(), "pki")
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
	code, token, stderr := run(t, "cloudcore", nil, "token", "create", "--pki-dir", pkiDir)
	if code != 0 {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	node := fmt.Sprintf("ke-sa-%d", os.Getpid()%100000)
	ns := "ke-sa"
	edge := newUpstreamEdge(t, keDir, node, strings.TrimSpace(token), hubPort, certPort, "kesa0", "10.95.0.0/16", ns, reportEvents)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cloudcore log (last 12 KiB):\n%s", tail(cloud.stderr.String(), 12<<10))
		}
	})
	ctx := context.Background()
	wait := func(what string, limit time.Duration, ok func() (bool, string)) {
		t.Helper()
		waitFor(t, what, limit, func() (bool, string) {
			if edge.exited() {
				t.Fatalf("upstream edgecore exited while waiting for %s", what)
			}
			return ok()
		})
	}

	wait("Node Ready", 3*time.Minute, func() (bool, string) {
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
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("kube-controller-manager to make ServiceAccount default and ConfigMap kube-root-ca.crt", time.Minute, func() (bool, string) {
		if _, err := kc.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return false, err.Error()
		}
		_, err := kc.CoreV1().ConfigMaps(ns).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
	grace := int64(1)
	pod, err := kc.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.PodSpec{
			NodeName: node, TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "c", Image: crienv.Busybox, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sh", "-c", "test -s /var/run/secrets/kubernetes.io/serviceaccount/token && exec sleep 3600"}}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var tokenVolume string
	for _, v := range pod.Spec.Volumes {
		if v.Projected != nil && strings.HasPrefix(v.Name, "kube-api-access-") {
			tokenVolume = v.Name
		}
	}
	if tokenVolume == "" {
		t.Fatalf("the API server gave the pod no kube-api-access-* volume: %+v", pod.Spec.Volumes)
	}
	wait("pod Running (its token volume mounted)", 3*time.Minute, func() (bool, string) {
		p, err := kc.CoreV1().Pods(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodRunning, fmt.Sprintf("phase %s %+v", p.Status.Phase, p.Status.ContainerStatuses)
	})

	// The token edged wrote into the volume is one the API server accepts, as the pod's ServiceAccount.
	volDir := filepath.Join(edge.dir, "kubelet", "pods", string(pod.UID), "volumes", "kubernetes.io~projected", tokenVolume)
	tok, err := os.ReadFile(filepath.Join(volDir, "token"))
	if err != nil || len(tok) == 0 {
		t.Fatalf("token in the pod's volume %s: %q %v", volDir, tok, err)
	}
	review, err := kc.AuthenticationV1().TokenReviews().Create(ctx, &authv1.TokenReview{Spec: authv1.TokenReviewSpec{Token: string(tok)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "system:serviceaccount:" + ns + ":default"; !review.Status.Authenticated || review.Status.User.Username != want {
		t.Fatalf("the API server's review of the pod's token: authenticated=%v user %q (%s), want %s", review.Status.Authenticated, review.Status.User.Username, review.Status.Error, want)
	}
	if got := review.Status.User.Extra["authentication.kubernetes.io/pod-uid"]; len(got) != 1 || got[0] != string(pod.UID) {
		t.Errorf("the token is bound to pod uid %v, want %s", got, pod.UID)
	}
	if b, err := os.ReadFile(filepath.Join(volDir, "namespace")); err != nil || string(b) != ns {
		t.Errorf("namespace file of the token volume: %q %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(volDir, "ca.crt")); err != nil || !strings.Contains(string(b), "BEGIN CERTIFICATE") {
		t.Errorf("ca.crt of the token volume (ConfigMap kube-root-ca.crt through Kedge): %q %v", b, err)
	}

	// The kubelet's Events about the pod (edged sends them to the cloud, which must write them).
	wait("an Event of the upstream edge's kubelet about the pod in the API server", 2*time.Minute, func() (bool, string) {
		evs, err := kc.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range evs.Items {
			seen = append(seen, e.Source.Component+"/"+e.Source.Host+":"+e.Reason)
			if e.InvolvedObject.UID == pod.UID && e.Source.Host == node && e.Reason == "Started" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("events in %s: %v", ns, seen)
	})

	if err := kc.CoreV1().Pods(ns).Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("pod deleted from the API by its edge", 2*time.Minute, func() (bool, string) {
		_, err := kc.CoreV1().Pods(ns).Get(ctx, "web", metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	// Delivery: what Kedge sent the edge in KubeEdge's ACK mode (objects with a resourceVersion) the
	// edge answered, so nothing stays queued for it.
	wait("the upstream edge to answer everything cloudhub sent it", time.Minute, func() (bool, string) {
		pending := cloud.metric("kedge_cloudhub_downstream_pending")
		return pending == 0, fmt.Sprintf("%v entries still queued", pending)
	})
	if acked := cloud.metric("kedge_cloudhub_downstream_acked_total"); acked == 0 {
		t.Errorf("no acknowledgement counted from the upstream edge")
	}
	n, what := refusedOf(cloud)
	t.Logf("refused or unhandled requests of the upstream edge: %v", what)
	if n != 0 {
		t.Errorf("Kedge refused or did not handle %v requests of the upstream edgecore: %v\n%s", n, what,
			grepLines(cloud.stderr.String(), "edge node request", 40))
	}
}
