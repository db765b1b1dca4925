package console

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kedge-io/kedge/sdk/inventory"
)

// setInventory merge-patches node's inventory annotation to value, as rolloutcontroller does.
func setInventory(t *testing.T, node, value string) {
	t.Helper()
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{inventory.Annotation: value}}})
	if _, err := env.Client.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestNodeAndFleetViewsShowTheEdgesInventoryLive: a node that has not reported says so; when its
// inventory annotation arrives, the open node view lists its modules (runtime, release, sha256,
// health, counters), its class and outbox depth without a reload, and the fleet view shows class,
// outbox and modules per node; an annotation that is not a valid report is shown as unreadable.
func TestNodeAndFleetViewsShowTheEdgesInventoryLive(t *testing.T) {
	needEnv(t)
	node := uniq("inv-edge")
	edgeNode(t, node, nil)
	m := startConsole(t, nil)
	base := m.URL()
	ctx := browser(t, m)
	browserLogin(t, ctx, base, saToken(t, uniq("inv-admin"), adminRules))

	browse(t, ctx, "node view before any report",
		chromedp.Navigate(base+"node?name="+node),
		chromedp.WaitVisible(chromedp.CSS(`#no-inventory`)))
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.kedgeNoReload = "still here"`)); err != nil {
		t.Fatal(err)
	}

	rep := inventory.Report{V: inventory.V, Node: node, Version: "v0.9.0-3-gabcdef0", Class: "gateway", Outbox: 7, At: time.Now().UTC().Truncate(time.Second)}
	for _, name := range []string{"edgehub", "metamanager", "nodestatus", "noruntime", "eventbus", "devicetwin", "dmi", "pluginmanager", "modbus", "thermo-codec", "virtual", "opcua"} {
		mod := inventory.Module{Name: name, Runtime: "builtin", Release: rep.Version, Handled: 4242, Failed: 1}
		switch name {
		case "modbus":
			mod.Runtime, mod.Release, mod.SHA256 = "process", "2.0.0", strings.Repeat("0123456789abcdef", 4)
		case "thermo-codec":
			mod.Runtime, mod.Release, mod.SHA256 = "wasm", "1.1.0", strings.Repeat("fedcba9876543210", 4)
		case "opcua":
			mod.Health = "server opc.tcp://10.0.0.5:4840 unreachable"
		case "edgehub":
			mod.Link = "up"
		}
		rep.Modules = append(rep.Modules, mod)
	}
	raw, _ := json.Marshal(rep)
	setInventory(t, node, string(raw))

	browse(t, ctx, "node view lists the reported modules, pushed",
		chromedp.WaitVisible(chromedp.CSS(`#node-inventory tr[data-module="edgehub"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#node-inventory tr[data-module="thermo-codec"] td[title="`+rep.Modules[9].SHA256+`"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#node-inventory tr[data-module="opcua"] td.offline`)),
		chromedp.WaitVisible(chromedp.CSS(`#node-outbox[data-outbox="7"]`)))
	if got := text(t, ctx, `#node-class`); got != "gateway" {
		t.Fatalf("class shown %q, want gateway", got)
	}
	if got := text(t, ctx, `#node-inventory tr[data-module="modbus"]`); !strings.Contains(got, "process") || !strings.Contains(got, "2.0.0") || !strings.Contains(got, "0123456789ab") || !strings.Contains(got, "4242") {
		t.Fatalf("modbus row %q: want runtime, release, sha256 prefix and handled count", got)
	}
	if kept := get(t, ctx, "reload marker", chromedp.Evaluate[string](`window.kedgeNoReload || "reloaded"`)); kept != "still here" {
		t.Fatalf("the page was reloaded (%q): the inventory must arrive over SSE", kept)
	}
	screenshot(t, ctx, "node-inventory.png")

	row := `tr[data-node="` + node + `"]`
	browse(t, ctx, "fleet view shows class, outbox and modules",
		chromedp.Navigate(base),
		chromedp.WaitVisible(chromedp.CSS(row+` td.outbox[data-outbox="7"]`)))
	if got := text(t, ctx, row+` td.class`); got != "gateway" {
		t.Fatalf("fleet class %q, want gateway", got)
	}
	if got := text(t, ctx, row+` td.modules`); got != "1 unhealthy / 12" {
		t.Fatalf("fleet modules %q, want 1 unhealthy / 12", got)
	}

	// Someone with patch rights on Nodes writes garbage: shown as unreadable, not believed.
	setInventory(t, node, `{"v":1,"node":"`+node+`","outbox":-5}`)
	browse(t, ctx, "fleet view with an unreadable inventory", chromedp.WaitVisible(chromedp.CSS(row+` td[title*="unreadable"]`)))
	browse(t, ctx, "node view with an unreadable inventory",
		chromedp.Navigate(base+"node?name="+node),
		chromedp.WaitVisible(chromedp.CSS(`#no-inventory`)))
	if got := text(t, ctx, `#no-inventory`); !strings.Contains(got, "unreadable") || !strings.Contains(got, "outbox") {
		t.Fatalf("unreadable inventory shown as %q, want the reason", got)
	}
}
