package cloudstream

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/host/pki/kubestore"
	"github.com/kedge-io/kedge/test/k8senv"
)

// cloudstream uses the CA cloudhub made — from pkiDir, or from the Secret of caSecret — and never
// makes one of its own: a second CA would leave every node certificate untrusted by the tunnel.
func TestStartUsesCloudhubsCAFromPKIDirOrSecretAndNeverCreatesOne(t *testing.T) {
	env, err := k8senv.Start()
	if err != nil {
		t.Skipf("no control plane: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx := context.Background()
	if _, err := env.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kedge-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	secretCA, _, err := pki.LoadOrCreateCA(ctx, kubestore.SecretStorage{Secrets: env.Client.CoreV1().Secrets("kedge-system"), Namespace: "kedge-system", Name: "kedge-ca"})
	if err != nil {
		t.Fatal(err)
	}
	withFileCA := t.TempDir()
	fileCA, _, err := pki.LoadOrCreateCA(ctx, pki.FileStorage{Dir: withFileCA})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		pkiDir  string
		secret  CASecret
		wantCA  *pki.CA // nil: Start must fail with wantErr
		wantErr string
	}{
		{"the CA in pkiDir", withFileCA, CASecret{}, fileCA, ""},
		{"the CA in cloudhub's Secret", t.TempDir(), CASecret{Enable: true, Namespace: "kedge-system", Name: "kedge-ca"}, secretCA, ""},
		{"an empty pkiDir is refused, no CA made", t.TempDir(), CASecret{}, nil, "no CA in"},
		{"a missing Secret is refused, none made", t.TempDir(), CASecret{Enable: true, Namespace: "kedge-system", Name: "nope"}, nil, "no CA in"},
		{"caSecret without a name is refused", t.TempDir(), CASecret{Enable: true, Namespace: "kedge-system"}, nil, "caSecret.name: must be set when caSecret is enabled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New()
			m.StreamAddress, m.TunnelAddress, m.PKIDir, m.CASecret = "127.0.0.1:0", "127.0.0.1:0", tt.pkiDir, tt.secret
			m.ClientCAFile = filepath.Join(withFileCA, pki.CACertName) // any CA: the stream server is not called here
			SetClient(m, env.Client)
			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			err := m.Start(sctx, &testHost{reg: prometheus.NewRegistry()})
			if tt.wantCA == nil {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Start: %v; want an error containing %q", err, tt.wantErr)
				}
				if _, serr := os.Stat(filepath.Join(tt.pkiDir, pki.CACertName)); serr == nil {
					t.Fatal("a CA was created in pkiDir")
				}
				if _, gerr := env.Client.CoreV1().Secrets("kedge-system").Get(ctx, "nope", metav1.GetOptions{}); gerr == nil {
					t.Fatal("a Secret was created")
				}
				return
			}
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			defer func() { cancel(); _ = m.Stop(ctx) }()
			// The tunnel's serving certificate chains to the expected CA.
			conn, err := tls.Dial("tcp", m.TunnelAddress, &tls.Config{RootCAs: tt.wantCA.Pool(), ServerName: "127.0.0.1"})
			if err != nil {
				t.Fatalf("tunnel certificate not from the expected CA: %v", err)
			}
			_ = conn.Close()
		})
	}
}
