package metamanager

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kedge-io/kedge/sdk/message"
)

// tokens is the object edgecontroller sends as <ns>/serviceaccounttoken/<pod>.
type tokensObj struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	PodUID            string     `json:"podUID"`
	Tokens            []tokenObj `json:"tokens"`
}

type tokenObj struct {
	Audience            string      `json:"audience,omitempty"`
	ExpirationSeconds   int64       `json:"expirationSeconds"`
	Token               string      `json:"token"`
	ExpirationTimestamp metav1.Time `json:"expirationTimestamp"`
}

func podTokens(ns, name, uid string, rv string, toks ...tokenObj) *tokensObj {
	return &tokensObj{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, ResourceVersion: rv}, PodUID: uid, Tokens: toks}
}

func tok(token string, expires time.Duration, audience string) tokenObj {
	return tokenObj{Token: token, Audience: audience, ExpirationSeconds: 3600, ExpirationTimestamp: metav1.NewTime(time.Now().Add(expires))}
}

func secret(ns, name string, rv string, value string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, ResourceVersion: rv}, Data: map[string][]byte{"v": []byte(value)}}
}

// authEdge is an edge holding two pods of default (web references web-config, web-env and
// web-volume; other references other-secret), a pod of team-b, their tokens, and Secrets no pod
// references.
func authEdge(t *testing.T) *edge {
	t.Helper()
	e := newEdge(t, offlineHub())
	web := pod("default", "web", 10, "edge-1", map[string]string{"app": "web"})
	web.Spec.ServiceAccountName = "web-sa"
	web.Spec.Volumes = []corev1.Volume{
		{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "web-config"}}}},
		{Name: "sec", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "web-volume"}}},
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}},
	}
	web.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "PW", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "web-env"}, Key: "v"}}}}
	other := pod("default", "other", 11, "edge-1", nil)
	other.Spec.Volumes = []corev1.Volume{{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "other-secret"}}}}
	e.cloud(t, message.OpInsert, "default/pod/web", web)
	e.cloud(t, message.OpInsert, "default/pod/other", other)
	e.cloud(t, message.OpInsert, "team-b/pod/web", pod("team-b", "web", 12, "edge-1", nil))
	e.cloud(t, message.OpInsert, "default/configmap/web-config", configMap("default", "web-config", 13, map[string]string{"k": "v"}))
	e.cloud(t, message.OpInsert, "default/configmap/other-config", configMap("default", "other-config", 14, map[string]string{"k": "v"}))
	for i, s := range []string{"web-env", "web-volume", "other-secret", "unreferenced"} {
		e.cloud(t, message.OpInsert, "default/secret/"+s, secret("default", s, "2"+string(rune('0'+i)), "value-of-"+s))
	}
	e.cloud(t, message.OpInsert, "team-b/secret/web-env", secret("team-b", "web-env", "30", "value-of-team-b-web-env"))
	e.cloud(t, message.OpInsert, "default/service/api", &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "default", ResourceVersion: "31"}})
	e.cloud(t, message.OpInsert, "default/node/edge-1", &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-1", ResourceVersion: "32"}})
	e.cloud(t, message.OpInsert, "default/serviceaccounttoken/web", podTokens("default", "web", "uid-web", "40",
		tok("token-of-web", time.Hour, ""), tok("token-of-web-for-vault", time.Hour, "vault")))
	e.cloud(t, message.OpInsert, "default/serviceaccounttoken/other", podTokens("default", "other", "uid-other", "41", tok("token-of-other", time.Hour, "")))
	e.cloud(t, message.OpInsert, "team-b/serviceaccounttoken/web", podTokens("team-b", "web", "uid-web", "42", tok("token-of-team-b-web-expired", -time.Second, "")))
	return e
}

// status decodes a Kubernetes Status body.
func status(t *testing.T, body []byte) metav1.Status {
	t.Helper()
	var st metav1.Status
	if err := json.Unmarshal(body, &st); err != nil || st.Kind != "Status" || st.APIVersion != "v1" || st.Status != metav1.StatusFailure {
		t.Fatalf("not a Kubernetes Status (%v): %s", err, body)
	}
	return st
}

