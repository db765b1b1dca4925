package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
	"github.com/kedge-io/kedge/sdk/apis/kedge/v1alpha1"
	"github.com/kedge-io/kedge/test/crienv"
	"github.com/kedge-io/kedge/test/helmbin"
	"github.com/kedge-io/kedge/test/k8senv"
)

// chartNS is the release namespace of the chart in these tests.
const chartNS = "kedge-system"

// chartRig is a real kube-apiserver with the chart's ServiceAccount and (Cluster)Roles applied from
// `helm template`, and cloudcore running on the chart's own cloudcore.yaml with only that identity (a
// TokenRequest token): only listen addresses and local paths are changed, by environment.
type chartRig struct {
	*cluster
	values       string // the values file
	sa           kubernetes.Interface
	saKubeconfig string
	objects      map[string]string // rendered objects by Kind/name
}

// newChartRig renders the chart with values, applies its RBAC and writes the ServiceAccount's
// kubeconfig; startCloud then runs cloudcore as that identity.
func newChartRig(t *testing.T, values func(*k8senv.KubeletClient) map[string]any, opts ...k8senv.Option) *chartRig {
	t.Helper()
	needBinaries(t)
	kc, err := k8senv.NewKubeletClient(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	k8s, err := k8senv.Start(append([]k8senv.Option{k8senv.WithKubeletClient(kc)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Stop() })
	if err := k8s.InstallCRDs(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if out, err := k8s.Kubectl("create", "namespace", chartNS); err != nil {
		t.Fatal(out)
	}
	r := &chartRig{cluster: &cluster{t: t, k8s: k8s, dir: dir, pkiDir: filepath.Join(dir, "pki"), hubPort: freePort(t), certPort: freePort(t),
		node: "rbac-edge", edgeConfig: filepath.Join(dir, "edgecore.yaml"), edgeDB: filepath.Join(dir, "edge.db"), kubeletClient: kc},
		values: filepath.Join(dir, "values.yaml")}
	vb, err := yaml.Marshal(values(kc))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.values, vb, 0o644); err != nil {
		t.Fatal(err)
	}
	r.objects = r.render()
	var rbac []string
	for key, doc := range r.objects {
		switch kind, _, _ := strings.Cut(key, "/"); kind {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			rbac = append(rbac, doc)
		}
	}
	if len(rbac) < 6 || r.config() == "" {
		t.Fatalf("chart rendered %d RBAC objects and config %q", len(rbac), r.config())
	}
	r.applyDocs(rbac...)

	// Only the ServiceAccount's identity: a bound token from the TokenRequest API.
	token := saToken(t, k8s.Client, chartNS, "kedge")
	r.saKubeconfig = r.tokenKubeconfig("cloudcore", token)
	if r.sa, err = kubernetes.NewForConfig(&rest.Config{Host: k8s.Config.Host, BearerToken: token,
		TLSClientConfig: rest.TLSClientConfig{CAData: k8s.Config.CAData}}); err != nil {
		t.Fatal(err)
	}
	return r
}

// render runs helm template on the rig's values (and sets) and returns the objects by Kind/name.
func (r *chartRig) render(sets ...string) map[string]string {
	r.t.Helper()
	rendered, err := helmbin.Template(chartNS, false, []string{r.values}, sets...)
	if err != nil {
		r.t.Fatal(err)
	}
	objs := map[string]string{}
	for _, doc := range strings.Split(rendered, "\n---") {
		var o struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			r.t.Fatal(err)
		}
		if o.Kind != "" {
			objs[o.Kind+"/"+o.Metadata.Name] = doc
		}
	}
	return objs
}

// config is the chart's cloudcore.yaml.
func (r *chartRig) config() string {
	var cm struct {
		Data map[string]string `json:"data"`
	}
	_ = yaml.Unmarshal([]byte(r.objects["ConfigMap/kedge"]), &cm)
	return cm.Data["cloudcore.yaml"]
}

func (r *chartRig) applyDocs(docs ...string) {
	r.t.Helper()
	f := filepath.Join(r.t.TempDir(), "objects.yaml")
	if err := os.WriteFile(f, []byte(strings.Join(docs, "\n---\n")), 0o644); err != nil {
		r.t.Fatal(err)
	}
	if out, err := r.k8s.Kubectl("apply", "-f", f); err != nil {
		r.t.Fatalf("kubectl apply the chart's objects: %v\n%s", err, out)
	}
}

// tokenKubeconfig writes a kubeconfig for the API server with a bearer token.
func (r *chartRig) tokenKubeconfig(name, token string) string {
	r.t.Helper()
	kcfg := clientcmdapi.NewConfig()
	kcfg.Clusters["k"] = &clientcmdapi.Cluster{Server: r.k8s.Config.Host, CertificateAuthorityData: r.k8s.Config.CAData}
	kcfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: token}
	kcfg.Contexts["k"] = &clientcmdapi.Context{Cluster: "k", AuthInfo: name}
	kcfg.CurrentContext = "k"
	p := filepath.Join(r.dir, name+".kubeconfig")
	if err := clientcmd.WriteToFile(*kcfg, p); err != nil {
		r.t.Fatal(err)
	}
	return p
}

