package console

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/host/pki/kubestore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestLoginLimiterCountsEachClientAddressApart(t *testing.T) {
	l := newLoginLimiter(6, 2) // 2 at once, then one every 10 s
	now := time.Unix(1_000_000, 0)
	for i, tc := range []struct {
		addr string
		at   time.Duration
		ok   bool
		wait time.Duration // when refused: at least this long to wait
	}{
		{"10.0.0.1:5000", 0, true, 0},
		{"10.0.0.1:5001", 0, true, 0}, // another port, same client
		{"10.0.0.1:5002", 0, false, 9 * time.Second},
		{"10.0.0.2:5000", 0, true, 0}, // another client has its own attempts
		{"10.0.0.1:5003", 10 * time.Second, true, 0},
		{"10.0.0.1:5004", 10 * time.Second, false, 9 * time.Second},
		{"[::1]:80", 0, true, 0},
	} {
		wait, ok := l.allow(tc.addr, now.Add(tc.at))
		if ok != tc.ok || (!ok && wait < tc.wait) {
			t.Errorf("attempt %d from %s at +%v: allowed=%v wait=%v, want allowed=%v wait>=%v", i, tc.addr, tc.at, ok, wait, tc.ok, tc.wait)
		}
	}
}

// TestLoginsBeyondTheRateGet429WithRetryAfter: a client posting the login form more often than
// loginBurst at once gets 429 with a Retry-After in seconds and the reason on the login page; the
// attempts are refused before the token is looked at, and another client still logs in.
func TestLoginsBeyondTheRateGet429WithRetryAfter(t *testing.T) {
	needEnv(t)
	m := startConsole(t, func(m *Module) { m.LoginRate, m.LoginBurst = 1, 3 })
	c := httpsClient(t, caPool(t, m.PKIDir))
	codes := []int{}
	var last *http.Response
	var body string
	for range 4 {
		res, err := c.PostForm(m.URL()+"login", url.Values{"token": {"not-a-token"}})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		codes = append(codes, res.StatusCode)
		last, body = res, string(b)
	}
	if fmt.Sprint(codes) != "[403 403 403 429]" { // three refused by the CSRF check, the fourth by the rate
		t.Fatalf("login answers %v, want [403 403 403 429]", codes)
	}
	ra, err := strconv.Atoi(last.Header.Get("Retry-After"))
	if err != nil || ra < 1 || ra > 60 {
		t.Fatalf("Retry-After %q, want whole seconds from 1 to 60", last.Header.Get("Retry-After"))
	}
	if !strings.Contains(body, "Too many login attempts") {
		t.Fatalf("the 429 page does not say why: %s", body)
	}
	// the limit is per client: this test's clients all come from 127.0.0.1, so another address is
	// what the limiter sees as another client
	if _, ok := m.limiter.allow("127.0.0.2:1", time.Now()); !ok {
		t.Fatal("another client address is limited by this one's attempts")
	}
}

// TestConsoleServesACertificateOfTheCAInCaSecret: with caSecret enabled the console's serving
// certificate is issued by the CA kept in the Secret (as cloudhub keeps it for several replicas),
// and pkiDir holds no CA.
func TestConsoleServesACertificateOfTheCAInCaSecret(t *testing.T) {
	needEnv(t)
	ctx := context.Background()
	ns := uniq("console-ca")
	if _, err := env.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	st := kubestore.SecretStorage{Secrets: env.Client.CoreV1().Secrets(ns), Namespace: ns, Name: "kedge-ca"}
	ca, _, err := pki.LoadOrCreateCA(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	m := New()
	m.Address, m.PKIDir = "127.0.0.1:0", t.TempDir()
	m.CASecret = CASecret{Enable: true, Namespace: ns, Name: "kedge-ca"}
	d := dyn(t)
	SetClients(m, env.Client, d)
	cctx, cancel := context.WithCancel(ctx)
	if err := m.Start(cctx, testHost{log: discard(), reg: newRegistry()}); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = m.Stop(context.Background()) })
	conn, err := tls.Dial("tcp", m.Address, &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("the console's certificate is not from the CA in the Secret: %v", err)
	}
	conn.Close()
	if _, err := pki.LoadCA(ctx, pki.FileStorage{Dir: m.PKIDir}); err == nil {
		t.Fatal("pkiDir holds a CA although caSecret is enabled")
	}
	// a Secret that does not exist: Start fails naming it
	m2 := New()
	m2.Address, m2.PKIDir = "127.0.0.1:0", t.TempDir()
	m2.CASecret = CASecret{Enable: true, Namespace: ns, Name: "missing"}
	SetClients(m2, env.Client, d)
	err = m2.Start(cctx, testHost{log: discard(), reg: newRegistry()})
	if err == nil || !strings.Contains(err.Error(), "Secret "+ns+"/missing") {
		t.Fatalf("Start with a missing CA Secret: %v, want an error naming Secret %s/missing", err, ns)
	}
}
