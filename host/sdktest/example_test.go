package sdktest_test

import (
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/sdk"
)

var t *testing.T // in a real test, the test's *testing.T

// Run starts a module in the real host (module manager, router, SQLite store); capture mailboxes
// stand in for the modules it talks to.
func ExampleRun() {
	info, _ := sdk.Lookup("nodestatus")
	h := sdktest.Run(t, info, map[string]any{"interval": "1s"}, sdktest.Capture(sdk.DefaultMetaManager))
	report := h.Captured(sdk.DefaultMetaManager).Next(t, 10*time.Second) // what it sent to metamanager
	ok, _ := report.Reply(sdk.DefaultMetaManager, "OK")
	h.Reply(ok) // answer its SendSync
}

// Validate checks a module's settings the way `edgecore validate` and startup do, without starting it.
func ExampleValidate() {
	info, _ := sdk.Lookup("nodestatus")
	path, err := sdktest.Validate(t, info, map[string]any{"interval": "500ms"})
	_ = path // err: "<path>: modules.nodestatus.interval: must be at least 1s, got 500ms"
	_ = err
}
