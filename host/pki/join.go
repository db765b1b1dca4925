package pki

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Names of the files Join writes into JoinOptions.Dir and the Renewer keeps fresh.
const (
	NodeCAFile   = "ca.crt"   // the cloud's CA, PEM
	NodeCertFile = "node.crt" // this node's client certificate, PEM
	NodeKeyFile  = "node.key" // its private key, PEM (SEC 1), mode 0600
)

const (
	requestTimeout  = 30 * time.Second
	maxResponseBody = 64 << 10
)

// JoinOptions says where to join and where to keep the result.
type JoinOptions struct {
	CertServer string    // host:port of cloudcore's certificate server, e.g. "cloud.example.com:10002"
	Token      string    // as printed by 'cloudcore token create'
	NodeName   string    // a DNS-1123 subdomain
	Dir        string    // receives ca.crt, node.crt and node.key; created with mode 0700
	Progress   io.Writer // one line per step; nil: silent
}

// JoinResult tells where Join put the node's credentials.
type JoinResult struct {
	CAFile, CertFile, KeyFile string
	Cert                      *x509.Certificate
}

// Join makes this node known to the cloud, as KubeEdge's edgecore does on first start:
//  1. fetch GET /ca.crt without trusting anyone yet, and check that its SHA-256 is the token's
//     first part (a mismatch means another cloudcore, or someone in between: stop);
//  2. generate an ECDSA P-256 key and a CSR, and send it to GET /edge.crt over TLS verified
//     against that CA, with the token's JWT as a bearer token and the node name in a NodeName header;
//  3. store ca.crt, node.key and node.crt in Dir.
func Join(ctx context.Context, opts JoinOptions) (*JoinResult, error) {
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	host, _, err := net.SplitHostPort(opts.CertServer)
	if err != nil {
		return nil, fmt.Errorf("certificate server address %q: want host:port (%v)", opts.CertServer, err)
	}
	if opts.Dir == "" {
		return nil, errors.New("no directory given for the node's certificates")
	}
	if err := CheckNodeName(opts.NodeName); err != nil {
		return nil, err
	}
	token, err := ParseToken(opts.Token)
	if err != nil {
		return nil, err
	}

	caURL := "https://" + opts.CertServer + CAPath
	caDER, err := fetchCA(ctx, caURL)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "fetched CA from %s\n", caURL)
	if got := HashCert(caDER); got != token.CAHash {
		return nil, fmt.Errorf("CA hash mismatch: the token expects a CA with SHA-256 %s but %s sent %s; the token is for another cloudcore, or someone is intercepting the connection: refusing to join", token.CAHash, opts.CertServer, got)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("the CA from %s: %w", caURL, err)
	}
	fmt.Fprintf(progress, "CA hash matches token (sha256 %s)\n", token.CAHash)

	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	client := newHTTPClient(&tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: host})
	cert, key, err := requestNodeCert(ctx, client, opts.CertServer, opts.NodeName, token.JWT, caCert)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "certificate issued for %s, valid until %s\n", cert.Subject.CommonName, cert.NotAfter.UTC().Format(time.RFC3339))

	res := &JoinResult{
		CAFile:   filepath.Join(opts.Dir, NodeCAFile),
		CertFile: filepath.Join(opts.Dir, NodeCertFile),
		KeyFile:  filepath.Join(opts.Dir, NodeKeyFile),
		Cert:     cert,
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", opts.Dir, err)
	}
	if err := writeFileAtomic(res.CAFile, encodeCert(caDER), 0o600); err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "wrote %s\n", res.CAFile)
	if err := storeKeyPair(res.CertFile, res.KeyFile, cert, key); err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "wrote %s\nwrote %s\n", res.KeyFile, res.CertFile)
	return res, nil
}

func newHTTPClient(conf *tls.Config) *http.Client {
	return &http.Client{
		Timeout: requestTimeout,
		Transport: &http.Transport{
			TLSClientConfig:     conf,
			TLSHandshakeTimeout: 10 * time.Second,
			DisableKeepAlives:   true, // a handful of requests, hours apart
		},
	}
}

