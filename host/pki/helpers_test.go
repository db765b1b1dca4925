package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// cloud is a real cloud side for tests: a CA in a temp dir and a certificate server over TLS on
// 127.0.0.1.
type cloud struct {
	ca     *CA
	st     FileStorage
	recs   FileRecords
	server *ServerCert
	certs  *CertServer
	reg    *prometheus.Registry
	addr   string // host:port of the certificate server
}

func newCloud(t *testing.T, opts CertServerOptions) *cloud {
	t.Helper()
	return newCloudWithClock(t, opts, nil)
}

// newCloudWithClock is newCloud with the CA reading the time from clock (nil: the system clock).
func newCloudWithClock(t *testing.T, opts CertServerOptions, clock Clock) *cloud {
	t.Helper()
	c := &cloud{st: FileStorage{Dir: t.TempDir()}, reg: prometheus.NewRegistry()}
	ctx := context.Background()
	var err error
	if c.ca, _, err = LoadOrCreateCA(ctx, c.st); err != nil {
		t.Fatal(err)
	}
	c.ca = c.ca.WithClock(clock)
	if c.server, err = NewServerCert(ctx, c.ca, c.st, ServerCertOptions{Logger: quietLogger()}); err != nil {
		t.Fatal(err)
	}
	c.recs = FileRecords{Dir: c.st.Dir}
	if opts.Records == nil {
		opts.Records = c.recs
	}
	opts.CA, opts.Registerer, opts.Logger = c.ca, c.reg, quietLogger()
	if c.certs, err = NewCertServer(opts); err != nil {
		t.Fatal(err)
	}
	c.addr = serveTLS(t, c.certs, CertServerTLSConfig(c.server))
	return c
}

// serveTLS serves h over TLS on a loopback port until the test ends and returns the address.
func serveTLS(t *testing.T, h http.Handler, conf *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: nil}
	go func() { _ = srv.Serve(tls.NewListener(ln, conf)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// token makes a single-use join token from c's CA, recorded where c's certificate server looks.
func (c *cloud) token(t *testing.T) Token {
	t.Helper()
	return c.tokenWith(t, TokenOptions{TTL: time.Hour})
}

// tokenWith makes a join token with opts, recorded where c's certificate server looks.
func (c *cloud) tokenWith(t *testing.T, opts TokenOptions) Token {
	t.Helper()
	tok, _, err := CreateToken(context.Background(), c.ca, c.recs, opts)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// testToken makes a join token from ca valid for ttl, recorded in a records folder of its own: for
// tests of the JWT alone.
func testToken(tb testing.TB, ca *CA, ttl time.Duration) (Token, error) {
	tok, _, err := CreateToken(context.Background(), ca, FileRecords{Dir: tb.TempDir()}, TokenOptions{TTL: ttl})
	return tok, err
}

// join runs Join for node into a temp dir.
func (c *cloud) join(t *testing.T, node string) *JoinResult {
	t.Helper()
	res, err := Join(context.Background(), JoinOptions{CertServer: c.addr, Token: c.token(t).String(), NodeName: node, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func newCSR(t testing.TB, key *ecdsa.PrivateKey, subject pkix.Name) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// nodePair issues a node certificate from ca and returns it as a TLS client certificate.
func nodePair(t *testing.T, ca *CA, node string, validity time.Duration) tls.Certificate {
	t.Helper()
	key := newKey(t)
	cert, err := ca.IssueNodeCert(key.Public(), node, validity)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// fakeClock moves only when told to. After's channels fire when Set passes their time.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(now time.Time) *fakeClock { return &fakeClock{now: now} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, fakeWaiter{c.now.Add(d), ch})
	return ch
}

// Set moves the clock to now and fires the waiters that are due.
func (c *fakeClock) Set(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = now
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(now) {
			w.ch <- now
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

// waitForWaiter blocks until someone waits on the clock and returns when that wait ends.
func (c *fakeClock) waitForWaiter(t *testing.T) time.Time {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		if len(c.waiters) > 0 {
			at := c.waiters[0].at
			c.mu.Unlock()
			return at
		}
		c.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	t.Fatal("nobody waited on the fake clock within 10s")
	return time.Time{}
}

// eventually polls cond until it holds; the deadline only bounds a failure.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within 10s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// errorContains reports whether err is non-nil and its message contains want.
func errorContains(err error, want string) bool {
	return err != nil && strings.Contains(err.Error(), want)
}
