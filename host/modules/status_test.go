package modules

import (
	"context"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/sdk"
)

// busy is a test module whose Handle holds its message until release is closed.
type busy struct {
	handling chan struct{} // closed when Handle has the message
	release  chan struct{}
}

func (*busy) Start(context.Context, sdk.Host) error { return nil }
func (*busy) Stop(context.Context) error            { return nil }
func (b *busy) Handle(context.Context, sdk.Message) error {
	close(b.handling)
	<-b.release
	return nil
}

// A module whose Handle asks for the modules' status (pluginmanager does, through the control
// socket, while it health-checks a swapped module) must not wait for its own message in hand; nor
// must /metrics or a reload's comparison wait for a slow Handle.
func TestStatusGatherAndPlannedDoNotWaitForAMessageInHand(t *testing.T) {
	tests := []struct {
		name string
		call func(mgr *Manager) error
	}{
		{"Status", func(mgr *Manager) error {
			if st := mgr.Status(context.Background()); len(st) != 1 || st[0].Name != "slow" {
				t.Errorf("Status = %+v, want module slow", st)
			}
			return nil
		}},
		{"Gather", func(mgr *Manager) error { _, err := mgr.Gather(); return err }},
		{"Planned", func(mgr *Manager) error {
			if _, ok := mgr.Planned("slow"); !ok {
				t.Error("Planned(slow) not found")
			}
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			ctx := context.Background()
			b := &busy{handling: make(chan struct{}), release: make(chan struct{})}
			p := []Planned{{Info: sdk.Info{Name: "slow", Group: "test"}, Module: b, Settings: Settings{Runtime: Builtin}}}
			if err := h.mgr.Start(ctx, p); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = h.mgr.Stop(ctx) })
			defer close(b.release)
			if err := h.rt.Send(ctx, "slow", message.New("t", "test", "update", "ns/t/1")); err != nil {
				t.Fatal(err)
			}
			<-b.handling
			done := make(chan error, 1)
			go func() { done <- tt.call(h.mgr) }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s waited for the message the module is handling", tt.name)
			}
		})
	}
}

// versioned is a plugin-like module that reports a release version (a process plugin's stamped one,
// a WASM manifest's).
type versioned struct {
	busy
	v string
}

func (v *versioned) Version() string { return v.v }

// module ls shows which release runs: the host's for builtin, the plugin's own (or "-") for process
// and wasm, with the file's sha256 beside it; Version keeps the combined form older readers parse.
func TestStatusReportsEachRuntimesRelease(t *testing.T) {
	sum := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		name                        string
		rt                          Runtime
		mod                         sdk.Module
		sha                         string
		wantRelease, wantSHA, wantV string
	}{
		{"builtin shows the host's version", Builtin, &busy{}, "", Version, "", Version},
		{"a process plugin that reports 1.2.3", Process, &versioned{v: "1.2.3"}, sum, "1.2.3", "sha256:0123456789ab", "1.2.3 (sha256:0123456789ab)"},
		{"a process plugin that reports none", Process, &versioned{}, sum, "-", "sha256:0123456789ab", "sha256:0123456789ab"},
		{"a process module without a Version method", Process, &busy{}, sum, "-", "sha256:0123456789ab", "sha256:0123456789ab"},
		{"a wasm module with a manifest version", WASM, &versioned{v: "2.0.0"}, sum, "2.0.0", "sha256:0123456789ab", "2.0.0 (sha256:0123456789ab)"},
		{"a plugin with no pinned sha256", Process, &versioned{v: "1.2.3"}, "", "1.2.3", "", "1.2.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			ctx := context.Background()
			p := []Planned{{Info: sdk.Info{Name: "m", Group: "test"}, Module: tt.mod, Settings: Settings{Runtime: tt.rt, SHA256: tt.sha}}}
			if err := h.mgr.Start(ctx, p); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = h.mgr.Stop(ctx) })
			st := h.mgr.Status(ctx)
			if len(st) != 1 || st[0].Release != tt.wantRelease || st[0].SHA256 != tt.wantSHA || st[0].Version != tt.wantV {
				t.Fatalf("Status = %+v; want release %q, sha256 %q, version %q", st, tt.wantRelease, tt.wantSHA, tt.wantV)
			}
		})
	}
}
