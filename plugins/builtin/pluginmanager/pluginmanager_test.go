package pluginmanager

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugin-registry/index"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
	"github.com/kedge-io/kedge/wasm/manifest"
)

type rig struct {
	reg        *testRegistry
	ctl        *fakeControl
	h          *sdktest.Harness
	pluginsDir string
}

func info(now func() time.Time) sdk.Info {
	i, _ := sdk.Lookup(Name)
	i.New = func() sdk.Module { m := New(); m.now = now; return m }
	return i
}

func (r *rig) config() map[string]any {
	return map[string]any{"registryURL": r.reg.url, "caFile": r.reg.certs.caFile, "certFile": r.reg.certs.certFile, "keyFile": r.reg.certs.keyFile,
		"trustedKeys": []any{r.reg.pubFile}, "pluginsDir": r.pluginsDir, "controlSocket": r.ctl.socket,
		"healthTimeout": "10s", "healthStable": "200ms"}
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{reg: newRegistry(t), ctl: newFakeControl(t, "nodestatus"), pluginsDir: t.TempDir()}
	r.reg.publish(t, "nodestatus", "1.0.0", "plugin v1")
	r.reg.publish(t, "nodestatus", "2.0.0", "plugin v2")
	r.reg.publish(t, "nodestatus", "3.0.0", "plugin v3 BROKEN")
	r.reg.publish(t, "nodestatus", "4.0.0", "plugin v4 UNHEALTHY")
	r.start(t, nil)
	return r
}

func (r *rig) start(t *testing.T, now func() time.Time) {
	t.Helper()
	if r.h != nil {
		_ = r.h.Stop()
	}
	r.h = sdktest.Run(t, info(now), r.config(), sdktest.Capture("edgehub"))
}

// roll delivers a pluginrollout the way metamanager does and returns the reports up to a final one.
func (r *rig) roll(t *testing.T, gen int64, version, runtime string, granted ...string) []Report {
	t.Helper()
	m, err := message.New("metamanager", "resource", message.OpUpdate, "default/pluginrollout/ns-update").WithContent(Rollout{
		Rollout: "default/ns-update", Generation: gen, Plugin: "nodestatus", Version: version, Runtime: runtime, Module: "nodestatus", GrantedCapabilities: granted})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.h.Send(m); err != nil {
		t.Fatal(err)
	}
	return r.reports(t)
}

func (r *rig) reports(t *testing.T) []Report {
	t.Helper()
	var out []Report
	for {
		msg := r.h.Captured("edgehub").Next(t, 30*time.Second)
		if msg.Route.Group != "plugin" || msg.Route.Operation != message.OpUpdate || msg.Route.Resource != "default/pluginstatus/ns-update" {
			t.Fatalf("report routed %+v, want group plugin, update default/pluginstatus/ns-update", msg.Route)
		}
		var rep Report
		if err := msg.DecodeContent(&rep); err != nil {
			t.Fatal(err)
		}
		out = append(out, rep)
		if rep.State != StateInstalling {
			return out
		}
	}
}

func states(reps []Report) string {
	var s []string
	for _, r := range reps {
		s = append(s, r.State)
	}
	return strings.Join(s, ",")
}

func TestRolloutInstallsVerifiesSwapsAndRollsBackToTheLastGoodVersion(t *testing.T) {
	r := newRig(t)
	steps := []struct {
		name      string
		gen       int64
		version   string
		want      string // states reported
		runs      string // version folder of the file running afterwards
		swapsMade int    // successful swaps in total afterwards
	}{
		{"v1 is fetched, verified, installed, swapped in and reported Updated", 1, "1.0.0", "Installing,Updated", "1.0.0", 1},
		{"the same generation delivered again is reported without reinstalling", 1, "1.0.0", "Updated", "1.0.0", 1},
		{"v2 replaces v1", 2, "2.0.0", "Installing,Updated", "2.0.0", 2},
		{"v3 whose instance does not start leaves v2 running: RolledBack", 3, "3.0.0", "Installing,RolledBack", "2.0.0", 2},
		{"v4 that turns unhealthy after its swap is swapped back to v2: RolledBack", 4, "4.0.0", "Installing,RolledBack", "2.0.0", 4},
		{"a failed generation delivered again is reported again, not retried", 4, "4.0.0", "RolledBack", "2.0.0", 4},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			reps := r.roll(t, s.gen, s.version, "process")
			if got := states(reps); got != s.want {
				t.Fatalf("reports %s, want %s: %+v", got, s.want, reps)
			}
			last := reps[len(reps)-1]
			if last.Rollout != "default/ns-update" || last.Generation != s.gen || last.Version != s.version || last.Message == "" {
				t.Fatalf("report %+v lacks rollout, generation, version or message", last)
			}
			st, swaps := r.ctl.state()
			want := filepath.Join(r.pluginsDir, "nodestatus", s.runs, "nodestatus")
			if st.Path != want || string(st.Runtime) != "process" || len(swaps) != s.swapsMade {
				t.Fatalf("module runs %s %s after %d swaps, want process %s after %d", st.Runtime, st.Path, len(swaps), want, s.swapsMade)
			}
			good, err := os.ReadFile(filepath.Join(r.pluginsDir, lastGoodDir, "nodestatus.json"))
			if err != nil || !strings.Contains(string(good), want) {
				t.Fatalf("last good record %s (%v), want it to name %s", good, err, want)
			}
		})
	}
}

