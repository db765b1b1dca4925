package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	_ "github.com/kedge-io/kedge/host/store" // the sqlite3 driver
)

// podTokenOnEdge reads, from the edge's SQLite file (read-only, beside the running edgecore), the
// bound service-account token the cloud issued for a pod: the token edged writes into the pod's
// projected volume.
func (c *cluster) podTokenOnEdge(ns, pod string) (string, error) {
	db, err := sql.Open("sqlite3", "file:"+c.edgeDB+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		return "", err
	}
	defer db.Close()
	var raw []byte
	err = db.QueryRow(`SELECT value FROM objects WHERE scope = 'metamanager' AND type = 'serviceaccounttoken' AND namespace = ? AND name = ?`, ns, pod).Scan(&raw)
	if err != nil {
		return "", err
	}
	var pt struct {
		Tokens []struct{ Audience, Token string }
	}
	if err := json.Unmarshal(raw, &pt); err != nil {
		return "", err
	}
	for _, t := range pt.Tokens {
		if t.Audience == "" && t.Token != "" {
			return t.Token, nil
		}
	}
	return "", errors.New("no token for the API server's audience yet")
}

// metaGet reads path from the edge's MetaServer with token (empty: none): status code and body.
func (c *cluster) metaGet(path, token string) (int, string) {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "https://"+c.metaServer+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	// The node-local certificate edgecore made is the one to trust.
	pem, err := os.ReadFile(filepath.Join(c.dir, "edge", "metaserver.crt"))
	if err != nil {
		c.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Acceptance of issue 17 item 4 with the real binaries and a real API server: the cloud issues bound
// service-account tokens (TokenRequest) for two pods on the edge; each pod's token reads its own pod
// and Secret on the edge's MetaServer and is refused (403) the other pod's Secret; a request without
// a token gets 401 and nothing; the node-admin token file sees everything; a deleted pod's token
// stops working.
func TestMetaServerPodTokensSeeOnlyTheirPodsObjects(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	waitFor(t, "edge node Ready", 60*time.Second, c.nodeReady)
	cs := c.k8s.Client.CoreV1()
	for _, sa := range []string{"web-sa", "other-sa"} {
		if _, err := cs.ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []string{"web-secret", "other-secret"} {
		if _, err := cs.Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: s},
			StringData: map[string]string{"password": "value-of-" + s}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	exp := int64(3600)
	newPod := func(name, sa, secret string) {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Spec: corev1.PodSpec{
			NodeName: c.node, ServiceAccountName: sa,
			Containers: []corev1.Container{{Name: "c", Image: "localhost/busybox:local", Env: []corev1.EnvVar{{Name: "PW",
				ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: "password"}}}}}},
			Volumes: []corev1.Volume{{Name: "token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: &exp}}}}}}},
		}}
		if _, err := cs.Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	newPod("web", "web-sa", "web-secret")
	newPod("other", "other-sa", "other-secret")

	tokens := map[string]string{}
	for _, pod := range []string{"web", "other"} {
		waitFor(t, "the cloud's token for "+pod+" on the edge", 90*time.Second, func() (bool, string) {
			tok, err := c.podTokenOnEdge("default", pod)
			if err != nil {
				return false, err.Error()
			}
			tokens[pod] = tok
			return true, ""
		})
	}
	// The node holds what its pods reference (the Secrets travel with the pods).
	for _, s := range []string{"web-secret", "other-secret"} {
		waitFor(t, s+" on the edge", 60*time.Second, func() (bool, string) {
			code, body := c.metaGet("/api/v1/namespaces/default/secrets/"+s, "") // without a token: 401 whatever happens
			if code != http.StatusUnauthorized {
				return false, body
			}
			_, err := c.edgeClient.CoreV1().Secrets("default").Get(ctx, s, metav1.GetOptions{}) // the node-admin token
			return err == nil, errString(err)
		})
	}

	cases := []struct {
		name, token, path string
		code              int
		has, hasNot       string
	}{
		{"no token", "", "/api/v1/namespaces/default/secrets/web-secret", 401, `"reason":"Unauthorized"`, "password"},
		{"no token, a list", "", "/api/v1/secrets", 401, `"code":401`, "web-secret"},
		{"a made-up token", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln", "/api/v1/namespaces/default/pods/web", 401, `"kind":"Status"`, `"nodeName"`},
		{"web's token: its pod", tokens["web"], "/api/v1/namespaces/default/pods/web", 200, `"serviceAccountName":"web-sa"`, ""},
		{"web's token: its Secret", tokens["web"], "/api/v1/namespaces/default/secrets/web-secret", 200, `"password":"` + b64("value-of-web-secret") + `"`, ""},
		{"web's token: other's Secret", tokens["web"], "/api/v1/namespaces/default/secrets/other-secret", 403, `"reason":"Forbidden"`, "password"},
		{"web's token: other's pod", tokens["web"], "/api/v1/namespaces/default/pods/other", 403, `system:serviceaccount:default:web-sa`, `"nodeName"`},
		{"web's token: the Secrets list", tokens["web"], "/api/v1/namespaces/default/secrets", 200, `"name":"web-secret"`, "other-secret"},
		{"other's token: its Secret", tokens["other"], "/api/v1/namespaces/default/secrets/other-secret", 200, b64("value-of-other-secret"), ""},
		{"other's token: web's Secret", tokens["other"], "/api/v1/namespaces/default/secrets/web-secret", 403, `"code":403`, "password"},
	}
	for _, tt := range cases {
		code, body := c.metaGet(tt.path, tt.token)
		if code != tt.code || !strings.Contains(body, tt.has) || (tt.hasNot != "" && strings.Contains(body, tt.hasNot)) {
			t.Errorf("%s: GET %s = %d %s\nwant %d with %q and without %q", tt.name, tt.path, code, tail(body, 400), tt.code, tt.has, tt.hasNot)
		}
	}

	// The node-admin path: the token file edgecore made (0600), as a node agent's kubeconfig reads it.
	adminFile := filepath.Join(c.dir, "edge", "metaserver-admin.token")
	if fi, err := os.Stat(adminFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file %s: %v %v, want mode 0600", adminFile, fi, err)
	}
	l, err := c.edgeClient.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range l.Items {
		names = append(names, s.Name)
	}
	if !strings.Contains(strings.Join(names, ","), "web-secret") || !strings.Contains(strings.Join(names, ","), "other-secret") {
		t.Fatalf("the node-admin token lists %v, want both pods' Secrets", names)
	}
	// kubectl as the README shows it: --server and --token, no kubeconfig of the cloud.
	admin, err := os.ReadFile(adminFile)
	if err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(empty, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	kubectl := func(token string, args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(c.k8s.BinDir, "kubectl"), append([]string{"--kubeconfig", empty, "--server", "https://" + c.metaServer,
			"--certificate-authority", filepath.Join(c.dir, "edge", "metaserver.crt"), "--token", token}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := kubectl(strings.TrimSpace(string(admin)), "get", "secrets", "-o", "name"); err != nil || !strings.Contains(out, "secret/web-secret") || !strings.Contains(out, "secret/other-secret") {
		t.Fatalf("kubectl with the node-admin token: %v\n%s", err, out)
	}
	if out, err := kubectl(tokens["web"], "get", "secret", "other-secret"); err == nil || !strings.Contains(out, "Forbidden") {
		t.Fatalf("kubectl with web's token reading other's Secret: %v\n%s", err, out)
	}

	// The store file holding them is the owner's only.
	if fi, err := os.Stat(c.edgeDB); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v, want mode 0600", c.edgeDB, fi, err)
	}

	// web is deleted: the cloud withdraws its tokens from the node, and its token opens nothing.
	zero := int64(0)
	if err := cs.Pods("default").Delete(ctx, "web", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted pod's token refused", 60*time.Second, func() (bool, string) {
		code, body := c.metaGet("/api/v1/namespaces/default/secrets/web-secret", tokens["web"])
		return code == http.StatusUnauthorized, tail(body, 200)
	})
	if code, _ := c.metaGet("/api/v1/namespaces/default/secrets/other-secret", tokens["other"]); code != 200 {
		t.Fatalf("other's token after web was deleted: %d", code)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
