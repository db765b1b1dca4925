package modules

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/sdk"
)

// tally is a module version that records the sequence numbers it handled.
type tally struct {
	version   string
	mu        *sync.Mutex
	seen      *[]string // "<version>:<n>", shared by all versions
	unhealthy bool
	failStart bool
	// readyAfter > 0: Healthy fails until its readyAfter-th call (a module that connects to a broker
	// after Start); polls counts the calls.
	readyAfter int32
	polls      atomic.Int32
	stopped    chan struct{}
}

func (v *tally) Start(context.Context, sdk.Host) error {
	if v.failStart {
		return errors.New("cannot start")
	}
	v.stopped = make(chan struct{})
	return nil
}

func (v *tally) Handle(_ context.Context, m sdk.Message) error {
	v.mu.Lock()
	*v.seen = append(*v.seen, v.version+":"+m.Route.Resource)
	v.mu.Unlock()
	return nil
}

func (v *tally) Stop(context.Context) error { close(v.stopped); return nil }

func (v *tally) Healthy(context.Context) error {
	n := v.polls.Add(1)
	switch {
	case v.unhealthy:
		return errors.New("self-test failed")
	case n < v.readyAfter:
		return fmt.Errorf("broker not connected yet (check %d)", n)
	}
	return nil
}

type tallyRig struct {
	h    *harness
	mu   sync.Mutex
	seen []string
}

func (tr *tallyRig) version(v string) *tally {
	return &tally{version: v, mu: &tr.mu, seen: &tr.seen}
}

func (tr *tallyRig) planned(m sdk.Module, rt Runtime) Planned {
	return Planned{Info: sdk.Info{Name: "driver", Group: "drivers"}, Settings: Settings{Runtime: rt}, Module: m}
}

func (tr *tallyRig) count() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.seen)
}

func (tr *tallyRig) snapshot() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.seen)
}

func newTallyRig(t *testing.T) *tallyRig {
	tr := &tallyRig{h: newHarness(t)}
	if err := tr.h.mgr.Start(context.Background(), []Planned{tr.planned(tr.version("v1"), Builtin)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.h.mgr.Stop(context.Background()) })
	return tr
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// A steady stream of numbered messages flows through two swaps: every number is handled exactly once,
// in order, first by v1, then v2, then v3 — and the replaced instances are stopped.
func TestSwapUnderLoadLosesDuplicatesAndReordersNothing(t *testing.T) {
	tr := newTallyRig(t)
	ctx := context.Background()
	const total = 20000
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range total {
			if err := tr.h.rt.Send(ctx, "driver", message.New("load", "drivers", "update", strconv.Itoa(i))); err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
		}
	}()
	v2, v3 := tr.version("v2"), tr.version("v3")
	for i, next := range []*tally{v2, v3} {
		// Swap while messages flow: after a third, then two thirds of them were handled.
		waitFor(t, "messages to flow", func() bool { return tr.count() >= total*(i+1)/3 })
		rep, err := tr.h.mgr.Swap(ctx, tr.planned(next, WASM))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("swap to %s: delivery paused %s with %d queued", next.version, rep.Paused, rep.Queued)
	}
	<-sent
	waitFor(t, "all messages handled", func() bool { return tr.count() >= total })
	seen := tr.snapshot()
	if len(seen) != total {
		t.Fatalf("handled %d messages, want %d", len(seen), total)
	}
	rank, last := map[string]int{"v1": 0, "v2": 1, "v3": 2}, 0
	for i, s := range seen {
		v, n, _ := strings.Cut(s, ":")
		if n != strconv.Itoa(i) {
			t.Fatalf("position %d holds %q: a message was lost, duplicated or reordered", i, s)
		}
		if rank[v] < last {
			t.Fatalf("message %d handled by %s after a newer version took over", i, v)
		}
		last = rank[v]
	}
	if last != 2 {
		t.Fatalf("the last message was handled by rank %d, want v3", last)
	}
	st := tr.h.mgr.Status(ctx)
	if len(st) != 1 || st[0].Swaps != 2 || st[0].Runtime != WASM || len(st[0].SwapGaps) != 2 {
		t.Fatalf("status after swaps: %+v", st)
	}
	t.Logf("measured swap gaps (a ready message waiting for an instance): %v", st[0].SwapGaps)
	for _, v := range []*tally{v2} {
		select {
		case <-v.stopped:
		default:
			t.Fatalf("%s was not stopped after being replaced", v.version)
		}
	}
}

func TestSwapRollsBackWhenTheNewInstanceFails(t *testing.T) {
	tests := []struct {
		name string
		bad  func(v *tally)
		want string
	}{
		{"fails to start", func(v *tally) { v.failStart = true }, "did not start: cannot start"},
		{"unhealthy", func(v *tally) { v.unhealthy = true }, "unhealthy: self-test failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTallyRig(t)
			ctx := context.Background()
			bad := tr.version("bad")
			tt.bad(bad)
			_, err := tr.h.mgr.Swap(ctx, tr.planned(bad, Process))
			if !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Swap error = %v, want ErrRolledBack and %q", err, tt.want)
			}
			if err := tr.h.rt.Send(ctx, "driver", message.New("t", "drivers", "update", "after")); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the message after the rollback", func() bool { return tr.count() == 1 })
			if got := tr.snapshot(); got[0] != "v1:after" {
				t.Fatalf("after a rolled-back swap the old version must keep handling: %v", got)
			}
			if st := tr.h.mgr.Status(ctx); st[0].Runtime != Builtin {
				t.Fatalf("runtime after rollback = %s, want builtin", st[0].Runtime)
			}
		})
	}
}

