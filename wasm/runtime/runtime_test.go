package wasmruntime

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/host/config"
	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/wasm/manifest"
)

// outcome mirrors the probe guest's reply content.
type outcome struct {
	Err     string
	Denied  bool
	Unknown bool
	Value   string
	Count   int
	Listed  int
	Existed bool
}

func probeBlock(t *testing.T, settings map[string]any) map[string]any {
	return wasmBlock(t, guests.probe, settings)
}

func TestEchoAnswersThroughTheModuleManager(t *testing.T) {
	e := start(t, map[string]any{"echo": wasmBlock(t, guests.echo, nil)})
	req, _ := message.New("tester", "", message.OpQuery, "ok/item").WithContent(map[string]any{"a": []int{1, 2}})
	r, err := e.rt.SendSync(context.Background(), "echo", req, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Content) != string(req.Content) || r.Header.ParentID != req.Header.ID || r.Route.Source != "echo" ||
		r.Route.Operation != message.OpResponse || r.Route.Resource != "ok/item" || r.Header.ID == "" || r.Header.Timestamp == 0 {
		t.Fatalf("reply %s content %s, want the request's content back from echo", r, r.Content)
	}
}

func TestGuestGetsItsNameNodeGroupAndSettings(t *testing.T) {
	e := start(t, map[string]any{"probe": probeBlock(t, map[string]any{"group": "probes", "greeting": "hi", "limits": map[string]any{"max": 3}})})
	var got struct {
		Name, Node, Group string
		Config            map[string]any
	}
	e.callOK(t, "probe", "whoami", nil, &got)
	if got.Name != "probe" || got.Node != "node-1" || got.Group != "probes" || got.Config["greeting"] != "hi" ||
		got.Config["limits"].(map[string]any)["max"] != 3.0 {
		t.Fatalf("guest saw %+v", got)
	}
}

func TestGuestUsesItsOwnStoreNamespace(t *testing.T) {
	e := start(t, map[string]any{"probe": probeBlock(t, nil)})
	var out outcome
	e.callOK(t, "probe", "store", map[string]string{"key": "a", "value": "first"}, &out)
	e.callOK(t, "probe", "store", map[string]string{"key": "b", "value": "second"}, &out)
	if out.Err != "" || out.Value != "second" || out.Listed != 2 {
		t.Fatalf("store round trip: %+v", out)
	}
	obj, err := e.db.Objects("probe").Get(context.Background(), store.Key{Type: "note", Name: "a"})
	if err != nil || string(obj.Value) != "first" {
		t.Fatalf("object in the probe namespace: %v %q", err, obj.Value)
	}
	if _, err := e.db.Objects("meta").Get(context.Background(), store.Key{Type: "note", Name: "a"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the guest's object leaked into another namespace: %v", err)
	}
	e.callOK(t, "probe", "store-delete", map[string]string{"key": "a"}, &out)
	if !out.Existed {
		t.Fatal("delete did not find the object")
	}
	out = outcome{}
	e.callOK(t, "probe", "store-get", map[string]string{"key": "a"}, &out)
	if !strings.Contains(out.Err, "not found") || out.Denied {
		t.Fatalf("get of a deleted key: %+v, want a not-found error", out)
	}
}

func TestSendIsAllowedOnlyWhereTheManifestGrants(t *testing.T) {
	e := start(t, map[string]any{"probe": probeBlock(t, nil)})
	tests := []struct {
		name      string
		req       map[string]string
		delivered bool
		denied    bool
		unknown   bool
	}{
		{"granted module and resource", map[string]string{"to": "sink", "resource": "ok/1", "op": "insert"}, true, false, false},
		{"granted group", map[string]string{"group": "sinks", "resource": "ok/2", "op": "insert"}, true, false, false},
		{"module outside the manifest", map[string]string{"to": "twin-recorder", "resource": "ok/3", "op": "insert"}, false, true, false},
		{"group outside the manifest", map[string]string{"group": "twins", "resource": "ok/4", "op": "insert"}, false, true, false},
		{"resource outside the manifest", map[string]string{"to": "sink", "resource": "secret/5", "op": "insert"}, false, true, false},
		{"granted pattern, no such module", map[string]string{"to": "allowed-nobody", "resource": "ok/6", "op": "insert"}, false, false, true},
		{"message without an operation", map[string]string{"to": "sink", "resource": "ok/7"}, false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out outcome
			e.callOK(t, "probe", "send", tt.req, &out)
			if out.Denied != tt.denied || out.Unknown != tt.unknown || (out.Err == "") != tt.delivered {
				t.Fatalf("guest saw %+v", out)
			}
			if tt.denied && !strings.Contains(out.Err, "not granted by the manifest") {
				t.Fatalf("denial does not say why: %q", out.Err)
			}
			if tt.delivered {
				m := <-e.sink
				if m.Route.Source != "probe" || m.Route.Resource != tt.req["resource"] || string(m.Content) != `{"from":"probe"}` || m.Header.ID == "" {
					t.Fatalf("sink got %s %s", m, m.Content)
				}
			}
		})
	}
	select {
	case m := <-e.sink:
		t.Fatalf("a refused message arrived: %s", m)
	default:
	}
	if got := metricValue(t, e, "kedge_wasm_denied_total", map[string]string{"module": "probe", "capability": "send"}); got != 2 {
		t.Fatalf("send denials counted %v, want 2", got)
	}
	if got := len(e.logs.records(map[string]any{"module": "probe", "capability": "send"})); got != 1 {
		t.Fatalf("send denials logged %d times, want once", got)
	}
}