// names lists the metadata.name of a list's items.
func itemNames(t *testing.T, body []byte) []string {
	t.Helper()
	var l struct {
		Items []struct {
			Metadata struct{ Name, Namespace string }
		}
	}
	if err := json.Unmarshal(body, &l); err != nil {
		t.Fatalf("not a list: %v: %s", err, body)
	}
	out := []string{}
	for _, it := range l.Items {
		out = append(out, it.Metadata.Namespace+"/"+it.Metadata.Name)
	}
	slices.Sort(out)
	return out
}

func TestMetaServerAuthorizesPodsLikeNodeRestriction(t *testing.T) {
	e := authEdge(t)
	admin := e.adminToken(t)
	cases := []struct {
		name, token, path string
		code              int
		reason            metav1.StatusReason
		items             string // for a list: the names it must show, comma-separated
	}{
		{"no token: 401 and nothing", "", "/api/v1/namespaces/default/secrets/web-env", 401, metav1.StatusReasonUnauthorized, ""},
		{"no token, list: 401", "", "/api/v1/secrets", 401, metav1.StatusReasonUnauthorized, ""},
		{"no token, discovery: 401", "", "/api/v1", 401, metav1.StatusReasonUnauthorized, ""},
		{"a token nobody issued: 401", "not-a-token-of-this-node", "/api/v1/namespaces/default/pods/web", 401, metav1.StatusReasonUnauthorized, ""},
		{"a prefix of a real token: 401", "token-of-we", "/api/v1/namespaces/default/pods/web", 401, metav1.StatusReasonUnauthorized, ""},
		{"an expired token: 401", "token-of-team-b-web-expired", "/api/v1/namespaces/team-b/pods/web", 401, metav1.StatusReasonUnauthorized, ""},
		{"a token for another audience: 401", "token-of-web-for-vault", "/api/v1/namespaces/default/pods/web", 401, metav1.StatusReasonUnauthorized, ""},

		{"pod: its own pod", "token-of-web", "/api/v1/namespaces/default/pods/web", 200, "", ""},
		{"pod: a Secret its env references", "token-of-web", "/api/v1/namespaces/default/secrets/web-env", 200, "", ""},
		{"pod: a Secret its projected volume references", "token-of-web", "/api/v1/namespaces/default/secrets/web-volume", 200, "", ""},
		{"pod: a ConfigMap its volume references", "token-of-web", "/api/v1/namespaces/default/configmaps/web-config", 200, "", ""},
		{"pod: a Service of its namespace", "token-of-web", "/api/v1/namespaces/default/services/api", 200, "", ""},
		{"pod: another pod's Secret is forbidden", "token-of-web", "/api/v1/namespaces/default/secrets/other-secret", 403, metav1.StatusReasonForbidden, ""},
		{"pod: an unreferenced Secret is forbidden", "token-of-web", "/api/v1/namespaces/default/secrets/unreferenced", 403, metav1.StatusReasonForbidden, ""},
		{"pod: a missing unreferenced Secret is forbidden, not 404", "token-of-web", "/api/v1/namespaces/default/secrets/nosuch", 403, metav1.StatusReasonForbidden, ""},
		{"pod: the same name in another namespace is forbidden", "token-of-web", "/api/v1/namespaces/team-b/secrets/web-env", 403, metav1.StatusReasonForbidden, ""},
		{"pod: another pod is forbidden", "token-of-web", "/api/v1/namespaces/default/pods/other", 403, metav1.StatusReasonForbidden, ""},
		{"pod: another ConfigMap is forbidden", "token-of-web", "/api/v1/namespaces/default/configmaps/other-config", 403, metav1.StatusReasonForbidden, ""},
		{"pod: the node is forbidden", "token-of-web", "/api/v1/nodes/edge-1", 403, metav1.StatusReasonForbidden, ""},
		{"pod: listing nodes is forbidden", "token-of-web", "/api/v1/nodes", 403, metav1.StatusReasonForbidden, ""},
		{"pod: a list shows only its Secrets", "token-of-web", "/api/v1/namespaces/default/secrets", 200, "", "default/web-env,default/web-volume"},
		{"pod: a list across namespaces shows only its Secrets", "token-of-web", "/api/v1/secrets", 200, "", "default/web-env,default/web-volume"},
		{"pod: a pod list shows only itself", "token-of-web", "/api/v1/pods", 200, "", "default/web"},
		{"pod: another pod sees its own Secret only", "token-of-other", "/api/v1/secrets", 200, "", "default/other-secret"},
		{"pod: a list of another namespace is empty", "token-of-web", "/api/v1/namespaces/team-b/secrets", 200, "", ""},
		{"pod: discovery", "token-of-web", "/api/v1", 200, "", ""},

		{"admin: another pod's Secret", admin, "/api/v1/namespaces/default/secrets/other-secret", 200, "", ""},
		{"admin: every Secret", admin, "/api/v1/secrets", 200, "", "default/other-secret,default/unreferenced,default/web-env,default/web-volume,team-b/web-env"},
		{"admin: the node", admin, "/api/v1/nodes/edge-1", 200, "", ""},
		{"admin with spaces around the token", "  " + admin + " ", "/api/v1/nodes/edge-1", 200, "", ""},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.get(t, tt.path, tt.token)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.code {
				t.Fatalf("GET %s: %d, want %d: %s", tt.path, resp.StatusCode, tt.code, body)
			}
			if tt.code >= 400 {
				st := status(t, body)
				if st.Code != int32(tt.code) || st.Reason != tt.reason {
					t.Fatalf("status %+v, want code %d reason %s", st, tt.code, tt.reason)
				}
				if strings.Contains(string(body), "value-of") || strings.Contains(string(body), "dmFsdWUtb2") {
					t.Fatalf("a refusal carries data: %s", body)
				}
				return
			}
			if strings.HasSuffix(tt.path, "s") && strings.Count(tt.path, "/") <= 5 && tt.path != "/api/v1" {
				if got := strings.Join(itemNames(t, body), ","); got != tt.items {
					t.Fatalf("list %s: %s, want %s", tt.path, got, tt.items)
				}
			}
		})
	}
	t.Run("write verbs: 401 without a token, 405 with one", func(t *testing.T) {
		for _, c := range []struct {
			token string
			code  int
		}{{"", 401}, {"token-of-web", 405}, {admin, 405}} {
			req, _ := http.NewRequest(http.MethodDelete, "http://"+e.mm.MetaServerAddr()+"/api/v1/namespaces/default/secrets/web-env", nil)
			if c.token != "" {
				req.Header.Set("Authorization", "Bearer "+c.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.code || status(t, body).Code != int32(c.code) {
				t.Fatalf("DELETE with %q: %d %s, want %d", c.token, resp.StatusCode, body, c.code)
			}
		}
	})
	t.Run("health needs no token", func(t *testing.T) {
		resp := e.get(t, "/readyz", "")
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("/readyz: %d", resp.StatusCode)
		}
	})
	t.Run("refusals are counted", func(t *testing.T) {
		if metricValue(t, e, "kedge_metaserver_authentications_total") == 0 {
			t.Fatal("kedge_metaserver_authentications_total is 0")
		}
	})
}

