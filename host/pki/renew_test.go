package pki

import (
	"context"
	"crypto/tls"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

func newTestRenewer(t *testing.T, certServer string, res *JoinResult, clock Clock) *Renewer {
	t.Helper()
	r, err := NewRenewer(RenewerOptions{
		CertServer: certServer, CAFile: res.CAFile, CertFile: res.CertFile, KeyFile: res.KeyFile,
		Clock: clock, Jitter: func() float64 { return 0.5 }, Logger: quietLogger(),
		MinBackoff: 2 * time.Second, MaxBackoff: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func runRenewer(t *testing.T, r *Renewer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func TestRenewerRenewsAtTheJitteredPointAndNewHandshakesUseTheNewCertificate(t *testing.T) {
	// Cloud and edge share the fake clock, so certificates are dated in its time.
	clock := newFakeClock(time.Now())
	c := newCloudWithClock(t, CertServerOptions{Validity: 100 * time.Hour}, clock)
	res := c.join(t, "edge-1")
	r := newTestRenewer(t, c.addr, res, clock)
	old := r.Certificate()
	life := old.Leaf.NotAfter.Sub(old.Leaf.NotBefore)
	due := old.Leaf.NotBefore.Add(life * 8 / 10) // jitter 0.5: 70% + 0.5·20%
	if got := r.NextRenewal(); !got.Equal(due) {
		t.Fatalf("next renewal %s; want 80%% of the lifetime, %s", got, due)
	}
	runRenewer(t, r)

	if at := clock.waitForWaiter(t); !at.Equal(due) {
		t.Fatalf("Run waits until %s; want %s", at, due)
	}
	clock.Set(due.Add(-time.Second))
	if clock.waitForWaiter(t); r.Certificate() != old {
		t.Fatal("renewed before the renewal point")
	}
	clock.Set(due)
	eventually(t, "renewal", func() bool { return r.Certificate() != old })

	renewed := r.Certificate()
	if renewed.Leaf.SerialNumber.Cmp(old.Leaf.SerialNumber) == 0 {
		t.Fatal("same serial after renewal")
	}
	if got, _ := r.GetClientCertificate(nil); got != renewed {
		t.Error("GetClientCertificate does not return the renewed certificate")
	}
	onDisk, err := tls.LoadX509KeyPair(res.CertFile, res.KeyFile)
	if err != nil || !onDisk.Leaf.Equal(renewed.Leaf) {
		t.Errorf("files on disk do not hold the renewed pair (err %v)", err)
	}
	conf := r.ClientTLSConfig()
	peer, err := handshakeWith(t, c.ca, c.server, conf)
	if err != nil {
		t.Fatal(err)
	}
	if peer.SerialNumber.Cmp(renewed.Leaf.SerialNumber) != 0 {
		t.Error("a handshake after renewal presented the old certificate")
	}
	if got := c.count("edge.crt", "renewed"); got != 1 {
		t.Errorf("renewed counted %v times; want 1", got)
	}
	// The next renewal is planned from the new certificate.
	next := renewed.Leaf.NotBefore.Add(renewed.Leaf.NotAfter.Sub(renewed.Leaf.NotBefore) * 8 / 10)
	if at := clock.waitForWaiter(t); !at.Equal(next) || !r.NextRenewal().Equal(next) {
		t.Errorf("next renewal at %s (NextRenewal %s); want %s", at, r.NextRenewal(), next)
	}
}

func TestRenewerRetriesWithGrowingBackoffUntilTheServerAnswers(t *testing.T) {
	clock := newFakeClock(time.Now())
	c := newCloudWithClock(t, CertServerOptions{Validity: 100 * time.Hour}, clock)
	res := c.join(t, "edge-1")
	var failures atomic.Int32
	failures.Store(2)
	flaky := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == CertPath && failures.Add(-1) >= 0 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		c.certs.ServeHTTP(w, req)
	})
	addr := serveTLS(t, flaky, CertServerTLSConfig(c.server))
	r := newTestRenewer(t, addr, res, clock)
	old := r.Certificate()
	runRenewer(t, r)

	clock.Set(clock.waitForWaiter(t))
	// Each wait is half fixed, half random: [1s, 2s] after the first failure, [2s, 4s] after the second.
	for i, bounds := range [][2]time.Duration{{time.Second, 2 * time.Second}, {2 * time.Second, 4 * time.Second}} {
		at := clock.waitForWaiter(t)
		if wait := at.Sub(clock.Now()); wait < bounds[0] || wait > bounds[1] {
			t.Fatalf("wait after failure %d is %s; want within %v", i+1, wait, bounds)
		}
		if r.Certificate() != old {
			t.Fatal("certificate changed although the server refused")
		}
		clock.Set(at)
	}
	eventually(t, "renewal after two failures", func() bool { return r.Certificate() != old })
}

func TestRenewalTimeIsBetween70And90PercentOfTheLifetime(t *testing.T) {
	c := newCloud(t, CertServerOptions{})
	leaf := nodePair(t, c.ca, "edge-1", 1000*time.Hour).Leaf
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	for _, tt := range []struct {
		jitter, want float64
	}{{0, 0.7}, {0.5, 0.8}, {0.999999, 0.9}} {
		got := float64(renewalTime(leaf, tt.jitter).Sub(leaf.NotBefore)) / float64(life)
		if got < tt.want-0.0001 || got > tt.want+0.0001 {
			t.Errorf("jitter %v renews at %.4f of the lifetime; want %.2f", tt.jitter, got, tt.want)
		}
	}
}

func TestNewRenewerNeedsTheJoinedFiles(t *testing.T) {
	dir := t.TempDir()
	_, err := NewRenewer(RenewerOptions{CertServer: "127.0.0.1:10002", CAFile: dir + "/ca.crt", CertFile: dir + "/node.crt", KeyFile: dir + "/node.key"})
	if !errorContains(err, "edgecore join") {
		t.Fatalf("err = %v; want a hint to join", err)
	}
}
