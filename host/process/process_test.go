package process_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/sdk"
)

func TestPluginAnswersThroughTheManager(t *testing.T) {
	h := sdktest.RunProcess(t, copyPlugin(t), map[string]any{"greeting": "hi there"}, sdktest.ProcessOptions(fast))

	var greeting string
	reply := ask(t, h, "greet", nil, &greeting)
	if greeting != "hi there" {
		t.Errorf("greet: got %q, want the configured greeting", greeting)
	}
	if reply.Route.Source != "echo" || reply.Header.ParentID == "" {
		t.Errorf("reply route/header: %+v %+v", reply.Route, reply.Header)
	}
	var back json.RawMessage
	ask(t, h, "echo", json.RawMessage(kib), &back)
	if string(back) != string(kib) {
		t.Errorf("echo: got %d bytes back, want the 1 KiB sent", len(back))
	}

	// A Handle error reaches the requester as an error reply, as for a builtin module.
	failed := ask(t, h, "fail", nil, nil)
	if failed.Route.Operation != message.OpError || !strings.Contains(string(failed.Content), "told to fail") {
		t.Errorf("fail: got %s %s, want an error reply carrying the module's error", failed.Route.Operation, failed.Content)
	}
	if err := h.Healthy(); err != nil {
		t.Errorf("healthy: %v", err)
	}
}

func TestPluginDoesNotSeeTheHostsSettings(t *testing.T) {
	t.Setenv("KEDGE_HUB__TOKEN", "secret")
	h := sdktest.RunProcess(t, copyPlugin(t), nil, sdktest.ProcessOptions(fast))
	var token, path string
	ask(t, h, "env", "KEDGE_HUB__TOKEN", &token)
	ask(t, h, "env", "PATH", &path)
	if token != "" || path != os.Getenv("PATH") {
		t.Errorf("plugin sees KEDGE_HUB__TOKEN=%q and PATH=%q; want no host settings, and the host's PATH", token, path)
	}
}

func TestPluginUsesItsStoreNamespace(t *testing.T) {
	h := sdktest.RunProcess(t, copyPlugin(t), nil, sdktest.ProcessOptions(fast))

	var res sdk.PutResult
	ask(t, h, "put", map[string]string{"Name": "lamp", "Value": "on"}, &res)
	if !res.Applied {
		t.Errorf("put: %+v, want applied", res)
	}
	obj, err := h.DB.Objects("echo").Get(t.Context(), sdk.Key{Type: "thing", Name: "lamp"})
	if err != nil || string(obj.Value) != `"on"` {
		t.Fatalf("the host's store under the module's name: %q, %v; want the plugin's write", obj.Value, err)
	}
	if _, err := h.DB.Objects("meta").Get(t.Context(), sdk.Key{Type: "thing", Name: "lamp"}); err == nil {
		t.Error("the plugin's write is visible outside its namespace")
	}
	var value string
	ask(t, h, "get", "lamp", &value)
	if value != "on" {
		t.Errorf("get: %q, want on", value)
	}
	var missing map[string]bool
	ask(t, h, "get", "nothing", &missing)
	if !missing["notFound"] {
		t.Errorf("get of a missing key: %v, want sdk.ErrNotFound to cross the process boundary", missing)
	}
}

func TestPluginSendsKeepTheirOrderAcrossASyncRequest(t *testing.T) {
	h := sdktest.RunProcess(t, copyPlugin(t), map[string]any{"forwardTo": "sink", "askTo": "oracle"},
		sdktest.ProcessOptions(fast), sdktest.Capture("sink", "oracle"))

	done := make(chan message.Message, 1)
	go func() {
		reply, err := h.SendSync(request(t, "ask", nil), 20*time.Second)
		if err != nil {
			t.Errorf("ask: %v", err)
		}
		done <- reply
	}()
	req := h.Captured("oracle").Next(t, 20*time.Second)
	// The send the plugin made before its SendSync was routed before the request reached the oracle.
	if n := h.Captured("sink").Len(); n != 1 {
		t.Fatalf("when the sync request arrived, %d messages had reached the sink, want the earlier send (1)", n)
	}
	if before := h.Captured("sink").Next(t, time.Second); before.Route.Operation != "before-ask" || before.Route.Source != "echo" {
		t.Errorf("sink got %s from %s", before.Route.Operation, before.Route.Source)
	}
	answer, err := req.Reply("oracle", "forty-two")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Reply(answer); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := (<-done).DecodeContent(&got); err != nil || got != "forty-two" {
		t.Errorf("the plugin's answer: %q, %v; want the oracle's reply passed on", got, err)
	}

	// A direct send's error keeps its identity for errors.Is in the plugin.
	var unknown map[string]bool
	ask(t, h, "send-unknown", nil, &unknown)
	if !unknown["unknown"] {
		t.Error("a send to a missing module did not match sdk.ErrUnknownModule inside the plugin")
	}
}

