package kubestore

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/test/k8senv"
)

// The control plane is started by the first test that needs it (most tests here do not), and
// stopped after the last.
var (
	k8sOnce sync.Once
	k8s     *k8senv.Env
	k8sErr  error
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if k8s != nil {
		_ = k8s.Stop()
	}
	os.Exit(code)
}

var nsSeq atomic.Int64

// secretNamespace starts the control plane if needed and returns a fresh namespace for the test.
func secretNamespace(t *testing.T) (*k8senv.Env, string) {
	t.Helper()
	if testing.Short() || os.Getenv("KEDGE_SKIP_K8S") != "" {
		t.Skip("needs the control plane (not with -short)")
	}
	k8sOnce.Do(func() { k8s, k8sErr = k8senv.Start() })
	if k8sErr != nil {
		t.Fatal("these tests need a control plane:", k8sErr)
	}
	ns := fmt.Sprintf("pki-%d", nsSeq.Add(1))
	if _, err := k8s.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return k8s, ns
}

func secretStorage(env *k8senv.Env, ns string) SecretStorage {
	return SecretStorage{Secrets: env.Client.CoreV1().Secrets(ns), Namespace: ns, Name: DefaultCASecretName}
}

func TestSecretStorageReplicasRacingToCreateTheCAAllEndWithTheSameOne(t *testing.T) {
	env, ns := secretNamespace(t)
	const replicas = 6
	var (
		wg      sync.WaitGroup
		hashes  [replicas]string
		created atomic.Int32
		errs    [replicas]error
	)
	for i := range replicas {
		wg.Go(func() {
			// Each replica its own storage value, as separate cloudcores have.
			ca, c, err := pki.LoadOrCreateCA(context.Background(), secretStorage(env, ns))
			if err != nil {
				errs[i] = err
				return
			}
			if c {
				created.Add(1)
			}
			hashes[i] = ca.Hash()
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
	for i := range hashes {
		if hashes[i] != hashes[0] {
			t.Fatalf("replicas ended with different CAs: %v", hashes)
		}
	}
	if created.Load() != 1 {
		t.Fatalf("%d replicas say they created the CA, want exactly 1", created.Load())
	}
	sec, err := env.Client.CoreV1().Secrets(ns).Get(context.Background(), DefaultCASecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sec.Type != corev1.SecretTypeOpaque {
		t.Fatalf("Secret type %q, want Opaque", sec.Type)
	}
	for _, k := range []string{pki.CACertName, pki.CAKeyName, pki.TokenSecretName} {
		if len(sec.Data[k]) == 0 {
			t.Fatalf("Secret has no %s (keys: %v)", k, keys(sec.Data))
		}
	}
	block, _ := pem.Decode(sec.Data[pki.CACertName])
	if block == nil || pki.HashCert(block.Bytes) != hashes[0] {
		t.Fatalf("the Secret's ca.crt is not the CA the replicas use")
	}
}

func TestSecretStorageReloadsTheSameCAAndTokenSecretLater(t *testing.T) {
	env, ns := secretNamespace(t)
	ctx := context.Background()
	first, created, err := pki.LoadOrCreateCA(ctx, secretStorage(env, ns))
	if err != nil || !created {
		t.Fatalf("first start: created=%v err=%v", created, err)
	}
	tok, err := testToken(t, first, pki.DefaultTokenTTL)
	if err != nil {
		t.Fatal(err)
	}
	again, created, err := pki.LoadOrCreateCA(ctx, secretStorage(env, ns))
	if err != nil || created {
		t.Fatalf("second start: created=%v err=%v", created, err)
	}
	if again.Hash() != first.Hash() {
		t.Fatal("the second start has another CA")
	}
	if err := again.VerifyJWT(tok.JWT); err != nil {
		t.Fatalf("a token of the first start is refused by the second: %v", err)
	}
}

func TestSecretStorageGivesAnImportedCAOneTokenSecretEvenWhenReplicasRace(t *testing.T) {
	env, ns := secretNamespace(t)
	ctx := context.Background()
	// A CA brought over from elsewhere: cert and key only.
	src := pki.FileStorage{Dir: t.TempDir()}
	orig, _, err := pki.LoadOrCreateCA(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := src.Read(ctx, pki.CAKeyName)
	if err := secretStorage(env, ns).Write(ctx, pki.Item{Name: pki.CAKeyName, Data: keyPEM}, pki.Item{Name: pki.CACertName, Data: orig.CertPEM()}); err != nil {
		t.Fatal(err)
	}
	const replicas = 4
	cas := make([]*pki.CA, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() {
			ca, _, err := pki.LoadOrCreateCA(ctx, secretStorage(env, ns))
			if err != nil {
				t.Error(err)
				return
			}
			cas[i] = ca
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	tok, err := testToken(t, cas[0], pki.DefaultTokenTTL)
	if err != nil {
		t.Fatal(err)
	}
	for i, ca := range cas {
		if ca.Hash() != orig.Hash() {
			t.Fatalf("replica %d does not use the imported CA", i)
		}
		if err := ca.VerifyJWT(tok.JWT); err != nil {
			t.Fatalf("replica %d refuses replica 0's token (different token secrets): %v", i, err)
		}
	}
}

func TestSecretStorageDamagedSecretIsAnErrorNamingSecretAndKeyAndIsNotOverwritten(t *testing.T) {
	env, _ := secretNamespace(t)
	ctx := context.Background()
	valid := func(t *testing.T) map[string][]byte {
		st := pki.FileStorage{Dir: t.TempDir()}
		if _, _, err := pki.LoadOrCreateCA(ctx, st); err != nil {
			t.Fatal(err)
		}
		out := map[string][]byte{}
		for _, k := range []string{pki.CACertName, pki.CAKeyName, pki.TokenSecretName} {
			out[k], _ = st.Read(ctx, k)
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		edit  func(map[string][]byte)
		key   string
		wants string
	}{
		{"garbage ca.crt", func(d map[string][]byte) { d[pki.CACertName] = []byte("not a certificate") }, pki.CACertName, "damaged"},
		{"empty ca.crt", func(d map[string][]byte) { d[pki.CACertName] = nil }, pki.CACertName, "damaged"},
		{"garbage ca.key", func(d map[string][]byte) { d[pki.CAKeyName] = []byte("\x00\x01garbage") }, pki.CAKeyName, "damaged"},
		{"ca.key of another CA", func(d map[string][]byte) { d[pki.CAKeyName] = valid(t)[pki.CAKeyName] }, pki.CAKeyName, "does not belong"},
		{"ca.key missing", func(d map[string][]byte) { delete(d, pki.CAKeyName) }, pki.CAKeyName, "cannot sign without its key"},
		{"ca.crt missing, ca.key present", func(d map[string][]byte) { delete(d, pki.CACertName) }, pki.CACertName, "does not"},
		{"garbage token.secret", func(d map[string][]byte) { d[pki.TokenSecretName] = []byte("zz not hex") }, pki.TokenSecretName, "damaged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ns := secretNamespace(t)
			data := valid(t)
			tc.edit(data)
			secrets := env.Client.CoreV1().Secrets(ns)
			before, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "shared-ca"}, Type: corev1.SecretTypeOpaque, Data: data}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			st := SecretStorage{Secrets: secrets, Namespace: ns, Name: "shared-ca"}
			_, _, err = pki.LoadOrCreateCA(ctx, st)
			if err == nil {
				t.Fatal("a damaged Secret was accepted")
			}
			for _, want := range []string{"Secret " + ns + "/shared-ca", tc.key, tc.wants} {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("error %q does not say %q", err, want)
				}
			}
			after, err := secrets.Get(ctx, "shared-ca", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if after.ResourceVersion != before.ResourceVersion || !sameData(after.Data, before.Data) {
				t.Fatalf("the damaged Secret was changed: keys %v -> %v", keys(before.Data), keys(after.Data))
			}
		})
	}
}

func TestSecretStorageWrite(t *testing.T) {
	env, ns := secretNamespace(t)
	ctx := context.Background()
	st := secretStorage(env, ns)
	if _, err := st.Read(ctx, pki.CACertName); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("reading from a missing Secret: %v, want fs.ErrNotExist", err)
	}
	if err := st.Write(ctx, pki.Item{Name: pki.ServerCertName, Data: []byte("a")}, pki.Item{Name: pki.TokenSecretName, Data: []byte("s1")}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		item    pki.Item
		wantErr error
		stored  string
	}{
		{"a missing key reads as not existing", pki.Item{Name: pki.CACertName}, fs.ErrNotExist, ""},
		{"the serving certificate is replaced", pki.Item{Name: pki.ServerCertName, Data: []byte("b")}, nil, "b"},
		{"the token secret is never replaced", pki.Item{Name: pki.TokenSecretName, Data: []byte("s2")}, fs.ErrExist, "s1"},
		{"writing the same token secret again is fine", pki.Item{Name: pki.TokenSecretName, Data: []byte("s1")}, nil, "s1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.item.Data != nil {
				err = st.Write(ctx, tc.item)
			} else {
				_, err = st.Read(ctx, tc.item.Name)
			}
			if !errors.Is(err, tc.wantErr) && (err != nil || tc.wantErr != nil) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
			if tc.stored != "" {
				got, err := st.Read(ctx, tc.item.Name)
				if err != nil || string(got) != tc.stored {
					t.Fatalf("stored %q (%v), want %q", got, err, tc.stored)
				}
			}
		})
	}
}

func TestSecretStorageInAMissingNamespaceSaysSo(t *testing.T) {
	env, _ := secretNamespace(t)
	st := secretStorage(env, "no-such-ns")
	st.Secrets = env.Client.CoreV1().Secrets("no-such-ns")
	_, _, err := pki.LoadOrCreateCA(context.Background(), st)
	if err == nil || !strings.Contains(err.Error(), "create namespace no-such-ns") {
		t.Fatalf("got %v, want an error saying to create the namespace", err)
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func sameData(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !bytes.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func TestSecretRecordsConcurrentUpdatesAreNeverLost(t *testing.T) {
	env, ns := secretNamespace(t)
	ctx := context.Background()
	recs := SecretRecords{Secrets: env.Client.CoreV1().Secrets(ns), Namespace: ns}
	const writers = 6
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Go(func() {
			errs <- recs.Update(ctx, pki.KindToken, "counter", func(old []byte) ([]byte, error) {
				return append(bytes.Clone(old), 'x'), nil
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := recs.Get(ctx, pki.KindToken, "counter")
	if err != nil || string(got) != strings.Repeat("x", writers) {
		t.Fatalf("record %q (err %v); want %d updates", got, err, writers)
	}
	all, err := recs.List(ctx, pki.KindToken)
	if err != nil || len(all) != 1 || string(all["counter"]) != string(got) {
		t.Fatalf("List = %v (err %v)", all, err)
	}
	if nodes, err := recs.List(ctx, pki.KindNode); err != nil || len(nodes) != 0 {
		t.Fatalf("node records %v (err %v); want none", nodes, err)
	}
	if err := recs.Update(ctx, pki.KindToken, "counter", func([]byte) ([]byte, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := recs.Get(ctx, pki.KindToken, "counter"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after delete: %v; want fs.ErrNotExist", err)
	}
}

func TestSecretRecordsRefuseASecondJoinAcrossCertServers(t *testing.T) {
	env, ns := secretNamespace(t)
	ctx := context.Background()
	recs := SecretRecords{Secrets: env.Client.CoreV1().Secrets(ns), Namespace: ns}
	// Two certificate servers (two cloudcore replicas) with one CA, the records in Secrets.
	st := pki.FileStorage{Dir: t.TempDir()}
	ca, _, err := pki.LoadOrCreateCA(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	server, err := pki.NewServerCert(ctx, ca, st, pki.ServerCertOptions{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for range 2 {
		certs, err := pki.NewCertServer(pki.CertServerOptions{CA: ca, Records: recs, Registerer: prometheus.NewRegistry(), Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: certs, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(tls.NewListener(ln, pki.CertServerTLSConfig(server))) }()
		t.Cleanup(func() { _ = srv.Close() })
		addrs = append(addrs, ln.Addr().String())
	}
	join := func(addr string, tok pki.Token) error {
		_, err := pki.Join(ctx, pki.JoinOptions{CertServer: addr, Token: tok.String(), NodeName: "edge-1", Dir: t.TempDir()})
		return err
	}
	tok, _, err := pki.CreateToken(ctx, ca, recs, pki.TokenOptions{Node: "edge-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := join(addrs[0], tok); err != nil {
		t.Fatalf("first join: %v", err)
	}
	if err := join(addrs[1], tok); err == nil || !strings.Contains(err.Error(), "no uses left") {
		t.Fatalf("second join with the token at the other server: %v; want a refusal saying no uses left", err)
	}
	fresh, _, err := pki.CreateToken(ctx, ca, recs, pki.TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := join(addrs[1], fresh); err == nil || !strings.Contains(err.Error(), "holds certificate") {
		t.Fatalf("join for edge-1 again at the other server: %v; want a refusal saying it holds a certificate", err)
	}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testToken makes a join token from ca valid for ttl, recorded in a records folder of its own.
func testToken(tb testing.TB, ca *pki.CA, ttl time.Duration) (pki.Token, error) {
	tok, _, err := pki.CreateToken(context.Background(), ca, pki.FileRecords{Dir: tb.TempDir()}, pki.TokenOptions{TTL: ttl})
	return tok, err
}
