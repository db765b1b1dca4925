package console

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// viewObjects creates what the node, devices and rollouts views show for node: the Node, the
// ownership Lease naming replica-b, a running pod, a Device with a desired temperature, and a
// PluginRollout that selects the node.
func viewObjects(t *testing.T, node string) {
	t.Helper()
	ctx := context.Background()
	edgeNode(t, node, map[string]string{"site": "berlin"})
	now := metav1.NewMicroTime(time.Now())
	if _, err := env.Client.CoordinationV1().Leases("default").Create(ctx, &coordv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: nodeLeaseName(node), Labels: map[string]string{ownershipLabel: "node"}, Annotations: map[string]string{"kedge.io/node": node}},
		Spec:       coordv1.LeaseSpec{HolderIdentity: ptr("replica-b"), AcquireTime: &now, LeaseTransitions: ptr(int32(3))}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p, err := env.Client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: node + "-app"},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "busybox"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status.Phase = corev1.PodRunning
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Ready: true, RestartCount: 2, Image: "busybox", ImageID: "x"}}
	if _, err := env.Client.CoreV1().Pods("default").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	dev := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
		"metadata": map[string]any{"name": node + "-thermo", "namespace": "default"},
		"spec": map[string]any{"nodeName": node, "deviceModelRef": map[string]any{"name": "thermometer"},
			"properties": []any{map[string]any{"name": "temperature", "desired": map[string]any{"value": "20"}}}}}}
	if _, err := dyn(t).Resource(deviceGVR).Namespace("default").Create(ctx, dev, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	reportTwin(t, "default", node+"-thermo", "21.5", time.Now())
	ro := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "kedge.io/v1alpha1", "kind": "PluginRollout",
		"metadata": map[string]any{"name": node + "-modbus", "namespace": "default"},
		"spec": map[string]any{"plugin": "modbus-mapper", "version": "1.1.0", "runtime": "wasm", "module": "modbus",
			"nodeSelector": map[string]any{"matchLabels": map[string]any{"site": "berlin"}}}}}
	if _, err := dyn(t).Resource(rolloutGVR).Namespace("default").Create(ctx, ro, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	setRolloutNodes(t, "default", node+"-modbus", 2, map[string]string{node: "Installing", node + "-other": "Pending"})
}