func TestMetaServerAnswersClientGoWithAPIServerErrors(t *testing.T) {
	e := authEdge(t)
	ctx := context.Background()
	client := func(token string) kubernetes.Interface {
		cs, err := kubernetes.NewForConfig(&rest.Config{Host: "http://" + e.mm.MetaServerAddr(), BearerToken: token})
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	if _, err := client("").CoreV1().Secrets("default").Get(ctx, "web-env", metav1.GetOptions{}); !apierrors.IsUnauthorized(err) {
		t.Fatalf("no token: %v, want Unauthorized", err)
	}
	web := client("token-of-web")
	if s, err := web.CoreV1().Secrets("default").Get(ctx, "web-env", metav1.GetOptions{}); err != nil || string(s.Data["v"]) != "value-of-web-env" {
		t.Fatalf("own Secret: %+v %v", s, err)
	}
	_, err := web.CoreV1().Secrets("default").Get(ctx, "other-secret", metav1.GetOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `system:serviceaccount:default:web-sa`) {
		t.Fatalf("another pod's Secret: %v, want Forbidden naming the service account", err)
	}
	// The node-admin token from its file, as a node agent's kubeconfig (tokenFile) reads it.
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: "http://" + e.mm.MetaServerAddr(), BearerTokenFile: e.mm.MetaServer.AdminTokenFile})
	if err != nil {
		t.Fatal(err)
	}
	if l, err := cs.CoreV1().Secrets("").List(ctx, metav1.ListOptions{}); err != nil || len(l.Items) != 5 {
		t.Fatalf("admin list: %v %v", l, err)
	}
}