func TestPluginLogsLandInTheHostLogTaggedWithTheModule(t *testing.T) {
	var l logs
	h := sdktest.RunProcess(t, copyPlugin(t), nil, sdktest.ProcessOptions(fast), sdktest.Logger(l.logger()))

	ask(t, h, "log", nil, nil)
	r := l.waitRecord(t, "hello from the plugin")
	want := map[string]any{"module": "echo", "level": "INFO", "n": 42.0, "took": 1.5e9, "err": "just a test", "nested": "map[a:1]"}
	for k, v := range want {
		if r[k] != v {
			t.Errorf("record %q = %v (%T), want %v", k, r[k], r[k], v)
		}
	}
	if g := l.waitRecord(t, "grouped"); g["level"] != "WARN" || g["req.id"] == nil || g["module"] != "echo" {
		t.Errorf("grouped record: %v, want level WARN and the group flattened to req.id", g)
	}
	for _, rec := range l.records() {
		if rec["msg"] == "debug record" {
			t.Error("a debug record reached a host logging at info")
		}
	}

	// Plain stdout and stderr of the plugin reach the log too.
	ask(t, h, "stdout", nil, nil)
	eventually(t, "stdout and stderr lines in the log", func() bool {
		s := l.String()
		return strings.Contains(s, "a line on stdout after the handshake") && strings.Contains(s, "a line on stderr")
	})
}

func TestPluginMetricsAreGatheredByTheHost(t *testing.T) {
	h := sdktest.RunProcess(t, copyPlugin(t), nil, sdktest.ProcessOptions(fast))
	for range 5 {
		ask(t, h, "greet", nil, nil)
	}
	if got := metric(t, h.Metrics, "echo_handled_total"); got != 5 {
		t.Errorf("echo_handled_total{module=echo} = %v, want 5 (the plugin's own counter)", got)
	}
	if got := metric(t, h.Metrics, "kedge_plugin_restarts_total"); got != 0 {
		t.Errorf("kedge_plugin_restarts_total = %v, want 0", got)
	}
}

func TestPluginCrashMidStreamIsRestartedAndLosesNoMessage(t *testing.T) {
	const total, crashAt = 50, 20
	var l logs
	marker := filepath.Join(t.TempDir(), "crashed")
	h := sdktest.RunProcess(t, copyPlugin(t), map[string]any{"forwardTo": "sink", "crashAt": crashAt, "crashMarker": marker},
		sdktest.ProcessOptions(fast), sdktest.Capture("sink"), sdktest.Logger(l.logger()))

	for i := 1; i <= total; i++ {
		if err := h.Send(request(t, "forward", i)); err != nil {
			t.Fatal(err)
		}
	}
	for want := 1; want <= total; want++ {
		var got int
		if err := h.Captured("sink").Next(t, 20*time.Second).DecodeContent(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("sink got message %d, want %d: lost or out of order", got, want)
		}
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("the plugin never crashed (marker: %v): the test proves nothing", err)
	}
	if m, err := h.Captured("sink").Receive(200 * time.Millisecond); err == nil {
		t.Errorf("an extra message reached the sink: %s", m.Content)
	}
	if got := metric(t, h.Metrics, "kedge_plugin_restarts_total"); got != 1 {
		t.Errorf("kedge_plugin_restarts_total = %v, want 1", got)
	}
	if got := metric(t, h.Metrics, "kedge_plugin_handle_rpc_errors_total"); got != 1 {
		t.Errorf("kedge_plugin_handle_rpc_errors_total = %v, want 1", got)
	}
	if r := l.waitRecord(t, "plugin exited unexpectedly; restarting it"); !strings.Contains(r["cause"].(string), "exit status 3") {
		t.Errorf("crash log cause = %v, want the plugin's exit status", r["cause"])
	}
	if err := h.Healthy(); err != nil {
		t.Errorf("after the restart: %v", err)
	}
}

func TestPluginKilledWhileIdleIsRestarted(t *testing.T) {
	h := sdktest.RunProcess(t, copyPlugin(t), nil, sdktest.ProcessOptions(fast))
	var pid int
	ask(t, h, "pid", nil, &pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, "restart counted", func() bool { return metric(t, h.Metrics, "kedge_plugin_restarts_total") == 1 })
	var next int
	ask(t, h, "pid", nil, &next)
	if next == pid || next == 0 {
		t.Errorf("pid after the restart = %d, want a new process (was %d)", next, pid)
	}
}

