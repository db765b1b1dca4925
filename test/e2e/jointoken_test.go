package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/pki"
)

// Issue 17 item 2: against a running cloudcore, tokens made by 'cloudcore token create' beside it are
// single use, bound when asked, revocable, and never take over a node that holds a certificate,
// while that node still renews with its own certificate. Each refusal is counted by reason.
func TestJoinTokenCannotBeReusedOrTakeOverAJoinedNode(t *testing.T) {
	needBinaries(t)
	dir := t.TempDir()
	pkiDir := filepath.Join(dir, "pki")
	certPort := freePort(t)
	cloud := start(t, "cloudcore", []string{
		"KEDGE_MODULES__CLOUDHUB__ADDRESS=127.0.0.1:" + strconv.Itoa(freePort(t)),
		"KEDGE_MODULES__CLOUDHUB__CERTSERVERADDRESS=127.0.0.1:" + strconv.Itoa(certPort),
		"KEDGE_MODULES__CLOUDHUB__PKIDIR=" + pkiDir,
	})
	cloud.waitReady()

	cloudcore := func(args ...string) string {
		t.Helper()
		code, out, stderr := run(t, "cloudcore", nil, append(args, "--pki-dir", pkiDir)...)
		if code != 0 {
			t.Fatalf("cloudcore %v: exit %d\n%s", args, code, stderr)
		}
		return strings.TrimSpace(out)
	}
	join := func(token, node string) (int, string) {
		t.Helper()
		code, out, stderr := run(t, "edgecore", nil, "join", "--cloudcore-address", "127.0.0.1", "--token", token,
			"--node-name", node, "--data-dir", filepath.Join(dir, node), "--config-out", filepath.Join(dir, node+".yaml"), "--force",
			"--cert-port", strconv.Itoa(certPort))
		return code, out + stderr
	}
	refused := func(what string, code int, out, want string) {
		t.Helper()
		if code == 0 || !strings.Contains(out, want) {
			t.Fatalf("%s: exit %d, want a refusal mentioning %q:\n%s", what, code, want, out)
		}
	}

	token := cloudcore("token", "create")
	if code, out := join(token, "edge-a"); code != 0 {
		t.Fatalf("first join: exit %d\n%s", code, out)
	}
	code, out := join(token, "edge-b")
	refused("the same token for another node", code, out, "401 Unauthorized: join token has no uses left")
	code, out = join(token, "edge-a")
	refused("the same token for the same node", code, out, "no uses left")

	fresh := cloudcore("token", "create")
	code, out = join(fresh, "edge-a")
	refused("a fresh token for the joined node", code, out, `409 Conflict: node already holds a valid certificate: node "edge-a"`)

	bound := cloudcore("token", "create", "--node", "edge-c")
	code, out = join(bound, "edge-d")
	refused("a token bound to edge-c, for edge-d", code, out, `403 Forbidden: join token is for another node`)

	var boundID string
	for _, line := range strings.Split(cloudcore("token", "ls"), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == "edge-c" {
			boundID = f[0]
		}
	}
	if boundID == "" {
		t.Fatalf("token ls does not list the token bound to edge-c:\n%s", cloudcore("token", "ls"))
	}
	cloudcore("token", "revoke", boundID)
	code, out = join(bound, "edge-c")
	refused("a revoked token", code, out, "join token has been revoked")

	// The refused join for edge-a did not use the fresh token up.
	if code, out := join(fresh, "edge-e"); code != 0 {
		t.Fatalf("join with the token a refusal left unused: exit %d\n%s", code, out)
	}

	for reason, want := range map[string]float64{"used_up": 2, "node_exists": 1, "node_mismatch": 1, "revoked": 1, "bad_token": 0} {
		if got := cloud.metric("kedge_certserver_join_refused_total", `reason="`+reason+`"`); got != want {
			t.Errorf(`kedge_certserver_join_refused_total{reason=%q} = %v, want %v`, reason, got, want)
		}
	}

	// edge-a renews with the certificate its join stored, as its Renewer does.
	certs := filepath.Join(dir, "edge-a", "certs")
	for i := range 2 {
		renewed := renewWith(t, certPort, certs, "edge-a")
		if renewed.Subject.CommonName != "system:node:edge-a" {
			t.Fatalf("renewal %d issued %q", i, renewed.Subject.CommonName)
		}
	}
	if got := cloud.metric("kedge_pki_requests_total", `result="renewed"`); got != 2 {
		t.Errorf(`kedge_pki_requests_total{result="renewed"} = %v, want 2`, got)
	}
}

// renewWith asks the certificate server for a new certificate for node, authenticated by the key
// pair in certs, and stores the answer there as the Renewer would (node.crt, node.key).
func renewWith(t *testing.T, certPort int, certs, node string) *x509.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(certs, "node.crt"), filepath.Join(certs, "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(certs, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: pki.NodeCNPrefix + node, Organization: []string{pki.NodesOrg}}}, key)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, "https://127.0.0.1:"+strconv.Itoa(certPort)+pki.CertPath, bytes.NewReader(csr))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(pki.NodeNameHeader, node)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("renewal of %s with its own certificate: %s: %s", node, resp.Status, body)
	}
	cert, err := x509.ParseCertificate(body)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(certs, "node.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: body}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(certs, "node.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert
}