func TestMetaServerPodTokenDiesWithItsPod(t *testing.T) {
	e := authEdge(t)
	code := func(token, path string) int {
		resp := e.get(t, path, token)
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := code("token-of-other", "/api/v1/namespaces/default/secrets/other-secret"); c != 200 {
		t.Fatalf("before: %d", c)
	}
	// A new pod of the same name (another UID) before the cloud re-issued its tokens: the old token
	// is for the old pod.
	repl := pod("default", "other", 50, "edge-1", nil)
	repl.UID = types.UID("uid-other-2")
	repl.Spec.Volumes = []corev1.Volume{{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "other-secret"}}}}
	e.cloud(t, message.OpUpdate, "default/pod/other", repl)
	if c := code("token-of-other", "/api/v1/namespaces/default/secrets/other-secret"); c != 401 {
		t.Fatalf("a token bound to the replaced pod's UID: %d, want 401", c)
	}
	e.cloud(t, message.OpUpdate, "default/serviceaccounttoken/other", podTokens("default", "other", "uid-other-2", "51", tok("token-of-other-2", time.Hour, "")))
	if c := code("token-of-other-2", "/api/v1/namespaces/default/secrets/other-secret"); c != 200 {
		t.Fatalf("the new pod's token: %d", c)
	}
	if c := code("token-of-other", "/api/v1/namespaces/default/pods/other"); c != 401 {
		t.Fatalf("the replaced token after re-issue: %d, want 401", c)
	}
	// The pod is deleted: the cloud deletes it and its tokens.
	e.cloud(t, message.OpDelete, "default/serviceaccounttoken/other", podTokens("default", "other", "uid-other-2", "52"))
	e.cloud(t, message.OpDelete, "default/pod/other", repl)
	if c := code("token-of-other-2", "/api/v1/namespaces/default/pods/other"); c != 401 {
		t.Fatalf("a deleted pod's token: %d, want 401", c)
	}
}

func TestMetaServerTokensAreReadFromTheStoreAtStart(t *testing.T) {
	dir := t.TempDir()
	e := startEdge(t, filepath.Join(dir, "edge.db"), "127.0.0.1:0", offlineHub())
	e.cloud(t, message.OpInsert, "default/pod/web", pod("default", "web", 10, "edge-1", nil))
	e.cloud(t, message.OpInsert, "default/serviceaccounttoken/web", podTokens("default", "web", "uid-web", "11", tok("token-of-web", time.Hour, "")))
	admin := e.adminToken(t)
	e.stop()
	e2 := startEdge(t, filepath.Join(dir, "edge.db"), "127.0.0.1:0", offlineHub())
	if got := e2.adminToken(t); got != admin {
		t.Fatalf("the admin token changed across a restart: %q -> %q", admin, got)
	}
	for _, token := range []string{"token-of-web", admin} {
		resp := e2.get(t, "/api/v1/namespaces/default/pods/web", token)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("after restart, %.12s...: %d", token, resp.StatusCode)
		}
	}
	fi, err := os.Stat(e2.mm.MetaServer.AdminTokenFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file: %v %v, want mode 0600", fi.Mode(), err)
	}
}

