package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kedge-io/kedge/test/k8senv"
	"github.com/kedge-io/kedge/test/slow"
)

// consoleHeartbeat is cloudhub's heartbeat in the console test: a cut link must show offline in the
// open page within two of them.
const consoleHeartbeat = 3 * time.Second

// newConsoleCluster is newCluster with the console module on (and cloudcore's heartbeat at
// consoleHeartbeat), changed by each of with before anything starts; it returns the cluster and the
// console's URL.
func newConsoleCluster(t *testing.T, with ...func(*cluster)) (*cluster, string) {
	t.Helper()
	needBinaries(t)
	env, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	if err := env.InstallCRDs(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	port := freePort(t)
	c := &cluster{t: t, k8s: env, dir: dir, pkiDir: filepath.Join(dir, "pki"), hubPort: freePort(t), certPort: freePort(t),
		node: "e2e-edge", edgeConfig: filepath.Join(dir, "edgecore.yaml"), edgeDB: filepath.Join(dir, "edge.db"),
		cloudEnv: []string{
			"KEDGE_MODULES__CLOUDHUB__HEARTBEAT=" + consoleHeartbeat.String(),
			"KEDGE_MODULES__CONSOLE__ENABLE=true",
			"KEDGE_MODULES__CONSOLE__ADDRESS=127.0.0.1:" + strconv.Itoa(port),
			"KEDGE_MODULES__CONSOLE__PKIDIR=" + filepath.Join(dir, "pki"),
			"KEDGE_MODULES__CONSOLE__KUBECONFIG=" + env.Kubeconfig,
		}}
	for _, f := range with {
		f(c)
	}
	c.startCloud()
	code, token, stderr := run(t, "cloudcore", nil, "token", "create", "--pki-dir", c.pkiDir)
	if code != 0 {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	code, out, stderr := run(t, "edgecore", nil, "join", "--cloudcore-address", "127.0.0.1", "--token", strings.TrimSpace(token),
		"--node-name", c.node, "--data-dir", filepath.Join(dir, "edge"), "--config-out", c.edgeConfig,
		"--cert-port", strconv.Itoa(c.certPort), "--hub-port", strconv.Itoa(c.hubPort))
	if code != 0 {
		t.Fatalf("join: %d %s %s", code, out, stderr)
	}
	c.metaServer = "127.0.0.1:" + strconv.Itoa(freePort(t))
	c.startEdge()
	if c.edgeClient, err = kubernetes.NewForConfig(&rest.Config{Host: "https://" + c.metaServer, BearerTokenFile: filepath.Join(dir, "edge", "metaserver-admin.token"),
		TLSClientConfig: rest.TLSClientConfig{CAFile: filepath.Join(dir, "edge", "metaserver.crt")}}); err != nil {
		t.Fatal(err)
	}
	return c, "https://127.0.0.1:" + strconv.Itoa(port) + "/"
}

// consoleToken makes a ServiceAccount bound to a ClusterRole with rules and returns a token for it.
func consoleToken(t *testing.T, k kubernetes.Interface, name string, rules []rbacv1.PolicyRule) string {
	t.Helper()
	ctx := context.Background()
	if _, err := k.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: "default"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := k.CoreV1().ServiceAccounts("default").CreateToken(ctx, name, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// browser starts headless Chromium (Debian's chromium package) driven over the DevTools protocol. It
// trusts the console's serving certificate by its public key (the certificate the console serves,
// verified here against the cluster CA in pkiDir): no certificate error is ignored.
func browser(t *testing.T, consoleURL, pkiDir string) context.Context {
	t.Helper()
	u, err := url.Parse(consoleURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", u.Host, consoleClient(t, pkiDir).Transport.(*http.Transport).TLSClientConfig)
	if err != nil {
		t.Fatalf("the console's certificate is not from the cluster CA: %v", err)
	}
	leaf := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	exe := "/usr/bin/chromium"
	if _, err := os.Stat(exe); err != nil {
		t.Fatalf("headless Chromium is needed (Debian package chromium; hack/test.sh installs it): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 800),
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	if err := chromedp.Do(ctx); err != nil { // start the browser (without a timeout: it would end the browser)
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// pageState is the page's address and text, for a failure message.
func pageState(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText.slice(0, 2000)`))
	if err != nil {
		return "page state unavailable: " + err.Error()
	}
	return "page: " + s
}

// consoleClient is an HTTPS client that trusts only the cluster CA and follows no redirects.
func consoleClient(t *testing.T, pkiDir string) *http.Client {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(pkiDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw) {
		cert, err := x509.ParseCertificate(raw)
		if err != nil {
			t.Fatalf("ca.crt is neither PEM nor DER: %v", err)
		}
		pool.AddCert(cert)
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// TestConsoleFleetShowsTheNodeConnectedAndOfflineLiveAfterTheLinkIsCut drives a real browser against
// the console of a real cloudcore (kube-apiserver, joined edgecore): the fleet view lists the node as
// connected; stopping edgecore turns it offline in the open page within two heartbeats, pushed over
// SSE, without a reload; when edgecore comes back it shows connected again with the reconnect counted.
func TestConsoleFleetShowsTheNodeConnectedAndOfflineLiveAfterTheLinkIsCut(t *testing.T) {
	c, consoleURL := newConsoleCluster(t)
	waitFor(t, "node Ready", 60*time.Second, c.nodeReady)
	admin := consoleToken(t, c.k8s.Client, "console-admin", []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}}})
	out := t.ArtifactDir() // kept with go test -artifacts (under -outputdir)
	ctx := browser(t, consoleURL, c.pkiDir)
	bctx, cancel := context.WithTimeout(ctx, slow.Scale(2*time.Minute))
	defer cancel()
	connected := `tr[data-node="e2e-edge"] td[data-link="connected"]`
	if err := chromedp.Do(bctx,
		chromedp.Navigate(consoleURL),
		chromedp.WaitVisible(chromedp.CSS(`#token`)), // no session: the login page
		chromedp.SetValue(chromedp.CSS(`#token`), admin),
		chromedp.Click(chromedp.CSS(`#login`)),
		chromedp.WaitVisible(chromedp.CSS(connected)),
		chromedp.WaitVisible(chromedp.CSS(`#count-devices`)), // an admin sees devices
	); err != nil {
		t.Fatalf("fleet view with the node connected: %v\n%s", err, pageState(ctx))
	}
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[string](`window.kedgeNoReload = "still here"`)); err != nil {
		t.Fatal(err)
	}
	// Page weight: the document and every resource it loaded, as the browser decoded them.
	weight, err := chromedp.Run(bctx, chromedp.Evaluate[float64](`performance.getEntriesByType("navigation").concat(performance.getEntriesByType("resource")).reduce((s, e) => s + e.decodedBodySize, 0)`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("console page weight with one node: %.1f KB (document, CSS, JS; decoded)", weight/1024)
	first, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "fleet-connected.png"), first, 0o644); err != nil {
		t.Fatal(err)
	}
	// Cut the link: edgecore stops; the open page must show the node offline, pushed, not reloaded.
	limit := slow.Scale(2 * consoleHeartbeat)
	cut := time.Now()
	octx, ocancel := context.WithTimeout(bctx, limit)
	defer ocancel()
	c.edge.stop(syscall.SIGTERM, slow.Scale(30*time.Second))
	if err := chromedp.Do(octx, chromedp.WaitVisible(chromedp.CSS(`tr[data-node="e2e-edge"] td[data-link="offline"]`))); err != nil {
		t.Fatalf("the node did not turn offline in the open page within two heartbeats (%s): %v\n%s", limit, err, pageState(ctx))
	}
	took := time.Since(cut)
	kept, err := chromedp.Run(bctx, chromedp.Evaluate[string](`window.kedgeNoReload || "reloaded"`))
	if err != nil {
		t.Fatal(err)
	}
	second, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if kept != "still here" {
		t.Fatalf("the page was reloaded (marker %q): the change must arrive over SSE", kept)
	}
	if err := os.WriteFile(filepath.Join(out, "fleet-offline.png"), second, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("offline shown %s after the cut (heartbeat %s); screenshots in %s", took.Round(time.Millisecond), consoleHeartbeat, out)
	// The edge comes back: connected again, and the reconnect is counted, pushed to the open page.
	c.startEdge()
	rctx, rcancel := context.WithTimeout(bctx, slow.Scale(60*time.Second))
	defer rcancel()
	if err := chromedp.Do(rctx, chromedp.WaitVisible(chromedp.CSS(`tr[data-node="e2e-edge"] td[data-link="connected"]`))); err != nil {
		t.Fatalf("the node did not show connected again: %v\n%s", err, pageState(ctx))
	}
	// read in one script run: a push may replace the row between a query and a read
	n, err := chromedp.Run(rctx, chromedp.Evaluate[string](`((e) => e ? e.innerText : "")(document.querySelector('tr[data-node="e2e-edge"] td.reconnects'))`))
	if k, cerr := strconv.Atoi(strings.TrimSpace(n)); err != nil || cerr != nil || k < 1 { // at least the one made here
		t.Fatalf("reconnects in the last hour: %q (%v), want at least 1\n%s", n, err, pageState(ctx))
	}
}

// TestConsoleRefusesForgedCookiesBadQueriesAndCrossSiteForms checks the console's refusals against a
// real cloudcore and kube-apiserver: a forged session cookie gets the login page, malformed query
// parameters get 400 naming the parameter, a form without its CSRF token changes nothing, a token
// without RBAC for devices sees no devices and one without nodes sees no fleet. Its certificate is
// the cluster CA's.
func TestConsoleRefusesForgedCookiesBadQueriesAndCrossSiteForms(t *testing.T) {
	c, consoleURL := newConsoleCluster(t)
	hc := consoleClient(t, c.pkiDir) // fails the TLS handshake unless the cluster CA issued the certificate
	noDevices := consoleToken(t, c.k8s.Client, "console-nodevices", []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes", "pods"}, Verbs: []string{"get", "list", "watch"}}})
	nothing := consoleToken(t, c.k8s.Client, "console-nothing", []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}})
	get := func(path, token string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, strings.TrimSuffix(consoleURL, "/")+path, nil)
		if token != "" {
			req.AddCookie(&http.Cookie{Name: "__Host-kedge-console", Value: token})
		}
		res, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer res.Body.Close()
		var b strings.Builder
		buf := make([]byte, 64<<10)
		for {
			n, err := res.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return res, b.String()
	}
	waitFor(t, "the console lists the joined node", 60*time.Second, func() (bool, string) {
		res, body := get("/", noDevices)
		return res.StatusCode == http.StatusOK && strings.Contains(body, `data-node="e2e-edge"`), res.Status
	})
	for _, tc := range []struct {
		name, path, cookie string
		code               int
		want               string
	}{
		{"forged cookie gets the login page", "/", "eyJhbGciOiJSUzI1NiJ9.forged.signature", http.StatusSeeOther, ""},
		{"forged cookie gets no event stream", "/events", "forged", http.StatusUnauthorized, "no valid session"},
		{"no cookie gets the login page", "/", "", http.StatusSeeOther, ""},
		{"malformed selector", "/?label=a%20in%20(", noDevices, http.StatusBadRequest, "query parameter label is not a label selector"},
		{"malformed escaping", "/?label=%zz", noDevices, http.StatusBadRequest, "bad request"},
		{"unknown parameter", "/?node=x", noDevices, http.StatusBadRequest, `unknown query parameter "node"`},
		{"repeated parameter", "/?label=a&label=b", noDevices, http.StatusBadRequest, "more than once"},
		{"malformed selector on the stream", "/events?label=!!", noDevices, http.StatusBadRequest, "label"},
		{"no nodes RBAC sees no fleet", "/", nothing, http.StatusForbidden, "may not list nodes"},
		{"no devices RBAC sees no devices", "/", noDevices, http.StatusOK, `id="no-devices"`},
		{"label filter keeps a matching node", "/?label=kubernetes.io%2Fhostname%3De2e-edge", noDevices, http.StatusOK, `data-node="e2e-edge"`},
		{"label filter drops the others", "/?label=site%3Dnowhere", noDevices, http.StatusOK, "No edge node matches"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, body := get(tc.path, tc.cookie)
			if res.StatusCode != tc.code || !strings.Contains(body, tc.want) {
				t.Fatalf("GET %s: %d %q, want %d containing %q", tc.path, res.StatusCode, body, tc.code, tc.want)
			}
			if tc.code == http.StatusSeeOther && res.Header.Get("Location") != "/login" {
				t.Fatalf("redirect to %q, want the login page", res.Header.Get("Location"))
			}
			if tc.code == http.StatusOK && strings.Contains(body, `id="count-devices"`) {
				t.Fatal("devices shown to a token that may not list them")
			}
		})
	}
	// Forms without their CSRF token change nothing: no login, no logout.
	post := func(path, cookie string, form url.Values, origin string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, strings.TrimSuffix(consoleURL, "/")+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if cookie != "" {
			req.AddCookie(&http.Cookie{Name: "__Host-kedge-console", Value: cookie})
		}
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	if res := post("/login", "", url.Values{"token": {noDevices}}, ""); res.StatusCode != http.StatusForbidden || len(res.Cookies()) != 1 || res.Cookies()[0].Name != "__Host-kedge-console-login" {
		t.Fatalf("login without CSRF token: %d cookies %v, want 403 and no session cookie", res.StatusCode, res.Cookies())
	}
	if res := post("/logout", noDevices, url.Values{"csrf": {"0123"}}, ""); res.StatusCode != http.StatusForbidden {
		t.Fatalf("logout with a wrong CSRF token: %d, want 403", res.StatusCode)
	}
	// An invalid token on the real login form (its CSRF token and cookie) is refused: 401, no session.
	lres, lpage := get("/login", "")
	var pre *http.Cookie
	for _, ck := range lres.Cookies() {
		if ck.Name == "__Host-kedge-console-login" {
			pre = ck
		}
	}
	li := strings.Index(lpage, `name="csrf" value="`)
	if pre == nil || li < 0 {
		t.Fatalf("login page without its CSRF cookie or field: %v %s", lres.Cookies(), lpage)
	}
	lcsrf := lpage[li+len(`name="csrf" value="`):]
	lcsrf = lcsrf[:strings.IndexByte(lcsrf, '"')]
	req, _ := http.NewRequest(http.MethodPost, strings.TrimSuffix(consoleURL, "/")+"/login",
		strings.NewReader(url.Values{"csrf": {lcsrf}, "token": {"not-a-token"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(pre)
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	for _, ck := range res.Cookies() {
		if ck.Name == "__Host-kedge-console" && ck.Value != "" {
			t.Fatalf("an invalid token got a session cookie")
		}
	}
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("login with an invalid token: %d, want 401", res.StatusCode)
	}
	// The page's own CSRF token, posted from another site, is refused too (Origin).
	_, page := get("/", noDevices)
	i := strings.Index(page, `name="csrf" value="`)
	if i < 0 {
		t.Fatalf("the fleet page has no CSRF field: %s", page)
	}
	csrf := page[i+len(`name="csrf" value="`):]
	csrf = csrf[:strings.IndexByte(csrf, '"')]
	if res := post("/logout", noDevices, url.Values{"csrf": {csrf}}, "https://evil.example"); res.StatusCode != http.StatusForbidden || len(res.Cookies()) != 0 {
		t.Fatalf("cross-site logout: %d cookies %v, want 403 and no cookie change", res.StatusCode, res.Cookies())
	}
	if res, _ := get("/", noDevices); res.StatusCode != http.StatusOK {
		t.Fatalf("the session ended after a refused logout: %d", res.StatusCode)
	}
}
