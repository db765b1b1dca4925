package sdktest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/metamanager"
	"github.com/kedge-io/kedge/plugins/builtin/nodestatus"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// plugins holds the builtin modules built as plugin executables by TestMain (cmd/kedge-module).
var plugins string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kedge-sdktest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	plugins = dir
	code := func() int {
		defer os.RemoveAll(dir)
		for _, name := range []string{metamanager.Name, nodestatus.Name} {
			cmd := exec.Command("go", "build", "-tags", "kedge_custom kedge_"+name, "-ldflags", "-X main.moduleName="+name,
				"-o", filepath.Join(dir, name), "../../cmd/kedge-module")
			if out, err := cmd.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "build %s as a plugin: %v\n%s", name, err, out)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// runtimes runs the same module compiled in and as a plugin built from the same source.
func runtimes(name string) []struct {
	runtime string
	run     func(t *testing.T, config map[string]any, opts ...sdktest.Option) *sdktest.Harness
} {
	info, ok := sdk.Lookup(name)
	if !ok {
		panic(name + " is not registered")
	}
	return []struct {
		runtime string
		run     func(t *testing.T, config map[string]any, opts ...sdktest.Option) *sdktest.Harness
	}{
		{"builtin", func(t *testing.T, config map[string]any, opts ...sdktest.Option) *sdktest.Harness {
			return sdktest.Run(t, info, config, opts...)
		}},
		{"process", func(t *testing.T, config map[string]any, opts ...sdktest.Option) *sdktest.Harness {
			return sdktest.RunProcess(t, filepath.Join(plugins, name), config, opts...)
		}},
	}
}

func TestHarnessRunsMetamanagerCompiledInAndAsAPlugin(t *testing.T) {
	for _, rt := range runtimes(metamanager.Name) {
		t.Run(rt.runtime, func(t *testing.T) {
			h := rt.run(t, map[string]any{"cloudSource": "cloud"})
			if h.Name != metamanager.Name {
				t.Fatalf("name %q", h.Name)
			}
			pod := message.Resource{Namespace: "default", Type: "pod", Name: "web"}.Edge()
			insert, err := message.New(sdktest.Source, "meta", message.OpInsert, pod).WithContent(map[string]string{"image": "nginx"})
			if err != nil {
				t.Fatal(err)
			}
			insert.Header.ResourceVersion = "7"
			if reply, err := h.SendSync(insert, 10*time.Second); err != nil || reply.Route.Operation != message.OpResponse {
				t.Fatalf("insert: %v %v", reply.Route.Operation, err)
			}
			obj, err := h.Store().Get(context.Background(), sdk.Key{Type: "pod", Namespace: "default", Name: "web"})
			if err != nil || obj.ResourceVersion != 7 {
				t.Fatalf("stored object: %+v, %v", obj, err)
			}
			got, err := h.SendSync(message.New(sdktest.Source, "meta", message.OpQuery, pod), 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var content map[string]string
			if err := got.DecodeContent(&content); err != nil || content["image"] != "nginx" {
				t.Errorf("query answer %s, %v", got.Content, err)
			}
			// An operation it refuses comes back as an error reply, whatever the runtime.
			bad, err := h.SendSync(message.New(sdktest.Source, "meta", "frobnicate", pod), 10*time.Second)
			if err != nil || bad.Route.Operation != message.OpError || !strings.Contains(string(bad.Content), "not supported") {
				t.Errorf("unsupported operation: %s %s, %v", bad.Route.Operation, bad.Content, err)
			}
		})
	}
}

func TestHarnessCapturesWhatNodestatusSends(t *testing.T) {
	for _, rt := range runtimes(nodestatus.Name) {
		t.Run(rt.runtime, func(t *testing.T) {
			h := rt.run(t, map[string]any{"interval": "1s"}, sdktest.Capture(metamanager.Name))
			req := h.Captured(metamanager.Name).Next(t, 20*time.Second)
			want := message.Resource{Namespace: "default", Type: "nodestatus", Name: sdktest.NodeName}.Edge()
			if req.Route.Resource != want || req.Route.Source != nodestatus.Name || !req.Header.Sync {
				t.Fatalf("sent %s, want a sync update of %s from nodestatus", req, want)
			}
			var st nodestatus.Status
			if err := req.DecodeContent(&st); err != nil || st.NodeName != sdktest.NodeName || st.Capacity["memory"] == "" {
				t.Fatalf("status %+v, %v", st, err)
			}
			ok, err := req.Reply(metamanager.Name, "OK")
			if err != nil {
				t.Fatal(err)
			}
			if err := h.Reply(ok); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(20 * time.Second)
			for reports(t, h) < 1 {
				if time.Now().After(deadline) {
					t.Fatal("kedge_nodestatus_reports_total{module=nodestatus} did not count the acknowledged report")
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := h.Healthy(); err != nil {
				t.Error(err)
			}
		})
	}
}

func reports(t *testing.T, h *sdktest.Harness) float64 {
	fams, err := h.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "kedge_nodestatus_reports_total" {
			for _, m := range f.GetMetric() {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// echo answers every message with its content, or with the content's length for operation "ack"
// (the builtin side of the round-trip benchmarks).
type echo struct{ host sdk.Host }

func (e *echo) Start(_ context.Context, h sdk.Host) error { e.host = h; return nil }
func (e *echo) Stop(context.Context) error                { return nil }
func (e *echo) Handle(ctx context.Context, m sdk.Message) error {
	var answer any = m.Content
	if m.Route.Operation == "ack" {
		answer = len(m.Content)
	}
	r, err := m.Reply(e.host.Name(), answer)
	if err != nil {
		return err
	}
	return e.host.Reply(ctx, r)
}

var echoInfo = sdk.Info{Name: "echo", Group: "test", New: func() sdk.Module { return &echo{} }}

func TestHarnessSendsAndCapturesReplies(t *testing.T) {
	h := sdktest.Run(t, echoInfo, nil)
	m, _ := message.New(sdktest.Source, "test", "ping", "x").WithContent("hello")
	if err := h.Send(m); err != nil { // not sync: the reply goes to Source's mailbox
		t.Fatal(err)
	}
	r := h.Captured(sdktest.Source).Next(t, 5*time.Second)
	if r.Header.ParentID != m.Header.ID || string(r.Content) != `"hello"` {
		t.Errorf("reply %s %s", r, r.Content)
	}
}

// BenchmarkBuiltinRoundTrip1KiB: the builtin counterpart of host/process's BenchmarkRoundTrip1KiB, a
// 1 KiB request into a module through the router and the real manager, and its reply (the length).
func BenchmarkBuiltinRoundTrip1KiB(b *testing.B) {
	h := sdktest.Run(b, echoInfo, nil, sdktest.Logger(discard()))
	req, err := message.New(sdktest.Source, "test", "ack", "bench").WithContent(json.RawMessage(`"` + strings.Repeat("k", 1022) + `"`))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		if resp, err := h.SendSync(req, 10*time.Second); err != nil || string(resp.Content) != "1024" {
			b.Fatalf("round trip: %v (%s back)", err, resp.Content)
		}
	}
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N)/1e3, "µs/roundtrip")
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