// TestNodeDevicesAndRolloutsViewsAreLiveInABrowser drives headless Chromium against the console and
// a real API server: the node view shows the node's conditions, the replica holding it (its
// ownership Lease), its pod, its device and the module a PluginRollout put on it; the devices view's
// sparkline gains a point when a new value is reported, without a reload; the rollouts view's
// progress moves when a node is updated, and its Pause button pauses the PluginRollout in the API.
func TestNodeDevicesAndRolloutsViewsAreLiveInABrowser(t *testing.T) {
	needEnv(t)
	node := uniq("view-edge")
	viewObjects(t, node)
	m := startConsole(t, nil)
	base := m.URL()
	ctx := browser(t, m)
	browserLogin(t, ctx, base, saToken(t, uniq("view-admin"), adminRules))

	// Node view.
	browse(t, ctx, "node view",
		chromedp.Navigate(base+"node?name="+node),
		chromedp.WaitVisible(chromedp.CSS(`#node-link[data-link="connected"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-condition="Ready"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-pod="default/`+node+`-app"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-device="default/`+node+`-thermo"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-module="modbus"] td[data-state="Installing"]`)))
	replica := text(t, ctx, `#node-replica`)
	module := text(t, ctx, `tr[data-module="modbus"]`)
	if replica != "replica-b" {
		t.Errorf("node view names replica %q, want replica-b (the ownership Lease's holder)", replica)
	}
	if moves := text(t, ctx, `#node-moves`); !strings.Contains(moves, "3 times") {
		t.Errorf("node view says %q, want the Lease's 3 transitions", moves)
	}
	for _, want := range []string{"modbus-mapper", "wasm", "1.1.0"} {
		if !strings.Contains(module, want) {
			t.Errorf("node view's module row %q lacks %q", module, want)
		}
	}
	screenshot(t, ctx, "node.png")

	// Devices view: one point, then a second one pushed live after a new report.
	row := `tr[data-device="default/` + node + `-thermo"] tr[data-property="temperature"]`
	browse(t, ctx, "devices view",
		chromedp.Navigate(base+"devices?node="+node),
		chromedp.WaitVisible(chromedp.CSS(row+`[data-points="1"] svg.spark`)),
		chromedp.WaitVisible(chromedp.CSS(row+`.differs`))) // desired 20, reported 21.5
	get(t, ctx, "mark the page", chromedp.Evaluate[string](`window.kedgeNoReload = "still here"`))
	reportTwin(t, "default", node+"-thermo", "23", time.Now().Add(time.Second))
	browse(t, ctx, "sparkline gains a point", chromedp.WaitVisible(chromedp.CSS(row+`[data-points="2"]`)))
	still := get(t, ctx, "the mark", chromedp.Evaluate[string](`window.kedgeNoReload`))
	if still != "still here" {
		t.Fatal("the devices page was reloaded; the point must be pushed")
	}
	screenshot(t, ctx, "devices.png")

	// Rollouts view: progress moves live; Pause acts through the API.
	ro := `tr[data-rollout="default/` + node + `-modbus"]`
	browse(t, ctx, "rollouts view",
		chromedp.Navigate(base+"rollouts"),
		chromedp.WaitVisible(chromedp.CSS(ro+` span[data-state="Installing"]`)),
		chromedp.WaitVisible(chromedp.CSS(ro+` svg.bar`)))
	setRolloutNodes(t, "default", node+"-modbus", 2, map[string]string{node: "Updated", node + "-other": "Installing"})
	browse(t, ctx, "rollout progress moves",
		chromedp.WaitVisible(chromedp.CSS(ro+` span[data-state="Updated"][data-count="1"]`)),
		chromedp.WaitVisible(chromedp.CSS(ro+` rect.bar-updated`)))
	screenshot(t, ctx, "rollouts.png")
	browse(t, ctx, "pause", chromedp.Click(chromedp.CSS(ro+` button.pause`))) // the stream pushed already (the bar moved)
	waitFor(t, "spec.paused set through the console", func() (bool, string) {
		r, err := dyn(t).Resource(rolloutGVR).Namespace("default").Get(context.Background(), node+"-modbus", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		p, _, _ := unstructured.NestedBool(r.Object, "spec", "paused")
		return p, "spec.paused false"
	})
	browse(t, ctx, "the page offers resume", chromedp.WaitVisible(chromedp.CSS(ro+` button.resume`)))
	browse(t, ctx, "resume", chromedp.Click(chromedp.CSS(ro+` button.resume`)))
	waitFor(t, "spec.paused cleared through the console", func() (bool, string) {
		r, err := dyn(t).Resource(rolloutGVR).Namespace("default").Get(context.Background(), node+"-modbus", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		p, _, _ := unstructured.NestedBool(r.Object, "spec", "paused")
		return !p, "spec.paused true"
	})
}

// TestPauseResumeIsRefusedWithoutCSRFOrRBACAndNothingChanges: a pause without the session's CSRF
// token, from another origin, with a malformed form, or by a user who may list but not patch
// PluginRollouts is refused, and spec.paused stays false; a user without devices RBAC gets no
// devices view.
func TestPauseResumeIsRefusedWithoutCSRFOrRBACAndNothingChanges(t *testing.T) {
	needEnv(t)
	node := uniq("refuse-edge")
	viewObjects(t, node)
	m := startConsole(t, nil)
	base := m.URL()
	reader := saToken(t, uniq("rollout-reader"), []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes", "pods"}, Verbs: []string{"list", "get", "watch"}},
		{APIGroups: []string{"kedge.io"}, Resources: []string{"pluginrollouts"}, Verbs: []string{"list", "get", "watch"}}})
	c := httpsClient(t, caPool(t, m.PKIDir))
	csrf := login(t, c, base, reader)
	post := func(form url.Values, origin string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, base+"rollouts", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	ok := url.Values{"csrf": {csrf}, "namespace": {"default"}, "name": {node + "-modbus"}, "paused": {"true"}}
	with := func(k, v string) url.Values {
		f := url.Values{}
		for a, b := range ok {
			f[a] = b
		}
		if v == "" {
			f.Del(k)
		} else {
			f.Set(k, v)
		}
		return f
	}
	for _, tc := range []struct {
		name   string
		form   url.Values
		origin string
		code   int
		says   string
	}{
		{"no CSRF token", with("csrf", ""), "", http.StatusForbidden, "CSRF"},
		{"another session's CSRF token", with("csrf", strings.Repeat("ab", 32)), "", http.StatusForbidden, "CSRF"},
		{"cross-site form", ok, "https://evil.example", http.StatusForbidden, "cross-origin"},
		{"malformed paused", with("paused", "yes"), "", http.StatusBadRequest, "want true or false"},
		{"malformed namespace", with("namespace", "Not_A_Namespace"), "", http.StatusBadRequest, "namespace"},
		{"user may list but not patch", ok, "", http.StatusForbidden, "may not patch pluginrollouts.kedge.io default/" + node + "-modbus"},
	} {
		code, body := post(tc.form, tc.origin)
		if code != tc.code || !strings.Contains(body, tc.says) {
			t.Errorf("%s: %d %q, want %d saying %q", tc.name, code, body, tc.code, tc.says)
		}
	}
	r, err := dyn(t).Resource(rolloutGVR).Namespace("default").Get(context.Background(), node+"-modbus", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p, _, _ := unstructured.NestedBool(r.Object, "spec", "paused"); p {
		t.Fatal("a refused pause changed spec.paused")
	}
	for _, tc := range []struct {
		path string
		code int
		says string
	}{
		{"devices", http.StatusForbidden, "may not list devices.kubeedge.io"},
		{"node?name=" + node, http.StatusOK, "Devices are not shown: you may not list devices.kubeedge.io"},
		{"node?name=Bad_Name", http.StatusBadRequest, "query parameter name is not a node name"},
		{"node", http.StatusBadRequest, "query parameter name (the node) is missing"},
		{"devices?page=0", http.StatusBadRequest, "page"},
		{"rollouts?x=1", http.StatusBadRequest, `unknown query parameter "x"`},
		{"events?view=secrets", http.StatusBadRequest, "query parameter view"},
		{"events?view=devices", http.StatusForbidden, "may not list devices"},
	} {
		res, err := c.Get(base + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.code || !strings.Contains(string(b), tc.says) {
			t.Errorf("GET %s: %s %q, want %d saying %q", tc.path, res.Status, b, tc.code, tc.says)
		}
		if tc.code == http.StatusOK && strings.Contains(string(b), node+"-thermo") {
			t.Errorf("GET %s shows the device to a user without devices RBAC", tc.path)
		}
	}
}

// TestFleetOfAThousandNodesRendersPagedInABrowser puts 1,000 edge Nodes in the API server and opens
// the fleet view in headless Chromium: the counts cover all of them, the table shows one page
// (pageSize rows) and the next page link shows the next rows. It logs the browser's time to first
// render and the page weight, paged and with every node on one page (BENCHMARKS.md).
func TestFleetOfAThousandNodesRendersPagedInABrowser(t *testing.T) {
	needEnv(t)
	const n = 1000
	ctx := context.Background()
	prefix := uniq("hollow")
	work := make(chan int)
	errs := make(chan error, n)
	for range 8 {
		go func() {
			for i := range work {
				_, err := env.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%04d", prefix, i),
					Labels: map[string]string{EdgeLabel: "", "bench": prefix}}}, metav1.CreateOptions{})
				errs <- err
			}
		}()
	}
	go func() {
		for i := range n {
			work <- i
		}
		close(work)
	}()
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	token := saToken(t, uniq("bench-admin"), adminRules)
	type timing struct{ Response, DOMContentLoaded, Load, Bytes, Rows float64 }
	measure := func(pageSize int) timing {
		m := startConsole(t, func(m *Module) { m.PageSize = pageSize })
		bctx := browser(t, m)
		browserLogin(t, bctx, m.URL(), token)
		want := fmt.Sprintf("Edgenodes%d", n)
		browse(t, bctx, "fleet of 1,000", chromedp.Navigate(m.URL()+"?label=bench%3D"+prefix), chromedp.WaitVisible(chromedp.CSS(`tr[data-node="`+prefix+`-0000"]`)))
		waitFor(t, "the fleet view counts every node", func() (bool, string) {
			s := get(t, bctx, "counts", chromedp.Evaluate[string](`document.querySelector(".counts").innerText.replace(/\s+/g, "")`))
			return strings.HasPrefix(s, want), s
		})
		// the page as first loaded: reload once the console's informers hold every node
		browse(t, bctx, "reload", chromedp.Navigate(m.URL()+"?label=bench%3D"+prefix), chromedp.WaitVisible(chromedp.CSS(`tr[data-node="`+prefix+`-0000"]`)))
		return get(t, bctx, "timing", chromedp.Evaluate[timing](`(() => { const n = performance.getEntriesByType("navigation")[0];
			return {Response: n.responseEnd - n.startTime, DOMContentLoaded: n.domContentLoadedEventEnd - n.startTime, Load: n.loadEventEnd - n.startTime,
				Bytes: performance.getEntriesByType("navigation").concat(performance.getEntriesByType("resource")).reduce((s, e) => s + e.decodedBodySize, 0),
				Rows: document.querySelectorAll("#nodes tbody tr").length}; })()`))
	}
	paged := measure(100)
	if paged.Rows != 100 {
		t.Fatalf("paged fleet shows %v rows, want 100", paged.Rows)
	}
	all := measure(5000)
	if all.Rows != n {
		t.Fatalf("unpaged fleet shows %v rows, want %d", all.Rows, n)
	}
	for _, x := range []struct {
		name string
		t    timing
	}{{"paged (100 rows)", paged}, {"one page (1000 rows)", all}} {
		t.Logf("fleet of %d nodes, %s: response %.0f ms, DOMContentLoaded %.0f ms, load %.0f ms, %.1f KB decoded",
			n, x.name, x.t.Response, x.t.DOMContentLoaded, x.t.Load, x.t.Bytes/1024)
	}
	t.Logf("one page / paged: load %.1fx, bytes %.1fx", all.Load/paged.Load, all.Bytes/paged.Bytes)
}

// TestFleetPagerWalksTheFleet: the next-page link of the fleet view shows the following rows.
func TestFleetPagerWalksTheFleet(t *testing.T) {
	needEnv(t)
	p := uniq("pager")
	for i := range 25 {
		edgeNode(t, fmt.Sprintf("%s-%02d", p, i), map[string]string{"bench": p})
	}
	m := startConsole(t, func(m *Module) { m.PageSize = 10 })
	ctx := browser(t, m)
	browserLogin(t, ctx, m.URL(), saToken(t, uniq("pager-admin"), adminRules))
	browse(t, ctx, "first page",
		chromedp.Navigate(m.URL()+"?label=bench%3D"+p),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-node="`+p+`-00"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#fleet[data-updated] #page-next`)), // after the stream's first push
		chromedp.Click(chromedp.CSS(`#page-next`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-node="`+p+`-10"]`)))
	if info := text(t, ctx, `#page-info`); !strings.Contains(info, "rows 11–20 of 25") || !strings.Contains(info, "page 2 of 3") {
		t.Fatalf("page info %q, want rows 11–20 of 25, page 2 of 3", info)
	}
	// the live stream keeps the page: a change pushes page 2 again, not page 1
	edgeNode(t, p+"-10a", map[string]string{"bench": p})
	browse(t, ctx, "live page 2", chromedp.WaitVisible(chromedp.CSS(`tr[data-node="`+p+`-10a"]`)))
	if n := get(t, ctx, "rows", chromedp.Evaluate[float64](`document.querySelectorAll("#nodes tbody tr").length`)); n != 10 {
		t.Fatalf("page 2 shows %v rows after the push, want 10", n)
	}
}
