package console

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/test/k8senv"
	"github.com/kedge-io/kedge/test/slow"
)

// env is the package's shared control plane (nil under -short).
var env *k8senv.Env

var runs atomic.Int64

// uniq makes name unique in the shared API server (tests run again with -count).
func uniq(name string) string { return fmt.Sprintf("%s-%d", name, runs.Add(1)) }

func TestMain(m *testing.M) {
	os.Exit(k8senv.RunTests(m, "console", func(e *k8senv.Env) error {
		env = e
		return e.InstallCRDs()
	}))
}

func needEnv(t *testing.T) {
	t.Helper()
	if env == nil {
		t.Skip("needs a kube-apiserver (skipped with -short or KEDGE_SKIP_K8S)")
	}
}

// testHost is the little of sdk.Host the console uses (a logger, a metrics registry); the console
// routes no messages of its own.
type testHost struct {
	log *slog.Logger
	reg *prometheus.Registry
}

func (h testHost) Name() string                                           { return Name }
func (h testHost) NodeName() string                                       { return "cloudcore-test" }
func (h testHost) Send(context.Context, string, sdk.Message) error        { return nil }
func (h testHost) SendToGroup(context.Context, string, sdk.Message) error { return nil }
func (h testHost) SendSync(context.Context, string, sdk.Message, time.Duration) (sdk.Message, error) {
	return sdk.Message{}, fmt.Errorf("not routed in this test")
}
func (h testHost) Reply(context.Context, sdk.Message) error { return nil }
func (h testHost) Store() sdk.Store                         { return nil }
func (h testHost) Logger() *slog.Logger                     { return h.log }
func (h testHost) Metrics() prometheus.Registerer           { return h.reg }

func discard() *slog.Logger             { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
func newRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

// startConsole runs a console against the shared API server, with its CA in a fresh pkiDir;
// configure changes its settings before Start.
func startConsole(t *testing.T, configure func(*Module)) *Module {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	m := New()
	m.Address = "127.0.0.1:0"
	m.PKIDir = t.TempDir()
	m.PushInterval = 50 * time.Millisecond
	m.AuthCacheTTL = 2 * time.Second
	if _, _, err := pki.LoadOrCreateCA(ctx, pki.FileStorage{Dir: m.PKIDir}); err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	SetClients(m, env.Client, dyn)
	if configure != nil {
		configure(m)
	}
	if err := m.Start(ctx, testHost{log: slog.New(slog.NewTextHandler(io.Discard, nil)), reg: prometheus.NewRegistry()}); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		sctx, c := context.WithTimeout(context.Background(), 30*time.Second)
		defer c()
		_ = m.Stop(sctx)
	})
	// what the API server held before the console started is in its caches
	waitFor(t, "the console's informers synced", func() (bool, string) { return m.fleet.hasSynced(), "not synced" })
	return m
}

// caPool is the cluster CA of pkiDir.
func caPool(t *testing.T, pkiDir string) *x509.CertPool {
	t.Helper()
	ca, err := pki.LoadCA(context.Background(), pki.FileStorage{Dir: pkiDir})
	if err != nil {
		t.Fatal(err)
	}
	return ca.Pool()
}

// httpsClient trusts only pool, keeps cookies and follows no redirect.
func httpsClient(t *testing.T, pool *x509.CertPool) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// login logs c in with token through the real login form and returns the session's CSRF token.
func login(t *testing.T, c *http.Client, base, token string) string {
	t.Helper()
	res, err := c.Get(base + "login")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	mt := csrfField.FindSubmatch(body)
	if mt == nil {
		t.Fatalf("login page has no CSRF field: %s", body)
	}
	res, err = c.PostForm(base+"login", url.Values{"csrf": {string(mt[1])}, "token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %s", res.Status)
	}
	res, err = c.Get(base)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if mt = csrfField.FindSubmatch(body); mt == nil {
		t.Fatalf("page after login (%s) has no CSRF field: %s", res.Status, body)
	}
	return string(mt[1])
}

func ptr[T any](v T) *T { return &v }

// saToken makes a ServiceAccount bound to a ClusterRole with rules and returns a token for it.
func saToken(t *testing.T, name string, rules []rbacv1.PolicyRule) string {
	t.Helper()
	ctx, k := context.Background(), env.Client
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

var adminRules = []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}}}

