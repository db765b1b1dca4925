package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/plugin-registry/index"
	"github.com/kedge-io/kedge/sdk/inventory"
	"github.com/kedge-io/kedge/test/slow"
)

// inventoryInterval is pluginmanager's inventory.interval in this test (10m by default).
const inventoryInterval = 5 * time.Second

// TestConsoleNodeViewListsTheEdgesRealModulesAndOutboxDepth runs a real edgecore with pluginmanager
// (listing the host's modules through its handle) and a real cloudcore with rolloutcontroller and the
// console: the node's inventory arrives over the hub, becomes the Node annotation kedge.io/inventory
// (the modules `edgecore module ls` shows, the class of the build, the outbox depth), and the
// console's node and fleet views show it in Chromium. At idle the annotation is written at most once
// per inventory.interval.
func TestConsoleNodeViewListsTheEdgesRealModulesAndOutboxDepth(t *testing.T) {
	keys := t.TempDir()
	if _, err := index.WriteKeyPair(keys); err != nil {
		t.Fatal(err)
	}
	c, consoleURL := newConsoleCluster(t, func(c *cluster) {
		c.cloudEnv = append(c.cloudEnv, "KEDGE_MODULES__ROLLOUTCONTROLLER__ENABLE=true",
			"KEDGE_MODULES__ROLLOUTCONTROLLER__KUBECONFIG="+c.k8s.Kubeconfig)
		c.edgeEnv = append(c.edgeEnv, "KEDGE_MODULES__PLUGINMANAGER__ENABLE=true",
			// No rollout runs here: the registry is never asked.
			"KEDGE_MODULES__PLUGINMANAGER__REGISTRYURL=http://127.0.0.1:9/registry",
			"KEDGE_MODULES__PLUGINMANAGER__TRUSTEDKEYS=["+filepath.Join(keys, index.PublicKeyFile)+"]",
			"KEDGE_MODULES__PLUGINMANAGER__PLUGINSDIR="+filepath.Join(c.dir, "plugins"),
			"KEDGE_MODULES__PLUGINMANAGER__INVENTORY__CHECK=1s",
			"KEDGE_MODULES__PLUGINMANAGER__INVENTORY__INTERVAL="+inventoryInterval.String())
	})
	waitFor(t, "node Ready", 60*time.Second, c.nodeReady)

	var rep inventory.Report
	var first time.Time
	waitFor(t, "inventory annotation on the Node", 60*time.Second, func() (bool, string) {
		n, err := c.k8s.Client.CoreV1().Nodes().Get(context.Background(), c.node, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		raw, ok := n.Annotations[inventory.Annotation]
		if !ok {
			return false, "no annotation yet"
		}
		if rep, err = inventory.Parse(raw); err != nil {
			t.Fatalf("annotation %s does not parse: %v\n%s", inventory.Annotation, err, raw)
		}
		first = time.Now()
		return true, ""
	})
	ls := c.edge.moduleLs()
	names := map[string]bool{}
	for _, m := range rep.Modules {
		names[m.Name] = true
		if !strings.Contains(ls, m.Name) {
			t.Errorf("inventory lists module %s, module ls does not:\n%s", m.Name, ls)
		}
		if m.Runtime != "builtin" || m.Release == "" {
			t.Errorf("module %s: runtime %q release %q, want builtin with the binary's version", m.Name, m.Runtime, m.Release)
		}
	}
	for _, want := range []string{"edgehub", "metamanager", "nodestatus", "noruntime", "pluginmanager"} {
		if !names[want] {
			t.Errorf("inventory lacks module %s: %+v", want, rep.Modules)
		}
	}
	if rep.Node != c.node || rep.Class != "full" || rep.Version == "" || rep.Outbox < 0 {
		t.Fatalf("inventory of %q class %q version %q outbox %d: want %s, full (a plain build), the binary's version", rep.Node, rep.Class, rep.Version, rep.Outbox, c.node)
	}

	admin := consoleToken(t, c.k8s.Client, "console-inventory", []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}}})
	ctx := browser(t, consoleURL, c.pkiDir)
	bctx, cancel := context.WithTimeout(ctx, slow.Scale(2*time.Minute))
	defer cancel()
	if err := chromedp.Do(bctx,
		chromedp.Navigate(consoleURL),
		chromedp.WaitVisible(chromedp.CSS(`#token`)),
		chromedp.SetValue(chromedp.CSS(`#token`), admin),
		chromedp.Click(chromedp.CSS(`#login`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-node="e2e-edge"] td.outbox`)),
		chromedp.Navigate(consoleURL+"node?name="+c.node),
		chromedp.WaitVisible(chromedp.CSS(`#node-inventory tr[data-module="pluginmanager"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#node-inventory tr[data-module="edgehub"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#node-outbox`)),
	); err != nil {
		t.Fatalf("console views with the node's inventory: %v\n%s", err, pageState(ctx))
	}
	class, err := chromedp.Run(bctx, chromedp.Evaluate[string](`document.querySelector("#node-class").innerText`))
	if err != nil || class != "full" {
		t.Fatalf("node view class %q (%v), want full", class, err)
	}
	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(t.ArtifactDir(), "node-inventory.png"), shot, 0o644); err != nil {
		t.Fatal(err)
	}

	// Cost on the cloud at idle: patches of the Node in the time this test ran, against the bound of
	// one per interval (plus the first and a change or two while modules came up).
	elapsed := time.Since(first)
	raw, _ := json.Marshal(rep)
	written := c.cloud.metric("kedge_rolloutcontroller_inventory_total", `result="written"`)
	unchanged := c.cloud.metric("kedge_rolloutcontroller_inventory_total", `result="unchanged"`)
	bound := float64(elapsed/inventoryInterval) + 3
	t.Logf("inventory: %d modules, %d bytes in the annotation; %v written and %v unchanged reports in %s with interval %s (bound %v)",
		len(rep.Modules), len(raw), written, unchanged, elapsed.Round(time.Second), inventoryInterval, bound)
	if written > bound {
		t.Fatalf("%v Node writes in %s with interval %s: more than one per interval at idle", written, elapsed, inventoryInterval)
	}
}