func TestRefusedPluginsAreReportedFailedAndNothingIsInstalled(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, r *rig)
		version string
		runtime string
		granted []string
		want    string
	}{
		{"a tampered artifact", func(t *testing.T, r *rig) {
			if err := os.WriteFile(r.reg.artifactOf(t, "nodestatus", "2.0.0"), []byte("plugin v2 evil"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "2.0.0", "process", nil, "tampered"},
		{"an index signed by another key", func(t *testing.T, r *rig) {
			other := t.TempDir()
			if _, err := index.WriteKeyPair(other); err != nil {
				t.Fatal(err)
			}
			k, _ := index.ReadPrivateKey(filepath.Join(other, index.PrivateKeyFile))
			r.reg.sign(t, k)
		}, "2.0.0", "process", nil, "trusted"},
		{"an older index than the last accepted", func(t *testing.T, r *rig) {
			old, err := os.ReadFile(filepath.Join(r.reg.dir, "index.json"))
			if err != nil {
				t.Fatal(err)
			}
			r.reg.sign(t, r.reg.key)
			if reps := r.roll(t, 1, "1.0.0", "process"); states(reps) != "Installing,Updated" {
				t.Fatalf("v1 reports %s", states(reps))
			}
			if err := os.WriteFile(filepath.Join(r.reg.dir, "index.json"), old, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "2.0.0", "process", nil, "version"},
		{"an expired index", func(t *testing.T, r *rig) {
			r.start(t, func() time.Time { return time.Now().Add(48 * time.Hour) })
		}, "2.0.0", "process", nil, "expire"},
		{"a WASM plugin asking for more than is granted", func(t *testing.T, r *rig) {
			r.reg.publishWASM(t, "nodestatus", "5.0.0", manifest.Capabilities{Store: true, Send: manifest.Send{Resources: []string{"*"}}})
		}, "5.0.0", "wasm", []string{"log", "send"}, "store"},
		{"a version the registry does not hold", nil, "9.9.9", "process", nil, "9.9.9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			if tt.prepare != nil {
				tt.prepare(t, r)
			}
			_, before := r.ctl.state()
			reps := r.roll(t, 2, tt.version, tt.runtime, tt.granted...)
			last := reps[len(reps)-1]
			if last.State != StateFailed || !strings.Contains(last.Message, tt.want) || !strings.Contains(last.Message, "nothing installed") {
				t.Fatalf("report %+v, want Failed naming %q and saying nothing was installed", last, tt.want)
			}
			if _, err := os.Stat(filepath.Join(r.pluginsDir, "nodestatus", tt.version)); !os.IsNotExist(err) {
				entries, _ := os.ReadDir(filepath.Join(r.pluginsDir, "nodestatus", tt.version))
				if len(entries) > 0 {
					t.Fatalf("something was installed for %s: %v", tt.version, entries)
				}
			}
			if _, after := r.ctl.state(); len(after) != len(before) {
				t.Fatalf("a refused plugin was swapped in: %v", after)
			}
		})
	}
}

func TestAtStartTheLastGoodVersionIsSwappedBackInAfterARebootWhileOffline(t *testing.T) {
	r := newRig(t)
	if reps := r.roll(t, 1, "2.0.0", "process"); states(reps) != "Installing,Updated" {
		t.Fatalf("v2 reports %s", states(reps))
	}
	_ = r.h.Stop()
	// The node rebooted: edgecore runs what its config says (builtin); the store is new too, so the
	// file in pluginsDir is what remembers v2.
	r.ctl.mu.Lock()
	r.ctl.st.Runtime, r.ctl.st.Path, r.ctl.st.Version = "builtin", "", "dev"
	r.ctl.mu.Unlock()
	r.h = nil
	r.start(t, nil)
	want := filepath.Join(r.pluginsDir, "nodestatus", "2.0.0", "nodestatus")
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, _ := r.ctl.state()
		if st.Path == want && st.Runtime == "process" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("module still runs %s %s, want the last good %s", st.Runtime, st.Path, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Delivered again after the restart, the rollout is not reinstalled.
	_, before := r.ctl.state()
	if reps := r.roll(t, 1, "2.0.0", "process"); states(reps) != "Updated" {
		t.Fatalf("resent rollout reports %s, want Updated alone", states(reps))
	}
	if _, after := r.ctl.state(); len(after) != len(before) {
		t.Fatalf("resent rollout swapped again: %v", after)
	}
}

func TestInvalidRolloutsAreReportedFailedNamingTheField(t *testing.T) {
	r := newRig(t)
	tests := []struct {
		name, version, runtime, want string
	}{
		{"unknown runtime", "1.0.0", "docker", `runtime "docker"`},
		{"empty version", "", "process", "version"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reps := r.roll(t, int64(i+1), tt.version, tt.runtime)
			if len(reps) != 1 || reps[0].State != StateFailed || !strings.Contains(reps[0].Message, tt.want) {
				t.Fatalf("reports %+v, want one Failed naming %s", reps, tt.want)
			}
		})
	}
}

func TestGrantedCapabilitiesCoverWhatTheManifestAsks(t *testing.T) {
	tests := []struct {
		name    string
		asked   manifest.Capabilities
		granted []string
		missing string
		err     string
	}{
		{"nothing asked needs nothing", manifest.Capabilities{}, nil, "", ""},
		{"send grants every send pattern", manifest.Capabilities{Send: manifest.Send{Modules: []string{"a"}, Resources: []string{"*"}}}, []string{"send"}, "", ""},
		{"an exact pattern grants that pattern only", manifest.Capabilities{Send: manifest.Send{Groups: []string{"hub", "twin"}}}, []string{"send.groups:hub"}, "send.groups:twin", ""},
		{"store and log must be granted by name", manifest.Capabilities{Store: true, Log: true}, []string{"log"}, "store", ""},
		{"an unknown granted name is an error", manifest.Capabilities{}, []string{"root"}, "", `"root" is not a capability`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			missing, err := checkGranted(&tt.asked, tt.granted)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || strings.Join(missing, ",") != tt.missing {
				t.Fatalf("missing %v (%v), want %q", missing, err, tt.missing)
			}
		})
	}
}

func TestBadSettingsAreRefusedNamingTheSetting(t *testing.T) {
	tests := []struct {
		name string
		edit func(m *Module)
		want string
	}{
		{"no registry", func(m *Module) { m.RegistryURL = "" }, "registryURL"},
		{"no trusted key", func(m *Module) { m.TrustedKeys = nil }, "trustedKeys"},
		{"unreadable trusted key", func(m *Module) { m.TrustedKeys = []string{"/nonexistent/registry.pub"} }, "trustedKeys"},
		{"stable longer than timeout", func(m *Module) { m.HealthStable = time.Minute }, "healthStable"},
		{"https without node certificate", func(m *Module) { m.CertFile = "" }, "certFile"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New()
			m.RegistryURL, m.TrustedKeys = "https://127.0.0.1:1/registry", []string{"x"}
			tt.edit(m)
			if err := m.Start(context.Background(), nil); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Start error = %v, want one naming %s", err, tt.want)
			}
		})
	}
}

