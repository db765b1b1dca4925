package pluginmanager

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/sdk/message"
)

// send delivers a pluginrollout for rollout default/<rollout> the way metamanager does.
func (r *rig) send(t *testing.T, rollout string, gen int64, module, version string) {
	t.Helper()
	m, err := message.New("metamanager", "resource", message.OpUpdate, "default/pluginrollout/"+rollout).WithContent(Rollout{
		Rollout: "default/" + rollout, Generation: gen, Plugin: "nodestatus", Version: version, Runtime: "process", Module: module})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.h.Send(m); err != nil {
		t.Fatal(err)
	}
}

// nextReport returns the next report to the cloud, whichever rollout it is about.
func (r *rig) nextReport(t *testing.T) Report {
	t.Helper()
	msg := r.h.Captured("edgehub").Next(t, 30*time.Second)
	var rep Report
	if err := msg.DecodeContent(&rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

// awaitReport skips reports until one of rollout in state arrives; it fails if a report of stalled
// (a rollout that must not finish yet) ends in any state but Installing.
func (r *rig) awaitReport(t *testing.T, rollout, state, stalled string) Report {
	t.Helper()
	for {
		rep := r.nextReport(t)
		if rep.Rollout == "default/"+stalled && rep.State != StateInstalling {
			t.Fatalf("the stalled rollout finished early: %+v", rep)
		}
		if rep.Rollout == "default/"+rollout && rep.State == state {
			return rep
		}
		if rep.Rollout == "default/"+rollout && rep.State != StateInstalling {
			t.Fatalf("report %+v, want %s", rep, state)
		}
	}
}

func (r *rig) awaitStalled(t *testing.T) {
	t.Helper()
	select {
	case <-r.reg.stalled:
	case <-time.After(30 * time.Second):
		t.Fatal("the download never reached the registry")
	}
}

func TestASecondMessageIsHandledWhileTheFirstDownloadIsStalled(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, r *rig, release func())
	}{
		{"a rollout of another module is installed meanwhile, then the stalled one completes", func(t *testing.T, r *rig, release func()) {
			r.ctl.addModule("other")
			r.send(t, "other-update", 1, "other", "1.0.0")
			rep := r.awaitReport(t, "other-update", StateUpdated, "ns-update")
			if rep.Version != "1.0.0" {
				t.Fatalf("report %+v", rep)
			}
			if st := r.ctl.module("other"); st.Path != filepath.Join(r.pluginsDir, "nodestatus", "1.0.0", "nodestatus") {
				t.Fatalf("module other runs %+v", st)
			}
			if st := r.ctl.module("nodestatus"); st.Runtime != "builtin" {
				t.Fatalf("the stalled rollout's module changed before its download finished: %+v", st)
			}
			release()
			r.awaitReport(t, "ns-update", StateUpdated, "")
			if st := r.ctl.module("nodestatus"); st.Path != filepath.Join(r.pluginsDir, "nodestatus", "2.0.0", "nodestatus") {
				t.Fatalf("module nodestatus runs %+v after the release", st)
			}
		}},
		{"a newer generation of the same rollout cancels the stalled download and is installed", func(t *testing.T, r *rig, release func()) {
			r.send(t, "ns-update", 2, "nodestatus", "1.0.0")
			var got []string
			for len(got) == 0 || got[len(got)-1] != "2:Updated" {
				rep := r.nextReport(t)
				got = append(got, fmt.Sprintf("%d:%s", rep.Generation, rep.State))
				if rep.Generation == 1 && rep.State == StateFailed && !strings.Contains(rep.Message, "superseded by generation 2") {
					t.Fatalf("the superseded generation reports %+v, want it to say superseded", rep)
				}
				if len(got) > 4 {
					break
				}
			}
			if strings.Join(got, ",") != "1:Failed,2:Installing,2:Updated" {
				t.Fatalf("reports %v, want 1:Failed (superseded), 2:Installing, 2:Updated", got)
			}
			if st := r.ctl.module("nodestatus"); st.Path != filepath.Join(r.pluginsDir, "nodestatus", "1.0.0", "nodestatus") {
				t.Fatalf("module nodestatus runs %+v, want 1.0.0", st)
			}
			if entries, _ := filepath.Glob(filepath.Join(r.pluginsDir, "nodestatus", "2.0.0", "*")); len(entries) != 0 {
				t.Fatalf("the cancelled download left %v", entries)
			}
		}},
		{"Stop cancels the stalled download and returns", func(t *testing.T, r *rig, release func()) {
			done := make(chan error, 1)
			go func() { done <- r.h.Stop() }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("Stop did not return while a download was stalled")
			}
			if _, swaps := r.ctl.state(); len(swaps) != 0 {
				t.Fatalf("swapped after Stop: %v", swaps)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			release := r.reg.stall(t, "nodestatus", "2.0.0")
			r.send(t, "ns-update", 1, "nodestatus", "2.0.0")
			if rep := r.nextReport(t); rep.Rollout != "default/ns-update" || rep.State != StateInstalling {
				t.Fatalf("first report %+v, want Installing", rep)
			}
			r.awaitStalled(t)
			tt.run(t, r, release)
		})
	}
}