// kubectlAs runs kubectl with the kubeconfig at kcfg (a restricted user).
func (r *chartRig) kubectlAs(kcfg string, args ...string) (string, int) {
	out, err := exec.Command(filepath.Join(r.k8s.BinDir, "kubectl"), append([]string{"--kubeconfig", kcfg}, args...)...).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		r.t.Fatalf("kubectl %v: %v", args, err)
	}
	return string(out), 0
}

// startChartCloud runs cloudcore on the chart's cloudcore.yaml as the ServiceAccount, with env.
func (r *chartRig) startChartCloud(env ...string) {
	r.t.Helper()
	cfgFile := filepath.Join(r.dir, "cloudcore.yaml")
	if err := os.WriteFile(cfgFile, []byte(r.config()), 0o644); err != nil {
		r.t.Fatal(err)
	}
	loop := func(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }
	r.cloud = start(r.t, "cloudcore", append([]string{
		"KUBECONFIG=" + r.saKubeconfig,
		"POD_NAMESPACE=" + chartNS, // as the chart's Deployment sets it: the leader-election Leases live there
		"KEDGE_MODULES__CLOUDHUB__ADDRESS=" + loop(r.hubPort), "KEDGE_MODULES__CLOUDHUB__CERTSERVERADDRESS=" + loop(r.certPort),
		"KEDGE_MODULES__CLOUDHUB__PKIDIR=" + r.pkiDir, "KEDGE_MODULES__CLOUDHUB__HEARTBEAT=1s",
		"KEDGE_MODULES__EDGECONTROLLER__INVENTORYWAIT=2s", "KEDGE_MODULES__DEVICECONTROLLER__INVENTORYWAIT=2s",
		"KEDGE_LOG__FORMAT=text",
	}, env...), "--config", cfgFile)
	r.cloud.waitReady()
}

// join joins the edge node with a token made by tokenArgs (`cloudcore token create ...`, run as the
// ServiceAccount) and starts edgecore with the rig's edgeEnv.
func (r *chartRig) join(tokenArgs ...string) {
	t := r.t
	t.Helper()
	code, token, stderr := run(t, "cloudcore", []string{"KUBECONFIG=" + r.saKubeconfig}, append([]string{"token", "create"}, tokenArgs...)...)
	if code != 0 {
		t.Fatalf("token create %v as the ServiceAccount: %d %s", tokenArgs, code, stderr)
	}
	code, out, stderr := run(t, "edgecore", nil, "join", "--cloudcore-address", "127.0.0.1", "--token", strings.TrimSpace(token),
		"--node-name", r.node, "--data-dir", filepath.Join(r.dir, "edge"), "--config-out", r.edgeConfig,
		"--cert-port", strconv.Itoa(r.certPort), "--hub-port", strconv.Itoa(r.hubPort))
	if code != 0 {
		t.Fatalf("join: %d %s %s", code, out, stderr)
	}
	r.metaServer = "127.0.0.1:" + strconv.Itoa(freePort(t))
	r.startEdge()
	var err error
	if r.edgeClient, err = kubernetes.NewForConfig(&rest.Config{Host: "https://" + r.metaServer, BearerTokenFile: filepath.Join(r.dir, "edge", "metaserver-admin.token"),
		TLSClientConfig: rest.TLSClientConfig{CAFile: filepath.Join(r.dir, "edge", "metaserver.crt")}}); err != nil {
		t.Fatal(err)
	}
}

