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
	"github.com/kedge-io/kedge/test/helmbin"
	"github.com/kedge-io/kedge/test/k8senv"
)

// RBAC proven, not assumed: the chart's ServiceAccount and (Cluster)Roles for every module are created
// in a real API server, cloudcore runs with the chart's own cloudcore.yaml and only that identity (a
// TokenRequest token), an edgecore joins with a token cloudcore made in the chart's CA Secret, and the
// node, pod, ConfigMap/Secret, pod status and device twin paths work with no request refused; the
// identity is refused what no module needs.
func TestChartRBACIsEnoughForEveryModuleAndNoMore(t *testing.T) {
	needBinaries(t)
	ensureMosquittoClients(t)
	kc, err := k8senv.NewKubeletClient(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	k8s, err := k8senv.Start(k8senv.WithKubeletClient(kc))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Stop() })
	if err := k8s.InstallCRDs(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	const ns = "kedge-system"
	if out, err := k8s.Kubectl("create", "namespace", ns); err != nil {
		t.Fatal(out)
	}

	// The chart with every module on (cloudstream trusts the API server's kubelet client CA).
	clientCA, err := os.ReadFile(kc.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	values := filepath.Join(dir, "values.yaml")
	vb, _ := yaml.Marshal(map[string]any{
		"modules": map[string]any{"edgecontroller": map[string]any{"enable": true}, "devicecontroller": map[string]any{"enable": true},
			"rolloutcontroller": map[string]any{"enable": true}, "cloudstream": map[string]any{"enable": true},
			"cloudbus": map[string]any{"enable": true, "token": "cloudbus-test-token"}},
		"cloudstream": map[string]any{"clientCA": string(clientCA)},
	})
	if err := os.WriteFile(values, vb, 0o644); err != nil {
		t.Fatal(err)
	}
	rendered, err := helmbin.Template(ns, false, []string{values})
	if err != nil {
		t.Fatal(err)
	}
	var rbac []string
	var config string
	for _, doc := range strings.Split(rendered, "\n---") {
		var o struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Data map[string]string `json:"data"`
		}
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatal(err)
		}
		switch o.Kind {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			rbac = append(rbac, doc)
		case "ConfigMap":
			if o.Metadata.Name == "kedge" {
				config = o.Data["cloudcore.yaml"]
			}
		}
	}
	if len(rbac) < 6 || config == "" {
		t.Fatalf("chart rendered %d RBAC objects and config %q", len(rbac), config)
	}
	rbacFile := filepath.Join(dir, "rbac.yaml")
	if err := os.WriteFile(rbacFile, []byte(strings.Join(rbac, "\n---\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := k8s.Kubectl("apply", "-f", rbacFile); err != nil {
		t.Fatalf("kubectl apply the chart's RBAC: %v\n%s", err, out)
	}

	// Only the ServiceAccount's identity: a bound token from the TokenRequest API.
	tr, err := k8s.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "kedge", &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	saKubeconfig := filepath.Join(dir, "cloudcore.kubeconfig")
	kcfg := clientcmdapi.NewConfig()
	kcfg.Clusters["k"] = &clientcmdapi.Cluster{Server: k8s.Config.Host, CertificateAuthorityData: k8s.Config.CAData}
	kcfg.AuthInfos["cloudcore"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kcfg.Contexts["k"] = &clientcmdapi.Context{Cluster: "k", AuthInfo: "cloudcore"}
	kcfg.CurrentContext = "k"
	if err := clientcmd.WriteToFile(*kcfg, saKubeconfig); err != nil {
		t.Fatal(err)
	}
	sa, err := kubernetes.NewForConfig(&rest.Config{Host: k8s.Config.Host, BearerToken: tr.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: k8s.Config.CAData}})
	if err != nil {
		t.Fatal(err)
	}

	// cloudcore on the chart's cloudcore.yaml; only listen addresses and local paths are changed.
	cfgFile := filepath.Join(dir, "cloudcore.yaml")
	if err := os.WriteFile(cfgFile, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, k8s: k8s, dir: dir, pkiDir: filepath.Join(dir, "pki"), hubPort: freePort(t), certPort: freePort(t),
		node: "rbac-edge", edgeConfig: filepath.Join(dir, "edgecore.yaml"), edgeDB: filepath.Join(dir, "edge.db")}
	mqPort := freePort(t)
	c.edgeEnv = []string{"KEDGE_MODULES__EVENTBUS__MQTTMODE=internal", "KEDGE_MODULES__EVENTBUS__INTERNALADDRESS=127.0.0.1:" + strconv.Itoa(mqPort)}
	loop := func(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }
	c.cloud = start(t, "cloudcore", []string{
		"KUBECONFIG=" + saKubeconfig,
		"POD_NAMESPACE=" + ns, // as the chart's Deployment sets it: the leader-election Leases live there
		"KEDGE_MODULES__CLOUDHUB__ADDRESS=" + loop(c.hubPort), "KEDGE_MODULES__CLOUDHUB__CERTSERVERADDRESS=" + loop(c.certPort),
		"KEDGE_MODULES__CLOUDHUB__PKIDIR=" + c.pkiDir, "KEDGE_MODULES__CLOUDHUB__HEARTBEAT=1s",
		"KEDGE_MODULES__CLOUDSTREAM__PKIDIR=" + c.pkiDir, "KEDGE_MODULES__CLOUDSTREAM__CLIENTCAFILE=" + kc.CAFile,
		"KEDGE_MODULES__CLOUDSTREAM__STREAMADDRESS=" + loop(freePort(t)), "KEDGE_MODULES__CLOUDSTREAM__TUNNELADDRESS=" + loop(freePort(t)),
		"KEDGE_MODULES__CLOUDSTREAM__ADVERTISEADDRESS=127.0.0.1",
		"KEDGE_MODULES__CLOUDBUS__ADDRESS=" + loop(freePort(t)),
		"KEDGE_MODULES__EDGECONTROLLER__INVENTORYWAIT=2s", "KEDGE_MODULES__DEVICECONTROLLER__INVENTORYWAIT=2s",
		"KEDGE_LOG__FORMAT=text",
	}, "--config", cfgFile)
	c.cloud.waitReady()

	// A join token made with the same identity, in the chart's CA Secret.
	code, token, stderr := run(t, "cloudcore", []string{"KUBECONFIG=" + saKubeconfig}, "token", "create", "--ca-secret", ns+"/kedge-ca")
	if code != 0 {
		t.Fatalf("token create --ca-secret as the ServiceAccount: %d %s", code, stderr)
	}
	code, out, stderr := run(t, "edgecore", nil, "join", "--cloudcore-address", "127.0.0.1", "--token", strings.TrimSpace(token),
		"--node-name", c.node, "--data-dir", filepath.Join(dir, "edge"), "--config-out", c.edgeConfig,
		"--cert-port", strconv.Itoa(c.certPort), "--hub-port", strconv.Itoa(c.hubPort))
	if code != 0 {
		t.Fatalf("join: %d %s %s", code, out, stderr)
	}
	c.metaServer = loop(freePort(t))
	c.startEdge()
	if c.edgeClient, err = kubernetes.NewForConfig(&rest.Config{Host: "https://" + c.metaServer, BearerTokenFile: filepath.Join(dir, "edge", "metaserver-admin.token"),
		TLSClientConfig: rest.TLSClientConfig{CAFile: filepath.Join(dir, "edge", "metaserver.crt")}}); err != nil {
		t.Fatal(err)
	}

	t.Run("node registers, reports Ready and renews its Lease", func(t *testing.T) {
		waitFor(t, "edge node Ready", 60*time.Second, c.nodeReady)
		waitFor(t, "node Lease in kube-node-lease", 60*time.Second, func() (bool, string) {
			_, err := k8s.Client.CoordinationV1().Leases("kube-node-lease").Get(ctx, c.node, metav1.GetOptions{})
			return err == nil, fmt.Sprint(err)
		})
	})
	t.Run("pod with a ConfigMap and a Secret reaches the edge and its status the API", func(t *testing.T) {
		c.t = t
		if _, err := k8s.Client.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "app"}, Data: map[string]string{"v": "1"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := k8s.Client.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "app-secret"}, StringData: map[string]string{"pw": "s3cret"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		c.createPod("p1", "app")
		c.waitOnEdge("p1", nil)
		waitFor(t, "pod status written by the edge", 60*time.Second, func() (bool, string) {
			p, err := k8s.Client.CoreV1().Pods("default").Get(ctx, "p1", metav1.GetOptions{})
			return err == nil && p.Status.Reason == "NoContainerRuntime", fmt.Sprint(err)
		})
		waitFor(t, "ConfigMap and Secret on the edge", 30*time.Second, func() (bool, string) {
			cm, err := c.edgeClient.CoreV1().ConfigMaps("default").Get(ctx, "app", metav1.GetOptions{})
			if err != nil || cm.Data["v"] != "1" {
				return false, fmt.Sprint(err)
			}
			_, err = c.edgeClient.CoreV1().Secrets("default").Get(ctx, "app-secret", metav1.GetOptions{})
			return err == nil, fmt.Sprint(err)
		})
		// Deleting the pod completes through the edge (pods delete with the node's confirmation).
		grace := int64(30)
		if err := k8s.Client.CoreV1().Pods("default").Delete(ctx, "p1", metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "p1's deletion completed by cloudcore", 60*time.Second, func() (bool, string) {
			_, err := k8s.Client.CoreV1().Pods("default").Get(ctx, "p1", metav1.GetOptions{})
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
	})
	t.Run("device membership reaches the edge and a reported twin the Device status", func(t *testing.T) {
		c.t = t
		api, err := devicecontroller.NewRESTClient(k8s.Config)
		if err != nil {
			t.Fatal(err)
		}
		d := &deviceRig{t: t, c: c, api: api, ns: "rbac-devices", device: "thermometer-1"}
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
		d.report(t, "rbac-1", "temperature", "22.5", time.Now().UnixMilli())
		waitFor(t, "reported temperature in the Device status", 60*time.Second, func() (bool, string) {
			tw := d.twin("temperature")
			return tw.Reported.Value == "22.5", fmt.Sprintf("%+v", tw)
		})
	})
	c.t = t

	t.Run("identity refused what no module needs", func(t *testing.T) {
		for _, tc := range []struct {
			what string
			do   func() error
		}{
			{"delete a Node", func() error { return sa.CoreV1().Nodes().Delete(ctx, c.node, metav1.DeleteOptions{}) }},
			{"create a Secret outside its namespace", func() error {
				_, err := sa.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
				return err
			}},
			{"delete a Secret outside its namespace", func() error {
				return sa.CoreV1().Secrets("default").Delete(ctx, "app-secret", metav1.DeleteOptions{})
			}},
			{"create a Pod", func() error {
				_, err := sa.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x"},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}}, metav1.CreateOptions{})
				return err
			}},
			{"write a ConfigMap", func() error {
				_, err := sa.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
				return err
			}},
			{"list Deployments", func() error { _, err := sa.AppsV1().Deployments("").List(ctx, metav1.ListOptions{}); return err }},
			{"list ClusterRoles", func() error { _, err := sa.RbacV1().ClusterRoles().List(ctx, metav1.ListOptions{}); return err }},
			{"bind a ClusterRole", func() error {
				_, err := sa.RbacV1().RoleBindings(ns).Create(ctx, rbacBinding(), metav1.CreateOptions{})
				return err
			}},
			{"read Leases outside kube-node-lease and its namespace", func() error {
				_, err := sa.CoordinationV1().Leases("kube-system").List(ctx, metav1.ListOptions{})
				return err
			}},
			{"proxy to a node (cloudNodes off)", func() error {
				return sa.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes/" + c.node + "/proxy/metrics").Do(ctx).Error()
			}},
			{"list ServiceAccounts", func() error {
				_, err := sa.CoreV1().ServiceAccounts("kube-system").List(ctx, metav1.ListOptions{})
				return err
			}},
		} {
			if err := tc.do(); !apierrors.IsForbidden(err) {
				t.Errorf("%s: want Forbidden, got %v", tc.what, err)
			}
		}
	})

	// Nothing cloudcore did was refused: its log has no forbidden answer from the API server (whose
	// message names the user: `... is forbidden: User "system:serviceaccount:kedge-system:kedge" cannot ...`).
	if log := c.cloud.stderr.String(); strings.Contains(log, `serviceaccount:kedge-system:kedge\" cannot`) || strings.Contains(log, `serviceaccount:kedge-system:kedge" cannot`) {
		t.Fatalf("cloudcore was refused with the chart's RBAC:\n%s", grepLines(log, "cannot", 20))
	}
}

func ptr[T any](v T) *T { return &v }

// rbacBinding binds cluster-admin to the ServiceAccount: what an escalation would try.
func rbacBinding() *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "escalate"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "kedge", Namespace: "kedge-system"}}}
}
