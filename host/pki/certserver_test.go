package pki

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// client returns an HTTPS client that trusts c's CA and presents certs, if any.
func (c *cloud) client(certs ...tls.Certificate) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: c.ca.Pool(), Certificates: certs},
	}}
}

type request struct {
	method, path string
	header       map[string]string
	body         []byte
}

func (c *cloud) do(t *testing.T, client *http.Client, r request) (int, []byte) {
	t.Helper()
	if r.method == "" {
		r.method = http.MethodGet
	}
	req, err := http.NewRequest(r.method, "https://"+c.addr+r.path, bytes.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func (c *cloud) count(endpoint, result string) float64 {
	return testutil.ToFloat64(c.certs.requests.WithLabelValues(endpoint, result))
}

func TestCertServerServesTheCAAsDER(t *testing.T) {
	c := newCloud(t, CertServerOptions{})
	status, body := c.do(t, c.client(), request{path: CAPath})
	if status != http.StatusOK || !bytes.Equal(body, c.ca.Certificate().Raw) {
		t.Fatalf("GET /ca.crt = %d, %d bytes; want 200 and the CA's DER", status, len(body))
	}
	if got := c.count("ca.crt", "ok"); got != 1 {
		t.Errorf(`kedge_pki_requests_total{endpoint="ca.crt",result="ok"} = %v; want 1`, got)
	}
}

func TestCertServerIssuesNodeIdentityWhateverTheCSRSubjectSays(t *testing.T) {
	c := newCloud(t, CertServerOptions{Validity: 48 * time.Hour})
	key := newKey(t)
	csr := newCSR(t, key, pkix.Name{CommonName: "system:admin", Organization: []string{"system:masters"}})
	status, body := c.do(t, c.client(), request{path: CertPath, body: csr, header: map[string]string{
		"Authorization": "Bearer " + c.token(t).JWT, NodeNameHeader: "edge-1",
	}})
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	cert, err := x509.ParseCertificate(body)
	if err != nil {
		t.Fatalf("answer is not a DER certificate: %v", err)
	}
	if cert.Subject.CommonName != "system:node:edge-1" || len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != "system:nodes" {
		t.Errorf("subject %q; want CN=system:node:edge-1, O=system:nodes", cert.Subject)
	}
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("extended key usage %v; want client auth only", cert.ExtKeyUsage)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Error("certificate is not for the CSR's key")
	}
	if life := cert.NotAfter.Sub(cert.NotBefore); life != 48*time.Hour+backdate {
		t.Errorf("lifetime %s; want the configured 48h (+%s backdating)", life, backdate)
	}
	if _, err := c.ca.VerifyNodeCert(cert); err != nil {
		t.Errorf("issued certificate does not verify: %v", err)
	}
	if got := c.count("edge.crt", "issued"); got != 1 {
		t.Errorf(`kedge_pki_requests_total{endpoint="edge.crt",result="issued"} = %v; want 1`, got)
	}
}

func TestCertServerRefusesBadRequests(t *testing.T) {
	c := newCloud(t, CertServerOptions{MaxBodyBytes: 4096})
	now := time.Now()
	expired, err := testToken(t, c.ca.WithClock(newFakeClock(now.Add(-48*time.Hour))), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other := newCloud(t, CertServerOptions{})
	claims := jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims).SignedString(jwt.UnsafeAllowNoneSignatureType)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rs256, _ := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(rsaKey)

	good := c.token(t).JWT
	csr := newCSR(t, newKey(t), pkix.Name{})
	badSig := bytes.Clone(csr)
	badSig[len(badSig)-3] ^= 0xff // in the signature
	pemCSR := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})
	withToken := func(jwt, node string) map[string]string {
		h := map[string]string{"Authorization": "Bearer " + jwt}
		if node != "" {
			h[NodeNameHeader] = node
		}
		return h
	}
	tests := []struct {
		name     string
		req      request
		status   int
		endpoint string
		result   string
		msg      string
	}{
		{"no token", request{path: CertPath, body: csr, header: map[string]string{NodeNameHeader: "edge-1"}}, 401, "edge.crt", "missing_token", "Authorization"},
		{"not a bearer token", request{path: CertPath, body: csr, header: map[string]string{"Authorization": "Basic abc", NodeNameHeader: "edge-1"}}, 401, "edge.crt", "token_malformed", "Bearer"},
		{"whole join token instead of its JWT", request{path: CertPath, body: csr, header: withToken(c.token(t).String(), "edge-1")}, 401, "edge.crt", "token_malformed", "malformed"},
		{"expired token", request{path: CertPath, body: csr, header: withToken(expired.JWT, "edge-1")}, 401, "edge.crt", "token_expired", "expired"},
		{"forged token", request{path: CertPath, body: csr, header: withToken(other.token(t).JWT, "edge-1")}, 401, "edge.crt", "token_forged", "not created by this cloudcore"},
		{"alg none", request{path: CertPath, body: csr, header: withToken(none, "edge-1")}, 401, "edge.crt", "token_algorithm", "HS256"},
		{"alg RS256", request{path: CertPath, body: csr, header: withToken(rs256, "edge-1")}, 401, "edge.crt", "token_algorithm", "HS256"},
		{"missing NodeName", request{path: CertPath, body: csr, header: withToken(good, "")}, 400, "edge.crt", "missing_node_name", "NodeName"},
		{"invalid NodeName", request{path: CertPath, body: csr, header: withToken(good, "Edge_1")}, 400, "edge.crt", "bad_node_name", "DNS-1123"},
		{"NodeName too long", request{path: CertPath, body: csr, header: withToken(good, strings.Repeat("a", 254))}, 400, "edge.crt", "bad_node_name", "at most 253"},
		{"empty body", request{path: CertPath, header: withToken(good, "edge-1")}, 400, "edge.crt", "bad_csr", "empty"},
		{"malformed CSR", request{path: CertPath, body: []byte("hello"), header: withToken(good, "edge-1")}, 400, "edge.crt", "bad_csr", "parse CSR"},
		{"PEM CSR", request{path: CertPath, body: pemCSR, header: withToken(good, "edge-1")}, 400, "edge.crt", "bad_csr", "DER"},
		{"CSR signature broken", request{path: CertPath, body: badSig, header: withToken(good, "edge-1")}, 400, "edge.crt", "bad_csr", "signature"},
		{"oversized body", request{path: CertPath, body: make([]byte, 5000), header: withToken(good, "edge-1")}, 413, "edge.crt", "body_too_large", "4096"},
		{"POST", request{method: http.MethodPost, path: CertPath, body: csr, header: withToken(good, "edge-1")}, 405, "edge.crt", "method_not_allowed", "only GET"},
		{"unknown path", request{path: "/secret"}, 404, "other", "not_found", "/ca.crt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := c.count(tt.endpoint, tt.result)
			status, body := c.do(t, c.client(), tt.req)
			if status != tt.status || !strings.Contains(string(body), tt.msg) {
				t.Fatalf("status %d, body %q; want %d mentioning %q", status, body, tt.status, tt.msg)
			}
			if got := c.count(tt.endpoint, tt.result); got != before+1 {
				t.Errorf("kedge_pki_requests_total{endpoint=%q,result=%q} went from %v to %v; want +1", tt.endpoint, tt.result, before, got)
			}
		})
	}
	if got := c.count("edge.crt", "issued"); got != 0 {
		t.Errorf("%v certificates issued for bad requests", got)
	}
}