func TestSwapRefusesUnknownModulesAndGroupChanges(t *testing.T) {
	tr := newTallyRig(t)
	ctx := context.Background()
	tests := []struct {
		name   string
		change func(p *Planned)
		want   string
	}{
		{"unknown module", func(p *Planned) { p.Info.Name = "nosuch" }, "no such module"},
		{"another group", func(p *Planned) { p.Info.Group = "other" }, "routing cannot change"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tr.planned(tr.version("v2"), Builtin)
			tt.change(&p)
			if _, err := tr.h.mgr.Swap(ctx, p); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Swap error = %v, want %q", err, tt.want)
			}
		})
	}
}

// BenchmarkSwapGap swaps a module while a producer keeps its mailbox busy and reports the gap: how
// long a ready message waited with no instance to handle it.
func BenchmarkSwapGap(b *testing.B) {
	tr := &tallyRig{h: newHarness(b)}
	ctx := context.Background()
	if err := tr.h.mgr.Start(ctx, []Planned{tr.planned(tr.version("v0"), Builtin)}); err != nil {
		b.Fatal(err)
	}
	defer tr.h.mgr.Stop(ctx)
	stop := make(chan struct{})
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_ = tr.h.rt.Send(ctx, "driver", message.New("load", "drivers", "update", strconv.Itoa(i)))
		}
	}()
	var paused time.Duration
	for i := 0; b.Loop(); i++ {
		rep, err := tr.h.mgr.Swap(ctx, tr.planned(tr.version(fmt.Sprint("v", i+1)), Builtin))
		if err != nil {
			b.Fatal(err)
		}
		paused += rep.Paused
		tr.mu.Lock()
		tr.seen = tr.seen[:0]
		tr.mu.Unlock()
	}
	close(stop)
	gaps := tr.h.mgr.Status(ctx)[0].SwapGaps
	var worst time.Duration
	for _, g := range gaps {
		worst = max(worst, g)
	}
	b.ReportMetric(float64(paused.Microseconds())/float64(b.N), "µs-paused/swap")
	b.ReportMetric(float64(worst.Microseconds()), "µs-worst-gap")
}

// A new instance that becomes healthy only a few checks after Start is polled until it is, then swapped
// in while numbered messages stream (each handled once, in order); one that never becomes healthy is
// rolled back at the health timeout with its last health error, and the old instance keeps handling.
func TestSwapPollsTheNewInstanceUntilHealthyWithinTheHealthTimeout(t *testing.T) {
	tests := []struct {
		name       string
		readyAfter int32
		unhealthy  bool
		opts       []SwapOption // the harness's default health timeout is 300 ms
		wantErr    string       // "": swapped in
		wantPolls  int32        // exact when swapped in; a minimum when rolled back
	}{
		{name: "ready on the first check is swapped in at once", readyAfter: 1, wantPolls: 1},
		{name: "ready on the fourth check is swapped in, not rolled back", readyAfter: 4,
			opts: []SwapOption{WithHealthTimeout(time.Minute)}, wantPolls: 4},
		{name: "never healthy is rolled back at the default timeout with its error", unhealthy: true,
			wantErr: "unhealthy: self-test failed (still unhealthy after", wantPolls: 2},
		{name: "not ready within the swap's own timeout is rolled back with the last error", readyAfter: 1 << 30,
			opts: []SwapOption{WithHealthTimeout(120 * time.Millisecond)}, wantErr: "broker not connected yet", wantPolls: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTallyRig(t)
			ctx := context.Background()
			// Numbered messages stream while the new instance is polled, and 200 more after the swap
			// returned, so the last ones show which instance runs.
			swapped := make(chan struct{})
			sentc := make(chan int, 1)
			go func() {
				after := -1
				for i := 0; ; i++ {
					if err := tr.h.rt.Send(ctx, "driver", message.New("load", "drivers", "update", strconv.Itoa(i))); err != nil {
						t.Errorf("send %d: %v", i, err)
						sentc <- i
						return
					}
					select {
					case <-swapped:
						if after < 0 {
							after = i + 200
						}
					default:
					}
					if after >= 0 && i >= after {
						sentc <- i + 1
						return
					}
				}
			}()
			waitFor(t, "messages to flow", func() bool { return tr.count() >= 100 })
			next := tr.version("v2")
			next.readyAfter, next.unhealthy = tt.readyAfter, tt.unhealthy
			_, err := tr.h.mgr.Swap(ctx, tr.planned(next, Process), tt.opts...)
			close(swapped)
			polls := next.polls.Load()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Swap: %v, want swapped in", err)
			case tt.wantErr == "" && polls != tt.wantPolls:
				t.Fatalf("health checks = %d, want exactly %d (polling stops once healthy)", polls, tt.wantPolls)
			case tt.wantErr != "" && (!errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Swap error = %v, want ErrRolledBack and %q", err, tt.wantErr)
			case tt.wantErr != "" && polls < tt.wantPolls:
				t.Fatalf("health checks = %d, want at least %d before giving up", polls, tt.wantPolls)
			}
			total := <-sentc
			waitFor(t, "all messages handled", func() bool { return tr.count() >= total })
			wantLast := "v2"
			if tt.wantErr != "" {
				wantLast = "v1"
			}
			seen := tr.snapshot()
			if len(seen) != total {
				t.Fatalf("handled %d messages, want %d", len(seen), total)
			}
			switched := false
			for i, s := range seen {
				v, n, _ := strings.Cut(s, ":")
				if n != strconv.Itoa(i) {
					t.Fatalf("position %d holds %q: a message was lost, duplicated or reordered", i, s)
				}
				if switched && v != "v2" {
					t.Fatalf("message %d handled by %s after v2 took over", i, v)
				}
				switched = v == "v2"
			}
			if v, _, _ := strings.Cut(seen[total-1], ":"); v != wantLast {
				t.Fatalf("the last message was handled by %s, want %s", v, wantLast)
			}
			if tt.wantErr != "" {
				select {
				case <-next.stopped:
				default:
					t.Fatal("the rolled-back instance was not stopped")
				}
			}
		})
	}
}

