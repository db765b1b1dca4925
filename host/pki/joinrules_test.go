package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// refused is kedge_certserver_join_refused_total{reason}.
func (c *cloud) refused(reason string) float64 {
	return testutil.ToFloat64(c.certs.refused.WithLabelValues(reason))
}

// joinReq asks for a certificate for node with tok, as edgecore join does, and returns the status
// and the answer's text.
func (c *cloud) joinReq(t *testing.T, tok Token, node string) (int, string) {
	t.Helper()
	status, body := c.do(t, c.client(), request{path: CertPath, body: newCSR(t, newKey(t), pkix.Name{}),
		header: map[string]string{"Authorization": "Bearer " + tok.JWT, NodeNameHeader: node}})
	return status, string(body)
}

// renewReq renews with cert, as the edge's Renewer does; renewed is the new key pair on success.
func (c *cloud) renewReq(t *testing.T, cert tls.Certificate, node string) (status int, body string, renewed tls.Certificate) {
	t.Helper()
	key := newKey(t)
	status, der := c.do(t, c.client(cert), request{path: CertPath, body: newCSR(t, key, pkix.Name{}),
		header: map[string]string{NodeNameHeader: node}})
	if status == http.StatusOK {
		renewed = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	return status, string(der), renewed
}

// joinPair joins node with tok through Join (the edge's own code) and returns its key pair.
func (c *cloud) joinPair(t *testing.T, tok Token, node string) tls.Certificate {
	t.Helper()
	res, err := Join(context.Background(), JoinOptions{CertServer: c.addr, Token: tok.String(), NodeName: node, Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("join %s: %v", node, err)
	}
	pair, err := tls.LoadX509KeyPair(res.CertFile, res.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

func wantRefusal(t *testing.T, what string, status int, body string, wantStatus int, wantText string) {
	t.Helper()
	if status != wantStatus || !strings.Contains(body, wantText) {
		t.Fatalf("%s: status %d, %q; want %d mentioning %q", what, status, strings.TrimSpace(body), wantStatus, wantText)
	}
}

func TestSingleUseTokenJoinsOneNodeOnly(t *testing.T) {
	c := newCloud(t, CertServerOptions{})
	tok := c.token(t)
	c.joinPair(t, tok, "edge-1")
	status, body := c.joinReq(t, tok, "edge-2")
	wantRefusal(t, "second join, another node", status, body, http.StatusUnauthorized, "no uses left")
	status, body = c.joinReq(t, tok, "edge-1")
	wantRefusal(t, "second join, same node", status, body, http.StatusUnauthorized, "no uses left")
	if got := c.refused("used_up"); got != 2 {
		t.Errorf(`kedge_certserver_join_refused_total{reason="used_up"} = %v; want 2`, got)
	}
	if got := c.count("edge.crt", "issued"); got != 1 {
		t.Errorf("%v certificates issued; want 1", got)
	}
	toks, err := ListTokens(context.Background(), c.recs)
	if err != nil || len(toks) != 1 || toks[0].UsesLeft() != 0 || strings.Join(toks[0].Joined, ",") != "edge-1" {
		t.Fatalf("token records %+v (err %v); want one, used up by edge-1", toks, err)
	}
}

func TestTokenWithUsesJoinsThatManyNodes(t *testing.T) {
	c := newCloud(t, CertServerOptions{})
	tok := c.tokenWith(t, TokenOptions{TTL: time.Hour, Uses: 3})
	for _, n := range []string{"edge-1", "edge-2", "edge-3"} {
		c.joinPair(t, tok, n)
	}
	status, body := c.joinReq(t, tok, "edge-4")
	wantRefusal(t, "fourth join", status, body, http.StatusUnauthorized, "allowed 3 join(s)")
}

func TestTokenBoundToANodeIsRefusedForAnother(t *testing.T) {
	c := newCloud(t, CertServerOptions{})
	tok := c.tokenWith(t, TokenOptions{TTL: time.Hour, Node: "node-a"})
	status, body := c.joinReq(t, tok, "node-b")
	wantRefusal(t, "join as node-b", status, body, http.StatusForbidden, `bound to node "node-a", not "node-b"`)
	if got := c.refused("node_mismatch"); got != 1 {
		t.Errorf(`join_refused_total{reason="node_mismatch"} = %v; want 1`, got)
	}
	c.joinPair(t, tok, "node-a") // the refusal did not use it up
}

func TestJoinForANodeWithAValidCertificateIsRefusedWhileItsRenewalWorks(t *testing.T) {
	c := newCloud(t, CertServerOptions{})
	pair := c.joinPair(t, c.token(t), "node-a")

	fresh := c.token(t)
	status, body := c.joinReq(t, fresh, "node-a")
	wantRefusal(t, "join for a node that exists", status, body, http.StatusConflict, `node "node-a" holds certificate`)
	if !strings.Contains(body, "--replace") {
		t.Errorf("the refusal does not say how to re-install a node: %q", body)
	}
	if got := c.refused("node_exists"); got != 1 {
		t.Errorf(`join_refused_total{reason="node_exists"} = %v; want 1`, got)
	}

	// The node renews with its own certificate, and again with the renewed one.
	status, body, renewed := c.renewReq(t, pair, "node-a")
	if status != http.StatusOK {
		t.Fatalf("renewal with the node's certificate: %d %s", status, body)
	}
	if status, body, _ = c.renewReq(t, renewed, "node-a"); status != http.StatusOK {
		t.Fatalf("renewal with the renewed certificate: %d %s", status, body)
	}
	// A certificate of this CA that is not the node's (forged by whoever held the CA key elsewhere,
	// or long replaced) cannot renew.
	stray := nodePair(t, c.ca, "node-a", time.Hour)
	status, body, _ = c.renewReq(t, stray, "node-a")
	wantRefusal(t, "renewal with a certificate not recorded for the node", status, body, http.StatusForbidden, "not the current certificate")

	// The refused join did not consume the fresh token: it still joins a new node.
	c.joinPair(t, fresh, "node-b")
}

func TestRevokedAndExpiredTokensAreRefused(t *testing.T) {
	clock := newFakeClock(time.Now())
	c := newCloudWithClock(t, CertServerOptions{}, clock)
	revoked := c.tokenWith(t, TokenOptions{TTL: time.Hour, Uses: 5})
	expiring := c.tokenWith(t, TokenOptions{TTL: time.Hour})
	toks, err := ListTokens(context.Background(), c.recs)
	if err != nil {
		t.Fatal(err)
	}
	var revokedID string
	for _, r := range toks {
		if r.Uses == 5 {
			revokedID = r.ID
		}
	}
	if _, err := RevokeToken(context.Background(), c.recs, revokedID, clock.Now()); err != nil {
		t.Fatal(err)
	}
	status, body := c.joinReq(t, revoked, "edge-1")
	wantRefusal(t, "revoked token", status, body, http.StatusUnauthorized, "revoked")

	clock.Set(clock.Now().Add(2 * time.Hour))
	status, body = c.joinReq(t, expiring, "edge-1")
	wantRefusal(t, "expired token", status, body, http.StatusUnauthorized, "expired")

	if _, err := RevokeToken(context.Background(), c.recs, "nosuchtoken", clock.Now()); !errors.Is(err, ErrTokenUnknown) {
		t.Errorf("revoking an unknown ID: %v; want ErrTokenUnknown", err)
	}
	for reason, want := range map[string]float64{"revoked": 1, "expired": 1, "used_up": 0, "bad_token": 0} {
		if got := c.refused(reason); got != want {
			t.Errorf(`join_refused_total{reason=%q} = %v; want %v`, reason, got, want)
		}
	}
}

func TestTokenWithoutARecordIsRefused(t *testing.T) {
	c := newCloud(t, CertServerOptions{})
	// Signed with this CA's secret but recorded elsewhere (or its record deleted).
	orphan, err := testToken(t, c.ca, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	status, body := c.joinReq(t, orphan, "edge-1")
	wantRefusal(t, "token without a record", status, body, http.StatusUnauthorized, "not known")
	if got := c.refused("bad_token"); got != 1 {
		t.Errorf(`join_refused_total{reason="bad_token"} = %v; want 1`, got)
	}
}

func TestReplacingTokenTakesOverANodeAndRevokesItsOldCertificate(t *testing.T) {
	c := newCloud(t, CertServerOptions{})
	old := c.joinPair(t, c.token(t), "node-a")
	if _, _, err := CreateToken(context.Background(), c.ca, c.recs, TokenOptions{Replace: true}); err == nil {
		t.Fatal("a replacing token without a node was created")
	}
	replacement := c.joinPair(t, c.tokenWith(t, TokenOptions{Node: "node-a", Replace: true}), "node-a")
	status, body, _ := c.renewReq(t, old, "node-a")
	wantRefusal(t, "renewal with the replaced certificate", status, body, http.StatusForbidden, "revoked")
	if status, body, _ := c.renewReq(t, replacement, "node-a"); status != http.StatusOK {
		t.Fatalf("renewal with the replacement's certificate: %d %s", status, body)
	}
}

func TestConcurrentJoinsWithOneSingleUseTokenIssueOneCertificate(t *testing.T) {
	c := newCloud(t, CertServerOptions{})
	// A second certificate server on the same records, as a second cloudcore would be.
	second, err := NewCertServer(CertServerOptions{CA: c.ca, Records: FileRecords{Dir: c.st.Dir}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	other := &cloud{ca: c.ca, certs: second, addr: serveTLS(t, second, CertServerTLSConfig(c.server))}
	tok := c.token(t)
	var (
		wg sync.WaitGroup
		mu sync.Mutex
		ok []string
	)
	for i := range 8 {
		srv := c
		if i%2 == 1 {
			srv = other
		}
		wg.Go(func() {
			node := "edge-" + string(rune('a'+i))
			if status, _ := srv.joinReq(t, tok, node); status == http.StatusOK {
				mu.Lock()
				ok = append(ok, node)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(ok) != 1 {
		t.Fatalf("%d joins succeeded with one single-use token (%v); want 1", len(ok), ok)
	}
}

func TestFileRecordsAreOwnerOnly(t *testing.T) {
	c := newCloud(t, CertServerOptions{})
	c.joinPair(t, c.token(t), "edge-1")
	for _, p := range []string{"tokens", "nodes", "nodes/edge-1.json", "records.lock"} {
		fi, err := os.Stat(filepath.Join(c.st.Dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v; want no access for group and others", p, fi.Mode().Perm())
		}
	}
}

func TestFileRecordsTakeNodeNamesTooLongForAFileName(t *testing.T) {
	c := newCloud(t, CertServerOptions{})
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61)
	if err := CheckNodeName(long); err != nil {
		t.Fatal(err)
	}
	c.joinPair(t, c.token(t), long)
	status, body := c.joinReq(t, c.token(t), long)
	wantRefusal(t, "second join of a 253-byte name", status, body, http.StatusConflict, "holds certificate")
}