// fetchCA gets the CA certificate's DER bytes. Nothing is trusted yet, so the server's certificate
// is not checked here; the caller checks the CA against the token's hash before using it.
func fetchCA(ctx context.Context, url string) ([]byte, error) {
	client := newHTTPClient(&tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch CA from %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch CA from %s: %w (is cloudcore running there, and are the address and port right?)", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return nil, fmt.Errorf("fetch CA from %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch CA from %s: %s: %s", url, resp.Status, firstLine(body))
	}
	if _, err := x509.ParseCertificate(body); err != nil {
		return nil, fmt.Errorf("fetch CA from %s: the answer is not a DER certificate (%v); is this a cloudcore certificate server?", url, err)
	}
	return body, nil
}

// requestNodeCert makes a key and a CSR and has the certificate server sign it. bearer is the
// token's JWT for a first join; empty for a renewal, where the client certificate authenticates.
func requestNodeCert(ctx context.Context, client *http.Client, certServer, node, bearer string, ca *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate node key: %w", err)
	}
	// Kedge ignores the CSR's subject, but a KubeEdge cloudcore copies it into the certificate.
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: NodeCNPrefix + node, Organization: []string{NodesOrg}},
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CSR: %w", err)
	}
	url := "https://" + certServer + CertPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, bytes.NewReader(csr))
	if err != nil {
		return nil, nil, fmt.Errorf("request certificate from %s: %w", url, err)
	}
	req.Header.Set(NodeNameHeader, node)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := client.Do(req)
	if err != nil {
		if _, ok := errors.AsType[x509.HostnameError](err); ok {
			return nil, nil, fmt.Errorf("request certificate from %s: %w (add this address to the names of cloudcore's server certificate)", url, err)
		}
		return nil, nil, fmt.Errorf("request certificate from %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return nil, nil, fmt.Errorf("request certificate from %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("certificate server %s refused: %s: %s", certServer, resp.Status, firstLine(body))
	}
	cert, err := x509.ParseCertificate(body)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate from %s: not a DER certificate: %w", url, err)
	}
	switch {
	case cert.CheckSignatureFrom(ca) != nil:
		return nil, nil, fmt.Errorf("certificate from %s is not signed by the cloud's CA", url)
	case !key.PublicKey.Equal(cert.PublicKey):
		return nil, nil, fmt.Errorf("certificate from %s is not for the key this node sent", url)
	case cert.Subject.CommonName != NodeCNPrefix+node:
		return nil, nil, fmt.Errorf("certificate from %s is for %q, not %q", url, cert.Subject.CommonName, NodeCNPrefix+node)
	}
	return cert, key, nil
}

// storeKeyPair replaces a certificate and its key so that a crash at any point leaves either a
// matching pair or one loadKeyPair completes: the new key goes to <key>.next, then the new
// certificate replaces the old, then <key>.next is renamed over the key.
func storeKeyPair(certFile, keyFile string, cert *x509.Certificate, key *ecdsa.PrivateKey) error {
	keyPEM, err := encodeKey(key)
	if err != nil {
		return err
	}
	next := keyFile + ".next"
	if err := writeFileAtomic(next, keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeFileAtomic(certFile, encodeCert(cert.Raw), 0o600); err != nil {
		return err
	}
	if err := os.Rename(next, keyFile); err != nil {
		return fmt.Errorf("replace %s: %w", keyFile, err)
	}
	if d, err := os.Open(filepath.Dir(keyFile)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// loadKeyPair loads what storeKeyPair wrote, finishing a replacement a crash interrupted.
func loadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err == nil {
		return &pair, nil
	}
	next := keyFile + ".next"
	if alt, aerr := tls.LoadX509KeyPair(certFile, next); aerr == nil {
		if rerr := os.Rename(next, keyFile); rerr == nil {
			return &alt, nil
		}
	}
	return nil, fmt.Errorf("load node certificate %s and key %s: %w (join again with 'edgecore join')", certFile, keyFile, err)
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
