package cloudhub

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/host/pki"
)

var nsSeq atomic.Int64

// caSecretNamespace creates a namespace named after prefix, unique within this test binary.
func caSecretNamespace(t *testing.T, prefix string) string {
	t.Helper()
	env := controlPlane(t)
	name := fmt.Sprintf("%s-%d", prefix, nsSeq.Add(1))
	if _, err := env.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return name
}

func withCASecret(ns string) func(*Module) {
	return func(m *Module) {
		m.CASecret = CASecret{Enable: true, Kubeconfig: k8s.Kubeconfig, Namespace: ns, Name: "kedge-ca"}
	}
}

func TestCASecretIsReusedByALaterStartOnAnotherDisk(t *testing.T) {
	ns := caSecretNamespace(t, "cloudhub-reuse")
	first := startCloud(t, withCASecret(ns))
	hash := first.hub.ca.Hash()
	tok, err := first.hub.CreateToken(context.Background(), pki.TokenOptions{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	first.stop()

	second := startCloud(t, withCASecret(ns)) // a fresh pkiDir: the disk was replaced
	if got := second.hub.ca.Hash(); got != hash {
		t.Fatalf("the second start has CA %s, want the first's %s", got, hash)
	}
	// A token of the first start joins a node through the second.
	if _, err := pki.Join(context.Background(), pki.JoinOptions{CertServer: second.hub.CertServerAddress, Token: tok.String(), NodeName: "edge-1", Dir: t.TempDir()}); err != nil {
		t.Fatalf("join with the first start's token: %v", err)
	}
	// Only the serving certificate is on disk.
	for name, want := range map[string]bool{pki.ServerCertName: true, pki.CACertName: false, pki.CAKeyName: false, pki.TokenSecretName: false} {
		_, err := os.Stat(filepath.Join(second.hub.PKIDir, name))
		if got := err == nil; got != want {
			t.Errorf("%s in pkiDir: present=%v, want %v", name, got, want)
		}
	}
}

func TestCASecretReplicasStartingTogetherShareOneCA(t *testing.T) {
	ns := caSecretNamespace(t, "cloudhub-replicas")
	hubs := make([]*cloud, 3)
	errs := make(chan error, len(hubs))
	for i := range hubs {
		go func() {
			var err error
			hubs[i], err = tryStartCloud(t, withCASecret(ns))
			errs <- err
		}()
	}
	for range hubs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range hubs {
		if c.hub.ca.Hash() != hubs[0].hub.ca.Hash() {
			t.Fatalf("replica %d has another CA", i)
		}
	}
	// A token one replica made is good at another.
	tok, err := hubs[1].hub.CreateToken(context.Background(), pki.TokenOptions{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.Join(context.Background(), pki.JoinOptions{CertServer: hubs[2].hub.CertServerAddress, Token: tok.String(), NodeName: "edge-1", Dir: t.TempDir()}); err != nil {
		t.Fatalf("a token of replica 1 refused by replica 2: %v", err)
	}
	// The records are shared too: replica 0 knows the token is used up and that edge-1 exists.
	_, err = pki.Join(context.Background(), pki.JoinOptions{CertServer: hubs[0].hub.CertServerAddress, Token: tok.String(), NodeName: "edge-2", Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "no uses left") {
		t.Fatalf("second use of a single-use token at another replica: %v; want refused, no uses left", err)
	}
	fresh, err := hubs[0].hub.CreateToken(context.Background(), pki.TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = pki.Join(context.Background(), pki.JoinOptions{CertServer: hubs[0].hub.CertServerAddress, Token: fresh.String(), NodeName: "edge-1", Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("join of edge-1 (joined at replica 2) at replica 0: %v; want 409", err)
	}
	secrets, err := k8s.Client.CoreV1().Secrets(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=kedge"})
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, s := range secrets.Items {
		types = append(types, string(s.Type))
	}
	slices.Sort(types)
	if want := []string{"Opaque", "kedge.io/join-token", "kedge.io/join-token", "kedge.io/node-certificates"}; !slices.Equal(types, want) {
		t.Errorf("Secrets in %s have types %v; want %v (the CA, two tokens, one node)", ns, types, want)
	}
}

func TestCASecretStartRefusals(t *testing.T) {
	ns := caSecretNamespace(t, "cloudhub-refusals")
	_, err := k8s.Client.CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "garbage"}, Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{pki.CACertName: []byte("garbage"), pki.CAKeyName: []byte("garbage")},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		secret CASecret
		wants  []string
	}{
		{"a Secret with garbage names it and the key", CASecret{Namespace: ns, Name: "garbage"}, []string{"Secret " + ns + "/garbage", "ca.crt", "damaged"}},
		{"a missing namespace is named", CASecret{Namespace: "nowhere", Name: "kedge-ca"}, []string{"Secret nowhere/kedge-ca", "create namespace nowhere"}},
		{"no name", CASecret{Namespace: ns}, []string{"caSecret: namespace and name must be set"}},
		{"a kubeconfig that does not exist", CASecret{Namespace: ns, Name: "x", Kubeconfig: "/nonexistent/kubeconfig"}, []string{"kubeconfig /nonexistent/kubeconfig"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tryStartCloud(t, func(m *Module) {
				m.CASecret = tc.secret
				m.CASecret.Enable = true
				if m.CASecret.Kubeconfig == "" {
					m.CASecret.Kubeconfig = k8s.Kubeconfig
				}
			})
			if err == nil {
				t.Fatal("cloudhub started")
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not say %q", err, w)
				}
			}
		})
	}
	sec, err := k8s.Client.CoreV1().Secrets(ns).Get(context.Background(), "garbage", metav1.GetOptions{})
	if err != nil || string(sec.Data[pki.CACertName]) != "garbage" || len(sec.Data) != 2 {
		t.Fatalf("the damaged Secret was changed (%v): %v", err, sec.Data)
	}
	if _, err := k8s.Client.CoreV1().Secrets("nowhere").Get(context.Background(), "kedge-ca", metav1.GetOptions{}); err == nil {
		t.Fatal("a Secret appeared in a namespace that does not exist")
	}
}