func TestPluginPanicOnAMessageIsACrashAndTheHostStaysHealthy(t *testing.T) {
	var l logs
	opts := fast
	opts.MaxAttempts = 2
	h := sdktest.RunProcess(t, copyPlugin(t), nil, sdktest.ProcessOptions(opts), sdktest.Logger(l.logger()))

	reply := ask(t, h, "panic", nil, nil)
	if reply.Route.Operation != message.OpError || !strings.Contains(string(reply.Content), "failed 2 times") {
		t.Errorf("reply to the poison message: %s %s, want an error after 2 attempts", reply.Route.Operation, reply.Content)
	}
	var greeting string
	ask(t, h, "greet", nil, &greeting) // the next message goes to the restarted plugin
	if greeting != "hello" {
		t.Errorf("after the panics: %q", greeting)
	}
	if got := metric(t, h.Metrics, "kedge_plugin_restarts_total"); got != 2 {
		t.Errorf("kedge_plugin_restarts_total = %v, want 2 (one per attempt)", got)
	}
	eventually(t, "the panic's stderr in the log", func() bool { return strings.Contains(l.String(), "told to panic on a message") })
}

func TestPluginPanicInStartFailsTheStartAndLeavesNothing(t *testing.T) {
	path := copyPlugin(t)
	_, err := manager(t, map[string]any{"echo": echoBlock(path, map[string]any{"panicOnStart": true})}, fast, nil)
	if err == nil || !strings.Contains(err.Error(), "panic in Start: told to panic in Start") || !strings.Contains(err.Error(), path) {
		t.Fatalf("start: %v; want the panic, naming the plugin", err)
	}
	if pids := processesOf(path); len(pids) > 0 {
		t.Errorf("plugin processes left after the failed start: %v", pids)
	}
	hostStillWorks(t)
}

// TestPluginConfigIsDecodedStrictly proves a plugin decodes its settings strictly, and that the mistake
// is reported against the host's config file before anything starts (the plugin's Validate call).
func TestPluginConfigIsDecodedStrictly(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config map[string]any
		want   string
	}{
		{"wrong type", map[string]any{"greeting": 5}, "test.yaml: modules.echo.greeting: expected a string, got integer 5"},
		{"unknown key", map[string]any{"greting": "hi"}, "test.yaml: modules.echo.greting: unknown key"},
		{"int from a float", map[string]any{"crashAt": 1.5}, "test.yaml: modules.echo.crashAt: expected an integer, got number 1.5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := manager(t, map[string]any{"echo": echoBlock(copyPlugin(t), tc.config)}, fast, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("start: %v; want %q", err, tc.want)
			}
		})
	}
}

func TestUnhealthyModuleIsReported(t *testing.T) {
	h := sdktest.RunProcess(t, copyPlugin(t), map[string]any{"unhealthy": "sensor offline"}, sdktest.ProcessOptions(fast))
	if err := h.Healthy(); err == nil || !strings.Contains(err.Error(), "sensor offline") {
		t.Errorf("healthy: %v; want the module's own reason", err)
	}
}

func TestStopLeavesNoProcess(t *testing.T) {
	path := copyPlugin(t)
	h := sdktest.RunProcess(t, path, nil, sdktest.ProcessOptions(fast))
	ask(t, h, "greet", nil, nil)
	if pids := processesOf(path); len(pids) != 1 {
		t.Fatalf("running plugin processes: %v, want 1", pids)
	}
	if err := h.Stop(); err != nil {
		t.Fatal(err)
	}
	if pids := processesOf(path); len(pids) > 0 {
		t.Errorf("plugin processes left after Stop: %v", pids)
	}
}

func TestPluginIgnoresSIGTERMSoTheHostCanStopItInOrder(t *testing.T) {
	var l logs
	h := sdktest.RunProcess(t, copyPlugin(t), nil, sdktest.ProcessOptions(fast), sdktest.Logger(l.logger()))
	var pid int
	ask(t, h, "pid", nil, &pid)
	// systemd's stop and timeout(1) signal the host's whole cgroup or process group at once.
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ask(t, h, "greet", nil, nil)
	if err := h.Stop(); err != nil {
		t.Fatalf("stop after SIGTERM: %v", err)
	}
	l.waitRecord(t, "echo stopping") // the module's own Stop ran in the plugin
	if alive(pid) {
		t.Errorf("plugin %d still runs after Stop", pid)
	}
}

// hostStillWorks proves a failure left the host able to run plugins.
func hostStillWorks(t *testing.T) {
	t.Helper()
	h := sdktest.RunProcess(t, copyPlugin(t), nil, sdktest.ProcessOptions(fast))
	ask(t, h, "greet", nil, nil)
}