// compiling is a tally version with slow preparation (a WASM module compiling on a busy device):
// Prepare blocks until release is closed (or its context ends) and records that it ran.
type compiling struct {
	*tally
	release  chan struct{}
	prepared atomic.Bool
	started  atomic.Bool
}

func (c *compiling) Prepare(ctx context.Context) error {
	select {
	case <-c.release:
		c.prepared.Store(true)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *compiling) Start(ctx context.Context, h sdk.Host) error {
	if !c.prepared.Load() {
		return errors.New("started before it was prepared")
	}
	c.started.Store(true)
	return c.tally.Start(ctx, h)
}

// A new instance's preparation (a compile) is bounded by PrepareTimeout, not StartTimeout, and the old
// instance keeps handling messages while it runs: a compile longer than the start deadline swaps fine.
func TestSwapPreparesTheNewInstanceBesideTheOldOneOutsideTheStartDeadline(t *testing.T) {
	tr := newTallyRig(t)
	ctx := context.Background()
	next := &compiling{tally: tr.version("v2"), release: make(chan struct{})}
	type result struct {
		rep SwapReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := tr.h.mgr.Swap(ctx, tr.planned(next, WASM))
		done <- result{rep, err}
	}()
	if err := tr.h.rt.Send(ctx, "driver", message.New("t", "drivers", "update", "during")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the old instance handling a message while the new one prepares", func() bool { return tr.count() == 1 })
	// Outlast the start deadline (1 s in the harness): preparing must not be cut by it.
	time.Sleep(2 * tr.h.mgr.deps.StartTimeout)
	if next.started.Load() {
		t.Fatal("the new instance started before its preparation finished")
	}
	close(next.release)
	r := <-done
	if r.err != nil {
		t.Fatalf("Swap: %v", r.err)
	}
	if r.rep.Prepared < 2*tr.h.mgr.deps.StartTimeout {
		t.Fatalf("report says preparing took %s; it took at least %s", r.rep.Prepared, 2*tr.h.mgr.deps.StartTimeout)
	}
	if err := tr.h.rt.Send(ctx, "driver", message.New("t", "drivers", "update", "after")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the message after the swap", func() bool { return tr.count() == 2 })
	if got := tr.snapshot(); !slices.Equal(got, []string{"v1:during", "v2:after"}) {
		t.Fatalf("handled %v, want v1:during then v2:after", got)
	}
}

// A preparation past PrepareTimeout rolls the swap back, saying so; the old instance keeps serving.
func TestSwapRollsBackAPreparationPastThePrepareTimeout(t *testing.T) {
	tr := newTallyRig(t)
	tr.h.mgr.deps.PrepareTimeout = 100 * time.Millisecond
	ctx := context.Background()
	stuck := &compiling{tally: tr.version("v2"), release: make(chan struct{})} // never released
	_, err := tr.h.mgr.Swap(ctx, tr.planned(stuck, WASM))
	if !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), "prepare: Prepare did not return within 100ms") {
		t.Fatalf("Swap error = %v, want a rollback naming the prepare timeout", err)
	}
	if stuck.started.Load() {
		t.Fatal("an instance whose preparation timed out was started")
	}
	if err := tr.h.rt.Send(ctx, "driver", message.New("t", "drivers", "update", "after")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the message after the rollback", func() bool { return tr.count() == 1 })
	if got := tr.snapshot(); got[0] != "v1:after" {
		t.Fatalf("after a rolled-back swap the old version must keep handling: %v", got)
	}
}