// browser starts headless Chromium trusting the console's serving certificate by its public key
// (checked here against the cluster CA first).
func browser(t *testing.T, m *Module) context.Context {
	t.Helper()
	conn, err := tls.Dial("tcp", m.Address, &tls.Config{RootCAs: caPool(t, m.PKIDir)})
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
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.WindowSize(1280, 900),
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	if err := chromedp.Do(ctx); err != nil { // start the browser (without a timeout: it would end the browser)
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// browse runs actions with a generous deadline and fails with the page's state.
func browse(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, slow.Scale(60*time.Second))
	defer cancel()
	err := chromedp.Do(c, actions...)
	// Chromium aborts a load when the host's network interfaces change (other tests on this machine
	// add and remove them): the steps start again from the first, a navigation.
	// A push replaces the view's HTML: an element found just before may be gone when it is clicked;
	// the steps start again too.
	for try := 0; err != nil && again(err) && try < 5; try++ {
		t.Logf("%s: %v; again", what, err)
		err = chromedp.Do(c, actions...)
	}
	if err != nil {
		t.Fatalf("%s: %v\n%s", what, err, pageText(ctx))
	}
}

// text is the innerText of the element sel selects, "" when there is none (read in one script run:
// a push cannot replace the element halfway).
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	q, _ := json.Marshal(sel)
	return get(t, ctx, "text of "+sel, chromedp.Evaluate[string](`((e) => e ? e.innerText : "")(document.querySelector(`+string(q)+`))`))
}

// again says whether a browser step failed only because the page moved under it: Chromium aborts a
// load when the host's network interfaces change (other tests on this machine add and remove them),
// and a push replaces the view's HTML, so an element found a moment before is gone.
func again(err error) bool {
	for _, s := range []string{"ERR_NETWORK_CHANGED", "Could not find node with given id", "No node with given id found"} {
		if strings.Contains(err.Error(), s) {
			return true
		}
	}
	return false
}

// get runs one action that returns a value, with a generous deadline.
func get[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, slow.Scale(60*time.Second))
	defer cancel()
	v, err := chromedp.Run(c, a)
	for try := 0; err != nil && again(err) && try < 5; try++ {
		t.Logf("%s: %v; again", what, err)
		v, err = chromedp.Run(c, a)
	}
	if err != nil {
		t.Fatalf("%s: %v\n%s", what, err, pageText(ctx))
	}
	return v
}

func pageText(ctx context.Context) string {
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(c, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText.slice(0, 3000)`))
	if err != nil {
		return "page unavailable: " + err.Error()
	}
	return "page: " + s
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png := get(t, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(t.ArtifactDir(), name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// browserLogin logs the browser in through the login form.
func browserLogin(t *testing.T, ctx context.Context, base, token string) {
	t.Helper()
	browse(t, ctx, "log in",
		chromedp.Navigate(base+"login"),
		chromedp.WaitVisible(chromedp.CSS(`#token`)),
		chromedp.SetValue(chromedp.CSS(`#token`), token),
		chromedp.Click(chromedp.CSS(`#login`)),
		chromedp.WaitVisible(chromedp.CSS(`#user`)))
}

// edgeNode creates an edge Node with a Ready condition.
func edgeNode(t *testing.T, name string, extra map[string]string) {
	t.Helper()
	ctx := context.Background()
	l := map[string]string{EdgeLabel: ""}
	for k, v := range extra {
		l[k] = v
	}
	n, err := env.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "EdgeReady", Message: "edgecore is posting ready status",
		LastHeartbeatTime: now, LastTransitionTime: now}}
	n.Status.NodeInfo = corev1.NodeSystemInfo{KubeletVersion: "v1.31.0-kedge", OperatingSystem: "linux", Architecture: "arm64"}
	if _, err := env.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func dyn(t *testing.T) dynamic.Interface {
	t.Helper()
	d, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// setRolloutNodes writes a PluginRollout's status: desired nodes and each node's state.
func setRolloutNodes(t *testing.T, ns, name string, desired int64, nodes map[string]string) {
	t.Helper()
	ctx := context.Background()
	r, err := dyn(t).Resource(rolloutGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var list []any
	for n, st := range nodes {
		list = append(list, map[string]any{"name": n, "state": st, "version": "1.1.0"})
	}
	_ = unstructured.SetNestedField(r.Object, map[string]any{"phase": "Progressing", "desired": desired, "updated": int64(0), "failed": int64(0), "nodes": list}, "status")
	if _, err := dyn(t).Resource(rolloutGVR).Namespace(ns).UpdateStatus(ctx, r, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// reportTwin writes a Device's reported value of property temperature, as devicecontroller does.
func reportTwin(t *testing.T, ns, name, value string, at time.Time) {
	t.Helper()
	ctx := context.Background()
	d, err := dyn(t).Resource(deviceGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = unstructured.SetNestedField(d.Object, map[string]any{"state": "online", "lastOnlineTime": at.UTC().Format(time.RFC3339),
		"twins": []any{map[string]any{"propertyName": "temperature",
			"reported": map[string]any{"value": value, "metadata": map[string]any{"timestamp": fmt.Sprint(at.UnixMilli()), "type": "float"}}}}}, "status")
	if _, err := dyn(t).Resource(deviceGVR).Namespace(ns).UpdateStatus(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond (a condition on the API server, not on time) until it holds.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(slow.Scale(60 * time.Second))
	last := ""
	for time.Now().Before(deadline) {
		ok, s := cond()
		if ok {
			return
		}
		last = s
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not within the deadline (last: %s)", what, last)
}