// noRefusals fails the test when the API server refused cloudcore anything: its log has no forbidden
// answer (whose message names the user: `... is forbidden: User "system:serviceaccount:kedge-system:kedge" cannot ...`).
func (r *chartRig) noRefusals() {
	r.t.Helper()
	if log := r.cloud.stderr.String(); strings.Contains(log, `serviceaccount:kedge-system:kedge\" cannot`) || strings.Contains(log, `serviceaccount:kedge-system:kedge" cannot`) {
		r.t.Fatalf("cloudcore was refused with the chart's RBAC:\n%s", grepLines(log, "cannot", 20))
	}
}

// saToken creates ServiceAccount name in ns (unless it exists) and returns a token for it.
func saToken(t *testing.T, k kubernetes.Interface, ns, name string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := k.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	tr, err := k.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// RBAC proven, not assumed: the chart's ServiceAccount and (Cluster)Roles with every module on (and
// the metrics API, node ownership and leader election) are created in a real API server with API
// aggregation; cloudcore runs on the chart's cloudcore.yaml with only that identity; an edgecore with
// edged on containerd and the stream tunnel joins with a token cloudcore made in the chart's CA
// Secret. Every path that needs the API works with no request refused: the node and its Lease, the
// leader and ownership Leases, a pod with a ConfigMap and a Secret, kubectl logs/exec through the
// tunnel, kubectl top through the chart's own APIService (as a restricted user bound to the chart's
// metrics reader role), a PluginRollout's status, a Device's reported twin; and the identity is
// refused what no module needs. Remove any rule the modules use from templates/rbac.yaml and a step
// here fails (cloudcore logs the refusal; the path does not complete).
func TestChartRBACIsEnoughForEveryModuleAndNoMore(t *testing.T) {
	needBinaries(t)
	ensureMosquittoClients(t)
	ep, cri := crienv.Start(t)
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	podNS := "rbac-pods-" + hex.EncodeToString(suffix)
	// Registered first, so it runs last: after edgecore is gone, nothing of this test stays in containerd.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := cri.RemoveSandboxes(ctx, map[string]string{edgedManaged: "edged", edgedPodNamespace: podNS}); err != nil {
			t.Errorf("removing the test's sandboxes: %v", err)
		}
	})
	fp, err := k8senv.NewFrontProxy(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// The chart with every module on except the console (it needs caSecret off: its own test below).
	values := func(kc *k8senv.KubeletClient) map[string]any {
		clientCA, err := os.ReadFile(kc.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		return map[string]any{"modules": map[string]any{
			"cloudhub":       map[string]any{"enable": true, "ownership": map[string]any{"enable": true}},
			"edgecontroller": map[string]any{"enable": true}, "devicecontroller": map[string]any{"enable": true},
			"rolloutcontroller": map[string]any{"enable": true},
			"cloudstream":       map[string]any{"enable": true, "metricsAPI": map[string]any{"enable": true}},
			"cloudbus":          map[string]any{"enable": true, "token": "cloudbus-test-token"}},
			// cloudstream trusts the API server's kubelet client CA (mounted in a pod; its local path below).
			"cloudstream":       map[string]any{"clientCA": string(clientCA)},
			"metricsAPIService": map[string]any{"enable": true},
		}
	}
	r := newChartRig(t, values, k8senv.WithAggregation(fp))
	k8s, ctx := r.k8s, context.Background()
	if out, err := k8s.Kubectl("create", "namespace", podNS); err != nil {
		t.Fatal(out)
	}

	loop := func(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }
	streamAddr, tunnelAddr, metricsPort := loop(freePort(t)), loop(freePort(t)), freePort(t)
	r.startChartCloud(
		"KEDGE_INSTANCE__NAME=replica-a", // as the Deployment sets it (the pod name): the Leases' holder
		"KEDGE_MODULES__CLOUDHUB__OWNERSHIP__FORWARDADDRESS="+loop(freePort(t)),
		"KEDGE_MODULES__CLOUDSTREAM__PKIDIR="+r.pkiDir, "KEDGE_MODULES__CLOUDSTREAM__CLIENTCAFILE="+r.kubeletClient.CAFile,
		"KEDGE_MODULES__CLOUDSTREAM__STREAMADDRESS="+streamAddr, "KEDGE_MODULES__CLOUDSTREAM__TUNNELADDRESS="+tunnelAddr,
		"KEDGE_MODULES__CLOUDSTREAM__ADVERTISEADDRESS=127.0.0.1", "KEDGE_MODULES__CLOUDSTREAM__HEARTBEAT=1s",
		"KEDGE_MODULES__CLOUDSTREAM__METRICSAPI__ADDRESS="+loop(metricsPort),
		"KEDGE_MODULES__CLOUDSTREAM__METRICSAPI__SCRAPEINTERVAL=1s", "KEDGE_MODULES__CLOUDSTREAM__METRICSAPI__SCRAPETIMEOUT=5s",
		"KEDGE_MODULES__CLOUDBUS__ADDRESS="+loop(freePort(t)),
	)

	// The edge: edged on the shared containerd, the stream tunnel, the internal MQTT broker for devices.
	mqPort := freePort(t)
	certs := filepath.Join(r.dir, "edge", "certs")
	r.edgeEnv = []string{
		"KEDGE_MODULES__EVENTBUS__MQTTMODE=internal", "KEDGE_MODULES__EVENTBUS__INTERNALADDRESS=" + loop(mqPort),
		"KEDGE_MODULES__NORUNTIME__ENABLE=false", "KEDGE_MODULES__METAMANAGER__CONSUMERS__POD=edged",
		"KEDGE_MODULES__EDGED__ENABLE=true", "KEDGE_MODULES__EDGED__CRIENDPOINT=" + ep,
		"KEDGE_MODULES__EDGED__ROOTDIR=" + t.TempDir(), "KEDGE_MODULES__EDGED__PODSANDBOXIMAGE=" + crienv.Pause,
		"KEDGE_MODULES__EDGED__STATUSPERIOD=500ms", "KEDGE_MODULES__EDGED__BACKOFF__BASE=500ms", "KEDGE_MODULES__EDGED__BACKOFF__MAX=30s",
		"KEDGE_MODULES__EDGESTREAM__ENABLE=true", "KEDGE_MODULES__EDGESTREAM__SERVER=" + tunnelAddr,
		"KEDGE_MODULES__EDGESTREAM__CAFILE=" + filepath.Join(certs, "ca.crt"),
		"KEDGE_MODULES__EDGESTREAM__CERTFILE=" + filepath.Join(certs, "node.crt"),
		"KEDGE_MODULES__EDGESTREAM__KEYFILE=" + filepath.Join(certs, "node.key"),
		"KEDGE_MODULES__EDGESTREAM__CRIENDPOINT=" + ep,
		"KEDGE_MODULES__EDGESTREAM__HEARTBEAT=1s", "KEDGE_MODULES__EDGESTREAM__BACKOFFMAX=1s",
	}
	r.join("--ca-secret", chartNS+"/kedge-ca")
	e := &edgedCluster{cluster: r.cluster, cri: cri, ns: podNS}

	t.Run("node registers, reports Ready and renews its Lease", func(t *testing.T) {
		waitFor(t, "edge node Ready", 60*time.Second, r.nodeReady)
		waitFor(t, "node Lease in kube-node-lease", 60*time.Second, func() (bool, string) {
			_, err := k8s.Client.CoordinationV1().Leases("kube-node-lease").Get(ctx, r.node, metav1.GetOptions{})
			return err == nil, fmt.Sprint(err)
		})
	})
	t.Run("leader election and node ownership Leases in the release namespace", func(t *testing.T) {
		for _, lease := range []string{"kedge-edgecontroller", "kedge-rolloutcontroller", "kedge-replica-replica-a", "kedge-node-" + r.node} {
			waitFor(t, "Lease "+chartNS+"/"+lease+" held by replica-a", 60*time.Second, func() (bool, string) {
				l, err := k8s.Client.CoordinationV1().Leases(chartNS).Get(ctx, lease, metav1.GetOptions{})
				if err != nil {
					return false, err.Error()
				}
				holder := ""
				if l.Spec.HolderIdentity != nil {
					holder = *l.Spec.HolderIdentity
				}
				return holder == "replica-a", "holder " + holder
			})
		}
	})
	t.Run("pod with a ConfigMap and a Secret runs on the edge; logs and exec through the stream tunnel", func(t *testing.T) {
		e.t = t
		waitFor(t, "edge stream tunnel up", 60*time.Second, func() (bool, string) {
			v := r.cloud.metric("kedge_cloudstream_tunnels")
			return v == 1, fmt.Sprint(v)
		})
		if _, err := k8s.Client.CoreV1().ConfigMaps(podNS).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "app"}, Data: map[string]string{"v": "from-configmap"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := k8s.Client.CoreV1().Secrets(podNS).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "app-secret"}, StringData: map[string]string{"pw": "s3cret"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.apply(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: talker
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: localhost/busybox:local
    command: ["sh", "-c", "echo v=$V pw=$PW; while true; do sleep 1; done"]
    env:
    - name: V
      valueFrom: {configMapKeyRef: {name: app, key: v}}
    - name: PW
      valueFrom: {secretKeyRef: {name: app-secret, key: pw}}
`, r.node))
		waitFor(t, "talker Running (status written by the edge)", 120*time.Second, func() (bool, string) {
			_, status, _, raw := e.kubectlRow("talker")
			return status == "Running", raw
		})
		waitFor(t, "kubectl logs talker through the tunnel", 60*time.Second, func() (bool, string) {
			out, code := e.kubectlCode("logs", "-n", podNS, "talker")
			return code == 0 && strings.Contains(out, "v=from-configmap pw=s3cret"), out
		})
		if out, code := e.kubectlCode("exec", "-n", podNS, "talker", "--", "sh", "-c", "echo exec-$((6*7))"); code != 0 || !strings.Contains(out, "exec-42") {
			t.Fatalf("kubectl exec through the tunnel: exit %d: %s", code, out)
		}
	})
	t.Run("kubectl top through the chart's APIService as a user bound to the chart's metrics reader", func(t *testing.T) {
		e.t = t
		// The chart's APIService and metrics reader role, rendered again with the CA cloudcore created
		// in the CA Secret (as a user would: helm upgrade --set metricsAPIService.caBundle=...). Its
		// Service is the chart's name pointed at this loopback listener (no pods or kube-proxy here).
		caSecret, err := k8s.Client.CoreV1().Secrets(chartNS).Get(ctx, "kedge-ca", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		objs := r.render("metricsAPIService.caBundle=" + base64.StdEncoding.EncodeToString(caSecret.Data["ca.crt"]))
		var apiSvc map[string]any
		if err := yaml.Unmarshal([]byte(objs["APIService/v1beta1.metrics.k8s.io"]), &apiSvc); err != nil || apiSvc == nil {
			t.Fatalf("the chart rendered no APIService: %v", err)
		}
		svcRef := apiSvc["spec"].(map[string]any)["service"].(map[string]any)
		if svcRef["name"] != "kedge-metrics" || svcRef["namespace"] != chartNS {
			t.Fatalf("APIService names Service %v/%v, the chart renders kedge-metrics", svcRef["namespace"], svcRef["name"])
		}
		svcRef["port"] = metricsPort
		apiSvcDoc, _ := yaml.Marshal(apiSvc)
		r.applyDocs(string(apiSvcDoc), objs["ClusterRole/kedge:aggregated-metrics-reader"], fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: kedge-metrics, namespace: %s}
spec: {type: ExternalName, externalName: 127.0.0.1}
`, chartNS))
		waitFor(t, "APIService v1beta1.metrics.k8s.io Available", 90*time.Second, func() (bool, string) {
			out, _ := e.kubectlCode("get", "apiservice", "v1beta1.metrics.k8s.io", "-o",
				`jsonpath={.status.conditions[?(@.type=="Available")].status} {.status.conditions[?(@.type=="Available")].message}`)
			return strings.HasPrefix(out, "True"), out
		})
		e.runShell("burner", "while true; do i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; sleep 0.1; done")

		// A restricted user: may read metrics in podNS through the chart's reader role, nothing else.
		if _, err := k8s.Client.RbacV1().RoleBindings(podNS).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "viewer-metrics"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "kedge:aggregated-metrics-reader"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "viewer", Namespace: podNS}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		viewer := r.tokenKubeconfig("viewer", saToken(t, k8s.Client, podNS, "viewer"))
		nobody := r.tokenKubeconfig("nobody", saToken(t, k8s.Client, podNS, "nobody"))
		waitFor(t, "kubectl top pod burner as the restricted user", 120*time.Second, func() (bool, string) {
			out, code := r.kubectlAs(viewer, "top", "pod", "-n", podNS)
			row := topRow(out, "burner")
			return code == 0 && row != nil && row[1] != "0m" && strings.HasSuffix(row[1], "m") && strings.HasSuffix(row[2], "Mi"), out
		})
		waitFor(t, "kubectl top node (cluster admin)", 60*time.Second, func() (bool, string) {
			out, code := e.kubectlCode("top", "node")
			row := topRow(out, r.node)
			return code == 0 && row != nil && strings.HasSuffix(row[1], "m"), out
		})
		for _, tc := range []struct {
			who, kcfg string
			args      []string
		}{
			{"the restricted user, nodes", viewer, []string{"top", "node"}},
			{"the restricted user, another namespace", viewer, []string{"top", "pod", "-n", chartNS}},
			{"a user without the reader role", nobody, []string{"top", "pod", "-n", podNS}},
		} {
			if out, code := r.kubectlAs(tc.kcfg, tc.args...); code == 0 || !strings.Contains(out, "forbidden") {
				t.Errorf("%s: kubectl %v: exit %d, want forbidden: %s", tc.who, tc.args, code, out)
			}
		}
	})
	t.Run("a pod deleted in the API is removed on the edge and its deletion completed", func(t *testing.T) {
		grace := int64(1)
		if err := k8s.Client.CoreV1().Pods(podNS).Delete(ctx, "talker", metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "talker's deletion completed by cloudcore", 90*time.Second, func() (bool, string) {
			_, err := k8s.Client.CoreV1().Pods(podNS).Get(ctx, "talker", metav1.GetOptions{})
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
	})
	t.Run("a PluginRollout reaches the node and its status is written", func(t *testing.T) {
		const rns = "rbac-rollouts"
		if out, err := k8s.Kubectl("create", "namespace", rns); err != nil {
			t.Fatal(out)
		}
		obj, _ := json.Marshal(map[string]any{
			"apiVersion": "kedge.io/v1alpha1", "kind": "PluginRollout",
			"metadata": map[string]any{"name": "probe", "namespace": rns},
			"spec": map[string]any{"plugin": "probe", "version": "1.0.0", "runtime": "wasm", "module": "probe",
				"nodeSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/hostname": r.node}}, "maxParallel": 1},
		})
		p := filepath.Join(t.TempDir(), "rollout.json")
		if err := os.WriteFile(p, obj, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := k8s.Kubectl("apply", "-f", p); err != nil {
			t.Fatalf("kubectl apply pluginrollout: %v\n%s", err, out)
		}
		waitRollout(t, r.cluster, rns, "probe", "the node's turn in the status", func(pr *v1alpha1.PluginRollout) bool {
			return nodeStatus(pr, r.node).State != ""
		})
	})
	t.Run("device membership reaches the edge and a reported twin the Device status", func(t *testing.T) {
		r.t = t
		api, err := devicecontroller.NewRESTClient(k8s.Config)
		if err != nil {
			t.Fatal(err)
		}
		d := &deviceRig{t: t, c: r.cluster, api: api, ns: "rbac-devices", device: "thermometer-1"}
		d.mq = startMQTTSub(t, mqPort)
		d.applyExamples()
		d.mq.await(t, 0, "$hw/events/node/"+r.node+"/membership/updated", func(p map[string]any) bool {
			added, _ := p["added_devices"].([]any)
			for _, x := range added {
				if m, _ := x.(map[string]any); m["name"] == d.device {
					return true
				}
			}
			return false
		})
		d.report(t, "rbac-1", "temperature", "22.5", time.Now().UnixMilli())
		waitFor(t, "reported temperature in the Device status", 60*time.Second, func() (bool, string) {
			tw := d.twin("temperature")
			return tw.Reported.Value == "22.5", fmt.Sprintf("%+v", tw)
		})
	})
	r.t = t

	t.Run("identity refused what no module needs", func(t *testing.T) {
		sa := r.sa
		for _, tc := range []struct {
			what string
			do   func() error
		}{
			{"delete a Node", func() error { return sa.CoreV1().Nodes().Delete(ctx, r.node, metav1.DeleteOptions{}) }},
			{"create a Secret outside its namespace", func() error {
				_, err := sa.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
				return err
			}},
			{"delete a Secret outside its namespace", func() error {
				return sa.CoreV1().Secrets(podNS).Delete(ctx, "app-secret", metav1.DeleteOptions{})
			}},
			{"create a Pod", func() error {
				_, err := sa.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x"},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}}, metav1.CreateOptions{})
				return err
			}},
			{"exec into a pod itself", func() error {
				return sa.CoreV1().RESTClient().Post().AbsPath("/api/v1/namespaces/"+podNS+"/pods/burner/exec").Param("command", "true").Do(ctx).Error()
			}},
			{"write a ConfigMap", func() error {
				_, err := sa.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
				return err
			}},
			{"list Deployments", func() error { _, err := sa.AppsV1().Deployments("").List(ctx, metav1.ListOptions{}); return err }},
			{"list ClusterRoles", func() error { _, err := sa.RbacV1().ClusterRoles().List(ctx, metav1.ListOptions{}); return err }},
			{"bind a ClusterRole", func() error {
				_, err := sa.RbacV1().RoleBindings(chartNS).Create(ctx, rbacBinding(), metav1.CreateOptions{})
				return err
			}},
			{"read Leases outside kube-node-lease and its namespace", func() error {
				_, err := sa.CoordinationV1().Leases("kube-system").List(ctx, metav1.ListOptions{})
				return err
			}},
			{"proxy to a node (cloudNodes off)", func() error {
				return sa.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes/" + r.node + "/proxy/metrics").Do(ctx).Error()
			}},
			{"list ServiceAccounts", func() error {
				_, err := sa.CoreV1().ServiceAccounts("kube-system").List(ctx, metav1.ListOptions{})
				return err
			}},
			{"review tokens (console off)", func() error {
				_, err := sa.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: "x"}}, metav1.CreateOptions{})
				return err
			}},
		} {
			if err := tc.do(); !apierrors.IsForbidden(err) {
				t.Errorf("%s: want Forbidden, got %v", tc.what, err)
			}
		}
	})
	r.noRefusals()
}