// A deleted rollout is forgotten on the node (what it installed keeps running): a rollout created
// again under the same name starts at generation 1 and is carried out, not taken for an old repeat.
func TestARolloutCreatedAgainUnderTheSameNameAfterADeleteIsCarriedOut(t *testing.T) {
	r := newRig(t)
	if got := states(r.roll(t, 3, "2.0.0", "process")); got != "Installing,Updated" {
		t.Fatalf("first rollout: %s", got)
	}
	del := message.New("metamanager", "resource", message.OpDelete, "default/pluginrollout/ns-update")
	if err := r.h.Send(del); err != nil {
		t.Fatal(err)
	}
	if st, _ := r.ctl.state(); !strings.Contains(st.Path, filepath.Join("nodestatus", "2.0.0")) {
		t.Fatalf("the delete changed what runs: %s", st.Path)
	}
	reps := r.roll(t, 1, "1.0.0", "process")
	if got := states(reps); got != "Installing,Updated" {
		t.Fatalf("the re-created rollout (generation 1) got %s, want Installing,Updated: %+v", got, reps)
	}
	if st, _ := r.ctl.state(); st.Path != filepath.Join(r.pluginsDir, "nodestatus", "1.0.0", "nodestatus") {
		t.Fatalf("runs %s, want v1 of the re-created rollout", st.Path)
	}
}
