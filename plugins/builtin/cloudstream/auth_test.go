package cloudstream

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/test/k8senv"
)

// syncLog collects log text for assertions.
type syncLog struct {
	ch chan string
}

func (l *syncLog) Write(p []byte) (int, error) { l.ch <- string(p); return len(p), nil }

// The stream server never starts without client authentication: no clientCAFile is a start error
// naming what to set, unless the development-only insecureAllowUnauthenticated is on — which is
// logged at ERROR and shown by a gauge. Bad client-auth settings are clear errors too.
func TestStartRefusesAStreamServerWithoutClientAuthenticationUnlessInsecureIsNamed(t *testing.T) {
	env, err := k8senv.Start()
	if err != nil {
		t.Skipf("no control plane: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	dir := t.TempDir()
	if _, _, err := pki.LoadOrCreateCA(context.Background(), pki.FileStorage{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	kc, err := k8senv.NewKubeletClient(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		set       func(m *Module)
		wantErr   []string // empty: starts
		wantGauge float64
	}{
		{"no clientCAFile is refused, naming both settings", func(m *Module) {},
			[]string{"clientCAFile: no client authentication", "insecureAllowUnauthenticated: true"}, 0},
		{"an unreadable clientCAFile", func(m *Module) { m.ClientCAFile = filepath.Join(dir, "nope.crt") },
			[]string{"modules.cloudstream.clientCAFile", "nope.crt"}, 0},
		{"a clientCAFile without a certificate", func(m *Module) { m.ClientCAFile = notPEM }, []string{notPEM, "no PEM certificate"}, 0},
		{"an empty allowed name", func(m *Module) { m.ClientCAFile, m.ClientAllowedNames = kc.CAFile, []string{"a", ""} },
			[]string{"clientAllowedNames[1]: is empty"}, 0},
		{"clientCAFile starts", func(m *Module) { m.ClientCAFile = kc.CAFile }, nil, 0},
		{"insecure with clientCAFile still requires certificates", func(m *Module) { m.ClientCAFile, m.InsecureAllowUnauthenticated = kc.CAFile, true }, nil, 0},
		{"insecureAllowUnauthenticated starts, loudly", func(m *Module) { m.InsecureAllowUnauthenticated = true }, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New()
			m.StreamAddress, m.TunnelAddress, m.PKIDir = "127.0.0.1:0", "127.0.0.1:0", dir
			tt.set(m)
			SetClient(m, env.Client)
			logs := &syncLog{ch: make(chan string, 100)}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			reg := prometheus.NewRegistry()
			err := m.Start(ctx, &testHost{reg: reg, log: logs})
			if len(tt.wantErr) > 0 {
				if err == nil {
					_ = m.Stop(ctx)
					t.Fatal("Start succeeded")
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Fatalf("Start: %v; want it to say %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			defer func() { _ = m.Stop(context.Background()) }()
			if g := testutil.ToFloat64(m.metrics.insecure); g != tt.wantGauge {
				t.Fatalf("kedge_cloudstream_insecure_unauthenticated = %v, want %v", g, tt.wantGauge)
			}
			var errorLine string
			for len(logs.ch) > 0 {
				if l := <-logs.ch; strings.Contains(l, "level=ERROR") {
					errorLine = l
				}
			}
			if (tt.wantGauge == 1) != strings.Contains(errorLine, "INSECURE") {
				t.Fatalf("ERROR line %q; want one saying INSECURE only in insecure mode", errorLine)
			}
			// Without a client certificate: served (404 for a missing pod) only in insecure mode.
			client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
			resp, err := client.Get("https://" + m.StreamAddress + "/containerLogs/default/nope/c")
			if tt.wantGauge == 1 {
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusNotFound {
					t.Fatalf("insecure: %d, want 404 for a missing pod", resp.StatusCode)
				}
				return
			}
			if err == nil {
				resp.Body.Close()
				t.Fatalf("a client without a certificate got %d", resp.StatusCode)
			}
		})
	}
}

// With clientAllowedNames, a certificate of clientCAFile with another common name (a kubelet's
// certificate from kubeadm's shared cluster CA) gets 403 and is counted; the API server's passes.
func TestClientAllowedNamesRefusesOtherCertificatesOfTheClientCA(t *testing.T) {
	env, err := k8senv.Start()
	if err != nil {
		t.Skipf("no control plane: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	dir := t.TempDir()
	ca, _, err := pki.LoadOrCreateCA(context.Background(), pki.FileStorage{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// The client CA plays kubeadm's cluster CA: it signs the API server's kubelet client
	// certificate and every node's client certificate.
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cluster-ca"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	caCert, _ := x509.ParseCertificate(caDER)
	caFile := filepath.Join(t.TempDir(), "cluster-ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	issue := func(cn string) tls.Certificate {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	m := New()
	m.StreamAddress, m.TunnelAddress, m.PKIDir = "127.0.0.1:0", "127.0.0.1:0", dir
	m.ClientCAFile, m.ClientAllowedNames = caFile, []string{"kube-apiserver-kubelet-client"}
	SetClient(m, env.Client)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := m.Start(ctx, &testHost{reg: prometheus.NewRegistry()}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Stop(context.Background()) }()
	get := func(cert tls.Certificate) (int, string) {
		client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}}}}
		resp, err := client.Get("https://" + m.StreamAddress + "/containerLogs/default/nope/c")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(issue("system:node:edge-a")); code != http.StatusForbidden || !strings.Contains(body, `"system:node:edge-a" is not in clientAllowedNames`) {
		t.Fatalf("a node's certificate: %d %q, want 403", code, body)
	}
	if n := testutil.ToFloat64(m.metrics.streamRefused.WithLabelValues("name_not_allowed")); n != 1 {
		t.Fatalf("stream_refused_total{reason=name_not_allowed} = %v", n)
	}
	if code, body := get(issue("kube-apiserver-kubelet-client")); code != http.StatusNotFound || !strings.Contains(body, "pod default/nope not found") {
		t.Fatalf("the API server's certificate: %d %q, want past authentication to the pod lookup (404)", code, body)
	}
}