// The console in the chart, with the CA in the chart's caSecret: cloudcore, as the chart's
// ServiceAccount only, checks a user's token with a TokenReview and each view with a
// SubjectAccessReview, lists the joined node, shows its page (its Events) and the rollouts view;
// without the chart's console rules a review or a list is refused and the test fails.
func TestChartRBACIsEnoughForTheConsole(t *testing.T) {
	r := newChartRig(t, func(*k8senv.KubeletClient) map[string]any {
		return map[string]any{"modules": map[string]any{"console": map[string]any{"enable": true}}}
	})
	port := freePort(t)
	r.startChartCloud("KEDGE_MODULES__CONSOLE__ADDRESS=127.0.0.1:"+strconv.Itoa(port), "KEDGE_MODULES__CONSOLE__PKIDIR="+r.pkiDir)
	r.join("--ca-secret", chartNS+"/kedge-ca")
	waitFor(t, "edge node Ready", 60*time.Second, r.nodeReady)

	user := consoleToken(t, r.k8s.Client, "fleet-viewer", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes", "pods", "events"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"kedge.io"}, Resources: []string{"pluginrollouts"}, Verbs: []string{"get", "list", "watch"}}})
	caSecret, err := r.k8s.Client.CoreV1().Secrets(chartNS).Get(context.Background(), "kedge-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, caSecret.Data["ca.crt"], 0o600); err != nil {
		t.Fatal(err)
	}
	hc := consoleClient(t, filepath.Dir(caFile)) // the console's certificate is signed by the CA in the Secret
	get := func(path string) (int, string, error) {
		req, _ := http.NewRequest(http.MethodGet, "https://127.0.0.1:"+strconv.Itoa(port)+path, nil)
		req.AddCookie(&http.Cookie{Name: "__Host-kedge-console", Value: user})
		res, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return res.StatusCode, string(b), err
	}
	for _, tc := range []struct{ what, path, want string }{
		{"the fleet view lists the joined node", "/", `data-node="` + r.node + `"`},
		{"the node's page", "/node?name=" + r.node, r.node},
		{"the rollouts view", "/rollouts", "ollout"},
	} {
		waitFor(t, tc.what, 60*time.Second, func() (bool, string) {
			code, body, err := get(tc.path)
			if err != nil {
				return false, err.Error()
			}
			return code == http.StatusOK && strings.Contains(body, tc.want), fmt.Sprintf("%d %.300s", code, body)
		})
	}
	r.noRefusals()
}

func ptr[T any](v T) *T { return &v }

// rbacBinding binds cluster-admin to the ServiceAccount: what an escalation would try.
func rbacBinding() *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "escalate"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "kedge", Namespace: chartNS}}}
}