func TestReplyMayOnlyBeAboutGrantedResources(t *testing.T) {
	e := start(t, map[string]any{"probe": probeBlock(t, nil)})
	var answer string
	e.callOK(t, "probe", "reply-about", map[string]string{"resource": "ok/other"}, &answer)
	if answer != "answer" {
		t.Fatalf("reply content %q", answer)
	}
	if reason := e.callErr(t, "probe", "reply-about", map[string]string{"resource": "secret/x"}); !strings.Contains(reason, `resource "secret/x" is not granted`) {
		t.Fatalf("error reply %q, want the denial", reason)
	}
}

func TestRepliesCarryTheRequestsIdentityWhicheverWayTheyCross(t *testing.T) {
	e := start(t, map[string]any{"probe": probeBlock(t, nil), "echo": wasmBlock(t, guests.echo, nil)})
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	tests := []struct {
		name, to, op string
		content      string
		wantType     string
		wantContent  string
	}{
		// echo's m.Reply(m.Content) crosses as its content alone (reply_content)
		{"content only", "echo", "query", `{"a":[1,2,3]}`, "", `{"a":[1,2,3]}`},
		{"content only, empty", "echo", "query", "", "", ""},
		// a changed reply crosses whole (reply), as guests built before reply_content do
		{"whole message", "probe", "reply-full", "", "full", `"full"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := message.New("tester", "g1", tt.op, "ok/item")
			req.Header.ResourceVersion = "7"
			if tt.content != "" {
				req.Content = []byte(tt.content)
			}
			r, err := e.rt.SendSync(context.Background(), tt.to, req, 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			want := message.Header{ParentID: req.Header.ID, ResourceVersion: "7", Sync: true, Type: tt.wantType}
			got := r.Header
			got.ID, got.Timestamp = "", 0
			if got != want {
				t.Errorf("header %+v, want %+v", got, want)
			}
			if !uuid.MatchString(r.Header.ID) || r.Header.ID == req.Header.ID {
				t.Errorf("reply ID %q, want a new v4 UUID", r.Header.ID)
			}
			if age := time.Since(time.UnixMilli(r.Header.Timestamp)); age < -time.Minute || age > time.Minute {
				t.Errorf("reply timestamp %d is %v old", r.Header.Timestamp, age)
			}
			wantRoute := message.Route{Source: tt.to, Destination: "tester", Group: "g1", Operation: message.OpResponse, Resource: "ok/item"}
			if r.Route != wantRoute {
				t.Errorf("route %+v, want %+v", r.Route, wantRoute)
			}
			if string(r.Content) != tt.wantContent {
				t.Errorf("content %q, want %q", r.Content, tt.wantContent)
			}
		})
	}
}

func TestContentOnlyReplyIsCheckedLikeAnyReply(t *testing.T) {
	e := start(t, map[string]any{"probe": probeBlock(t, nil)})
	var out outcome
	e.callOK(t, "probe", "reply-invalid", nil, &out)
	if !strings.Contains(out.Err, "reply_content: the content is not valid JSON") {
		t.Fatalf("guest saw %q, want the invalid content named", out.Err)
	}
	// A request about a resource the manifest does not grant cannot be answered, even plainly.
	req := message.New("tester", "", "count", "secret/x")
	r, err := e.rt.SendSync(context.Background(), "probe", req, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.Route.Operation != message.OpError || !strings.Contains(string(r.Content), `reply about resource \"secret/x\" is not granted`) {
		t.Fatalf("reply %s %s, want the denial", r.Route.Operation, r.Content)
	}
}

func TestLockedModuleIsDeniedEveryCapability(t *testing.T) {
	e := start(t, map[string]any{"locked": wasmBlock(t, guests.locked, nil)})
	for _, tt := range []struct {
		op  string
		req map[string]string
	}{
		{"store", map[string]string{"key": "a", "value": "v"}},
		{"log", map[string]string{"msg": "let me in"}},
		{"send", map[string]string{"to": "sink", "resource": "ok/1", "op": "insert"}},
	} {
		var out outcome
		e.callOK(t, "locked", tt.op, tt.req, &out)
		if !out.Denied {
			t.Fatalf("%s: guest saw %+v, want a denial", tt.op, out)
		}
	}
	var out outcome
	e.callOK(t, "locked", "print", map[string]string{"msg": "printed by the locked guest"}, &out)
	if n := len(e.logs.records(map[string]any{"msg": "printed by the locked guest"})); n != 0 {
		t.Fatal("a guest without the log capability reached the log through stdout")
	}
	for c, want := range map[string]float64{"store": 1, "send": 1, "log": 2} { // log: the call and the print
		if n := metricValue(t, e, "kedge_wasm_denied_total", map[string]string{"module": "locked", "capability": c}); n != want {
			t.Errorf("%s denials counted %v, want %v", c, n, want)
		}
	}
}

func TestGuestLogLandsInTheHostLogTaggedWithTheModule(t *testing.T) {
	e := start(t, map[string]any{"probe": probeBlock(t, nil)})
	var out outcome
	e.callOK(t, "probe", "log", map[string]string{"msg": "hello from the guest"}, &out)
	e.callOK(t, "probe", "print", map[string]string{"msg": "printed by the guest"}, &out)
	if out.Err != "" {
		t.Fatal(out.Err)
	}
	if n := len(e.logs.records(map[string]any{"module": "probe", "level": "WARN", "msg": "hello from the guest"})); n != 1 {
		t.Fatalf("%d log records from the guest's log call, want 1", n)
	}
	if n := len(e.logs.records(map[string]any{"module": "probe", "msg": "printed by the guest"})); n != 1 {
		t.Fatalf("%d log records from the guest's stdout, want 1", n)
	}
	e.callOK(t, "probe", "now", nil, &out)
	if ns, _ := json.Number(out.Value).Int64(); time.Since(time.Unix(0, ns)).Abs() > time.Hour {
		t.Fatalf("guest clock says %v", time.Unix(0, ns))
	}
}

func TestRunawayGuestIsKilledAndReinstantiatedAtOnce(t *testing.T) {
	e := start(t, map[string]any{"probe": probeBlock(t, nil), "echo": wasmBlock(t, guests.echo, nil)})
	var out outcome
	e.callOK(t, "probe", "count", nil, &out)
	e.callOK(t, "probe", "count", nil, &out)
	if out.Count != 2 {
		t.Fatalf("count %d, want 2", out.Count)
	}
	if reason := e.callErr(t, "probe", "sleep", nil); !strings.Contains(reason, "killed: the call ran past its 1s deadline") {
		t.Fatalf("error reply %q, want the deadline named", reason)
	}
	e.callOK(t, "probe", "count", nil, &out)
	if reason := e.callErr(t, "probe", "spin", nil); !strings.Contains(reason, "killed: the call ran past its 1s deadline") {
		t.Fatalf("error reply %q, want the deadline named", reason)
	}
	// A new instance is made at once: the module is ready again without waiting for a message.
	if err := e.mgr.Ready(context.Background()); err != nil {
		t.Fatalf("Ready right after the kill: %v (an idle module must not stay unready)", err)
	}
	e.callOK(t, "echo", "query", "still here", nil) // the host and the other modules are fine
	e.callOK(t, "probe", "count", nil, &out)
	if out.Count != 1 {
		t.Fatalf("count %d after the kill, want 1 from a fresh instance", out.Count)
	}
	if n := metricValue(t, e, "kedge_wasm_instance_lost_total", map[string]string{"module": "probe", "reason": "deadline"}); n != 2 {
		t.Fatalf("lost instances counted %v, want 2", n)
	}
}

func TestModulesSayHowTheyAreStoppedAtTheirDeadline(t *testing.T) {
	e := start(t, map[string]any{
		"probe":   probeBlock(t, nil),
		"fast":    wasmBlock(t, guests.echo, map[string]any{"interruptible": false}),
		"refused": wasmBlock(t, guests.refused, nil),
	})
	tests := []struct{ module, stop string }{
		{"probe", "check"},    // instrumented: Kedge's loop checks, no wazero checks
		{"fast", "none"},      // interruptible: false
		{"refused", "wazero"}, // the instrumenter refused it: wazero's checks
	}
	for _, tt := range tests {
		t.Run(tt.module+" stops by "+tt.stop, func(t *testing.T) {
			if n := metricValue(t, e, "kedge_wasm_stop_info", map[string]string{"module": tt.module, "stop": tt.stop}); n != 1 {
				t.Fatalf("kedge_wasm_stop_info{module=%q,stop=%q} = %v, want 1", tt.module, tt.stop, n)
			}
		})
	}
	if recs := e.logs.records(map[string]any{"module": "refused", "level": "WARN"}); len(recs) != 1 ||
		!strings.Contains(recs[0]["reason"].(string), `already exports "kedge.stop"`) {
		t.Fatalf("log records for the refused module: %v, want one warning with the instrumenter's reason", recs)
	}
}

func TestGarbageCollectionDoesNotWaitForARunawayGuest(t *testing.T) {
	// The instrumented guest's loop yields to Go every instrument.Budget iterations; without that,
	// a collection's stop-the-world would wait on the looping goroutine, and so would the watchdog.
	e := start(t, map[string]any{"probe": probeBlock(t, nil)})
	done := make(chan string, 1)
	go func() {
		r, err := e.call(t, "probe", "spin", nil) // no t.Fatal off the test's goroutine
		if err != nil {
			done <- err.Error()
			return
		}
		done <- r.Route.Operation + " " + string(r.Content)
	}()
	for {
		gc := make(chan struct{})
		go func() { runtime.GC(); close(gc) }()
		select {
		case <-gc:
		case <-time.After(30 * time.Second):
			t.Fatal("a garbage collection waited 30s on the looping guest")
		}
		select {
		case reason := <-done:
			if !strings.Contains(reason, "killed: the call ran past its 1s deadline") {
				t.Fatalf("error reply %q, want the deadline named", reason)
			}
			return
		default:
		}
	}
}

func TestLoopFreeRecursionIsKilledAtItsDeadlineWithoutHoldingUpGarbageCollection(t *testing.T) {
	// The fib guest has no loop at all: only the checks at function entries stop it and let it
	// yield to Go.
	e := start(t, map[string]any{"fib": wasmBlock(t, guests.fib, nil)})
	if n := metricValue(t, e, "kedge_wasm_stop_info", map[string]string{"module": "fib", "stop": "check"}); n != 1 {
		t.Fatalf("kedge_wasm_stop_info{module=fib,stop=check} = %v, want 1 (instrumented)", n)
	}
	for i := 1; i <= 2; i++ { // the second call runs on the instance made after the first kill
		done := make(chan string, 1)
		go func() {
			r, err := e.call(t, "fib", "compute", nil) // no t.Fatal off the test's goroutine
			if err != nil {
				done <- err.Error()
				return
			}
			done <- r.Route.Operation + " " + string(r.Content)
		}()
	wait:
		for {
			gc := make(chan struct{})
			go func() { runtime.GC(); close(gc) }()
			select {
			case <-gc:
			case <-time.After(30 * time.Second):
				t.Fatal("a garbage collection waited 30s on the recursing guest")
			}
			select {
			case reason := <-done:
				if !strings.Contains(reason, "killed: the call ran past its 1s deadline") {
					t.Fatalf("call %d: error reply %q, want the deadline named", i, reason)
				}
				break wait
			default:
			}
		}
		if err := e.mgr.Ready(context.Background()); err != nil {
			t.Fatalf("Ready right after kill %d: %v", i, err)
		}
		if n := metricValue(t, e, "kedge_wasm_instance_lost_total", map[string]string{"module": "fib", "reason": "deadline"}); n != float64(i) {
			t.Fatalf("lost instances counted %v, want %d", n, i)
		}
	}
}

func TestModuleTheInstrumenterRefusesIsStillKilledAtItsDeadline(t *testing.T) {
	e := start(t, map[string]any{"refused": wasmBlock(t, guests.refused, nil)})
	var out outcome
	e.callOK(t, "refused", "count", nil, &out)
	if reason := e.callErr(t, "refused", "spin", nil); !strings.Contains(reason, "killed: the call ran past its 1s deadline") {
		t.Fatalf("error reply %q, want the deadline named", reason)
	}
	if err := e.mgr.Ready(context.Background()); err != nil {
		t.Fatalf("Ready right after the kill: %v", err)
	}
	e.callOK(t, "refused", "count", nil, &out)
	if out.Count != 1 {
		t.Fatalf("count %d after the kill, want 1 from a fresh instance", out.Count)
	}
	if n := metricValue(t, e, "kedge_wasm_instance_lost_total", map[string]string{"module": "refused", "reason": "deadline"}); n != 1 {
		t.Fatalf("lost instances counted %v, want 1", n)
	}
}

func TestGuestFailuresFailOnlyTheirMessage(t *testing.T) {
	e := start(t, map[string]any{"probe": probeBlock(t, nil)})
	tests := []struct {
		op         string
		reason     string
		countAfter int // the probe's in-memory count after the next message: 1 means a new instance
	}{
		{"fail", "probe fails on purpose", 2},
		{"panic", "panic: probe panics on purpose", 3},
		{"exit", "exited with code 3", 1},
		{"hog", "out of memory", 1},
	}
	var out outcome
	e.callOK(t, "probe", "count", nil, &out)
	for _, tt := range tests {
		t.Run(tt.op, func(t *testing.T) {
			if reason := e.callErr(t, "probe", tt.op, nil); !strings.Contains(reason, tt.reason) {
				t.Fatalf("error reply %q, want %q", reason, tt.reason)
			}
			e.callOK(t, "probe", "count", nil, &out)
			if out.Count != tt.countAfter {
				t.Fatalf("count %d after %s, want %d", out.Count, tt.op, tt.countAfter)
			}
		})
	}
	for _, reason := range []string{"exit", "memory"} {
		if n := metricValue(t, e, "kedge_wasm_instance_lost_total", map[string]string{"module": "probe", "reason": reason}); n != 1 {
			t.Errorf("instances lost for %s: %v, want 1", reason, n)
		}
	}
}

func TestScalerConvertsStoresAndForwardsReadings(t *testing.T) {
	e := start(t, map[string]any{"scaler": wasmBlock(t, guests.scaler, map[string]any{
		"scale": 0.1, "offset": -40, "unit": "degC", "to": "twin-recorder"})})
	for want := 1; want <= 2; want++ {
		var r struct {
			Value, Raw float64
			Unit       string
			Count      int
		}
		m, _ := message.New("tester", "", "update", "device/d1/register/temp").WithContent(map[string]int{"raw": 700})
		reply, err := e.rt.SendSync(context.Background(), "scaler", m, 30*time.Second)
		if err != nil || json.Unmarshal(reply.Content, &r) != nil {
			t.Fatalf("reply %s %s: %v", reply, reply.Content, err)
		}
		if r.Value != 30 || r.Unit != "degC" || r.Count != want {
			t.Fatalf("reading %+v, want 30 degC, count %d", r, want)
		}
		fwd := <-e.sink
		if fwd.Route.Source != "scaler" || fwd.Route.Resource != "device/d1/reading/temp" || string(fwd.Content) != string(reply.Content) {
			t.Fatalf("forwarded %s %s", fwd, fwd.Content)
		}
	}
	obj, err := e.db.Objects("scaler").Get(context.Background(), store.Key{Type: "reading", Namespace: "d1", Name: "temp"})
	if err != nil || !strings.Contains(string(obj.Value), `"count":2`) {
		t.Fatalf("stored reading %s: %v", obj.Value, err)
	}
}

func TestScalerMayNotForwardWhereItsManifestForbids(t *testing.T) {
	e := start(t, map[string]any{"scaler": wasmBlock(t, guests.scaler, map[string]any{"to": "sink"})})
	m, _ := message.New("tester", "", "update", "device/d1/register/temp").WithContent(map[string]int{"raw": 1})
	m.Header.Sync = true
	if reason := e.callErrMsg(t, "scaler", m); !strings.Contains(reason, `sending to module "sink" is not granted`) {
		t.Fatalf("error reply %q", reason)
	}
}

func TestLoaderRefusesBadModulesWhenTheConfigIsLoaded(t *testing.T) {
	dir := t.TempDir()
	notWASM := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notWASM, []byte("this is not a module\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	probeSum := sumOf(t, guests.probe)
	tests := []struct {
		name  string
		block map[string]any
		want  string
	}{
		{"not WASM", map[string]any{"runtime": "wasm", "path": notWASM, "sha256": sumOf(t, notWASM)}, "not a WebAssembly module"},
		{"missing file", map[string]any{"runtime": "wasm", "path": filepath.Join(dir, "gone.wasm"), "sha256": probeSum}, "no such file"},
		{"wrong checksum", map[string]any{"runtime": "wasm", "path": guests.probe, "sha256": strings.Repeat("0", 64)}, "sha256 mismatch: the file's is " + probeSum},
		{"no checksum", map[string]any{"runtime": "wasm", "path": guests.probe}, "sha256 is required for a wasm module (plugins are pinned): add sha256: " + probeSum},
		{"malformed checksum", map[string]any{"runtime": "wasm", "path": guests.probe, "sha256": "abc"}, "not 64 hex digits"},
		{"no manifest section", map[string]any{"runtime": "wasm", "path": guests.raw, "sha256": sumOf(t, guests.raw)}, "no kedge.manifest section: pack the guest with wasmpack"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := plan(map[string]any{"bad": tt.block}, nil)
			var ce *config.Error
			if !errors.As(err, &ce) || ce.Key != "modules.bad" || !strings.Contains(ce.Problem, tt.want) {
				t.Fatalf("Plan error = %v, want modules.bad: %q", err, tt.want)
			}
		})
	}
}

func TestStartFailsClearlyAndLeavesTheHostClean(t *testing.T) {
	tests := []struct {
		name    string
		block   func(t *testing.T) map[string]any
		corrupt bool // replace the file between Plan and Start
		want    string
	}{
		{"init fails", func(t *testing.T) map[string]any { return probeBlock(t, map[string]any{"failInit": true}) }, false,
			"guest init: failed: probe refuses to start: failInit is set"},
		{"unknown setting", func(t *testing.T) map[string]any { return wasmBlock(t, guests.scaler, map[string]any{"scael": 2}) }, false,
			`unknown field "scael"`},
		{"init runs forever", func(t *testing.T) map[string]any { return probeBlock(t, map[string]any{"spinInit": true}) }, false,
			"killed: ran past its 2s deadline (limits.initDeadline in the manifest)"},
		{"memory limit below the guest's minimum", func(t *testing.T) map[string]any { return wasmBlock(t, guests.tiny, nil) }, false,
			"min 43 pages (2 Mi) over limit of 4 pages (256 Ki): raise limits.memoryPages (4) in the manifest"},
		{"WebAssembly but not a Kedge guest", func(t *testing.T) map[string]any {
			path := filepath.Join(t.TempDir(), "empty.wasm")
			packed, err := manifest.Embed([]byte("\x00asm\x01\x00\x00\x00"), manifest.Manifest{ABI: 1})
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, packed, 0o644); err != nil {
				t.Fatal(err)
			}
			return wasmBlock(t, path, nil)
		}, false, "not a Kedge WASM module: it does not export _initialize"},
		{"file replaced after the config was loaded", func(t *testing.T) map[string]any {
			path := filepath.Join(t.TempDir(), "probe.wasm")
			copyFile(t, guests.probe, path)
			return wasmBlock(t, path, nil)
		}, true, "sha256 mismatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			block := tt.block(t)
			planned, err := plan(map[string]any{"bad": block}, e.sink)
			if err != nil {
				t.Fatal(err)
			}
			if tt.corrupt {
				copyFile(t, guests.locked, block["path"].(string))
			}
			err = e.mgr.Start(context.Background(), planned)
			if err == nil || !strings.Contains(err.Error(), "start module bad") || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Start error = %v, want %q", err, tt.want)
			}
			if got := e.rt.Modules(); len(got) != 0 {
				t.Fatalf("modules left registered after a failed start: %v", got)
			}
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// callErrMsg sends m as a sync request and returns the error reply's reason.
func (e *env) callErrMsg(t *testing.T, to string, m message.Message) string {
	t.Helper()
	r, err := e.rt.SendSync(context.Background(), to, m, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var body struct{ Error string }
	if r.Route.Operation != message.OpError || json.Unmarshal(r.Content, &body) != nil {
		t.Fatalf("reply %s %s, want an error", r, r.Content)
	}
	return body.Error
}

// metricValue is the value of the counter or gauge name with exactly the given labels (0 if absent),
// from the host's registry and the modules' own.
func metricValue(t *testing.T, e *env, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := prometheus.Gatherers{e.reg, e.mgr}.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func TestModuleThatIsNotInterruptibleRunsAndIsStillStoppedWhenItSleeps(t *testing.T) {
	e := start(t, map[string]any{
		"probe": probeBlock(t, map[string]any{"interruptible": false}),
		"echo":  wasmBlock(t, guests.echo, map[string]any{"interruptible": false}),
	})
	e.callOK(t, "echo", "query", "fast path", nil)
	var out outcome
	e.callOK(t, "probe", "count", nil, &out)
	if reason := e.callErr(t, "probe", "sleep", nil); !strings.Contains(reason, "killed: the call ran past its 1s deadline") {
		t.Fatalf("error reply %q, want the deadline named", reason)
	}
	if err := e.mgr.Ready(context.Background()); err != nil {
		t.Fatalf("Ready after the sleeping call was stopped: %v", err)
	}
	e.callOK(t, "probe", "count", nil, &out)
	if out.Count != 1 {
		t.Fatalf("count %d after the stop, want 1 from a fresh instance", out.Count)
	}
	if n := metricValue(t, e, "kedge_wasm_instance_lost_total", map[string]string{"module": "probe", "reason": "deadline"}); n != 1 {
		t.Fatalf("lost instances counted %v, want 1", n)
	}
}

func TestInterruptibleSettingIsTheHostsAndMustBeABool(t *testing.T) {
	tests := []struct {
		name  string
		value any
		want  string // "" means accepted
	}{
		{"true", true, ""},
		{"false", false, ""},
		{"a string", "no", `interruptible: want true or false, got no (string)`},
		{"a number", 0, `interruptible: want true or false, got 0 (int)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			planned, err := plan(map[string]any{"probe": probeBlock(t, map[string]any{"interruptible": tt.value, "extra": 1})}, nil)
			if tt.want != "" {
				var ce *config.Error
				if !errors.As(err, &ce) || ce.Key != "modules.probe" || !strings.Contains(ce.Problem, tt.want) {
					t.Fatalf("Plan error = %v, want modules.probe: %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range planned {
				if m, ok := p.Module.(*Module); ok {
					if m.interruptible != tt.value.(bool) || string(m.config) != `{"extra":1}` {
						t.Fatalf("interruptible %v, guest settings %s; want %v and the setting kept from the guest", m.interruptible, m.config, tt.value)
					}
				}
			}
		})
	}
}