func TestMetaServerAdminTokenFileIsTightenedOrRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "metaserver-admin.token")
	if err := os.WriteFile(path, []byte("short\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Through the module's own start: a short token is refused with the file named.
	_, err := startEdgeWith(t, filepath.Join(dir, "edge.db"), "127.0.0.1:0", offlineHub(), path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "at least 32") {
		t.Fatalf("a short admin token: %v, want an error naming the file", err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %#o after start, want 0600", fi.Mode().Perm())
	}
	if err := os.WriteFile(path, []byte(strings.Repeat("a", 40)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := startEdgeWith(t, filepath.Join(dir, "edge2.db"), "127.0.0.1:0", offlineHub(), path); err != nil {
		t.Fatal(err)
	}
}

func TestMetaServerWatchShowsAPodOnlyItsObjects(t *testing.T) {
	e := authEdge(t)
	resp := e.get(t, "/api/v1/namespaces/default/secrets?watch=1&timeoutSeconds=300", "token-of-web")
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("watch: %d", resp.StatusCode)
	}
	e.cloud(t, message.OpUpdate, "default/secret/other-secret", secret("default", "other-secret", "60", "x"))
	e.cloud(t, message.OpUpdate, "default/secret/unreferenced", secret("default", "unreferenced", "61", "x"))
	e.cloud(t, message.OpUpdate, "default/secret/web-env", secret("default", "web-env", "62", "new"))
	sc := bufio.NewScanner(resp.Body)
	var got []string
	for len(got) < 3 && sc.Scan() {
		var ev struct {
			Type   string
			Object struct{ Metadata struct{ Name string } }
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.Type+" "+ev.Object.Metadata.Name)
	}
	want := []string{"ADDED web-env", "ADDED web-volume", "MODIFIED web-env"}
	if !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}

// kubectl and kubeconfig-based client-go send a token only over TLS (clientcmd drops credentials for
// an http:// server): with certFile/keyFile the MetaServer serves HTTPS with a self-signed
// certificate it creates, and a kubeconfig trusting that file with the admin tokenFile works.
func TestMetaServerOverHTTPSServesKubeconfigClients(t *testing.T) {
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "metaserver.crt"), filepath.Join(dir, "metaserver.key")
	e, err := startEdgeWith(t, filepath.Join(dir, "edge.db"), "127.0.0.1:0", offlineHub(), filepath.Join(dir, "admin.token"),
		func(m *Module) { m.MetaServer.CertFile, m.MetaServer.KeyFile = crt, key })
	if err != nil {
		t.Fatal(err)
	}
	e.cloud(t, message.OpInsert, "default/pod/web", pod("default", "web", 10, "edge-1", nil))
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v, want 0600", fi, err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	cfg := "apiVersion: v1\nkind: Config\nclusters:\n- name: edge\n  cluster:\n    server: https://" + e.mm.MetaServerAddr() +
		"\n    certificate-authority: " + crt + "\nusers:\n- name: agent\n  user:\n    tokenFile: " + e.mm.MetaServer.AdminTokenFile +
		"\ncontexts:\n- name: edge\n  context:\n    cluster: edge\n    user: agent\ncurrent-context: edge\n"
	if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := cs.CoreV1().Pods("default").Get(context.Background(), "web", metav1.GetOptions{}); err != nil || p.Name != "web" {
		t.Fatalf("kubeconfig client over HTTPS: %v %v", p, err)
	}
	// The same certificate is reused after a restart (clients keep trusting it).
	before, _ := os.ReadFile(crt)
	e.stop()
	if _, err := startEdgeWith(t, filepath.Join(dir, "edge.db"), "127.0.0.1:0", offlineHub(), filepath.Join(dir, "admin.token"),
		func(m *Module) { m.MetaServer.CertFile, m.MetaServer.KeyFile = crt, key }); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(crt); string(after) != string(before) {
		t.Fatal("the certificate changed across a restart")
	}
}