func TestCertServerRenewsOnlyForTheClientCertificatesOwnNode(t *testing.T) {
	c := newCloud(t, CertServerOptions{})
	nodeA := nodePair(t, c.ca, "node-a", time.Hour)
	foreign := nodePair(t, newCloud(t, CertServerOptions{}).ca, "node-a", time.Hour)
	expired := nodePair(t, c.ca.WithClock(newFakeClock(time.Now().Add(-3*time.Hour))), "node-a", time.Hour)
	csr := newCSR(t, newKey(t), pkix.Name{CommonName: "system:node:node-b"})
	tests := []struct {
		name   string
		cert   tls.Certificate
		header map[string]string
		status int
		result string
		msg    string
	}{
		{"same node named", nodeA, map[string]string{NodeNameHeader: "node-a"}, 200, "renewed", ""},
		{"no NodeName header", nodeA, nil, 200, "renewed", ""},
		{"another node", nodeA, map[string]string{NodeNameHeader: "node-b"}, 403, "node_mismatch", `belongs to node "node-a"`},
		{"another node, with a valid token too", nodeA, map[string]string{NodeNameHeader: "node-b", "Authorization": "Bearer " + c.token(t).JWT}, 403, "node_mismatch", "node-b"},
		{"certificate from another CA", foreign, map[string]string{NodeNameHeader: "node-a"}, 401, "bad_client_cert", "client certificate not accepted"},
		{"expired certificate", expired, map[string]string{NodeNameHeader: "node-a"}, 401, "bad_client_cert", "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := c.count("edge.crt", tt.result)
			status, body := c.do(t, c.client(tt.cert), request{path: CertPath, body: csr, header: tt.header})
			if status != tt.status || !strings.Contains(string(body), tt.msg) {
				t.Fatalf("status %d, body %q; want %d mentioning %q", status, body, tt.status, tt.msg)
			}
			if got := c.count("edge.crt", tt.result); got != before+1 {
				t.Errorf("result %q counted %v times; want %v", tt.result, got, before+1)
			}
			if status != http.StatusOK {
				return
			}
			cert, err := x509.ParseCertificate(body)
			if err != nil {
				t.Fatal(err)
			}
			if cert.Subject.CommonName != "system:node:node-a" {
				t.Errorf("renewed certificate is for %q; want system:node:node-a", cert.Subject.CommonName)
			}
		})
	}
}
