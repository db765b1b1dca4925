package router

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func msg(id string) message.Message {
	return message.Message{Header: message.Header{ID: id}, Route: message.Route{Source: "test", Operation: message.OpUpdate}}
}

func mustRegister(t testing.TB, r *Router, name, group string, opts Options) *Mailbox {
	t.Helper()
	mb, err := r.Register(name, group, opts)
	if err != nil {
		t.Fatal(err)
	}
	return mb
}

func receive(t testing.TB, mb *Mailbox) message.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := mb.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func wantErr(t testing.TB, err error, targets ...error) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", targets)
	}
	for _, target := range targets {
		if !errors.Is(err, target) {
			t.Fatalf("error %q does not wrap %v", err, target)
		}
	}
}

func wantMentions(t testing.TB, err error, words ...string) {
	t.Helper()
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not mention %q", err, w)
		}
	}
}

func TestSendDeliversInFIFOOrderWithDestinationSet(t *testing.T) {
	r := New(nil)
	mb := mustRegister(t, r, "edged", "", Options{Capacity: 100})
	ctx := context.Background()
	for i := range 100 {
		if err := r.Send(ctx, "edged", msg(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if mb.Len() != 100 {
		t.Fatalf("Len = %d, want 100", mb.Len())
	}
	for i := range 100 {
		m := receive(t, mb)
		if m.Header.ID != fmt.Sprint(i) || m.Route.Destination != "edged" {
			t.Fatalf("message %d: got ID %q destination %q", i, m.Header.ID, m.Route.Destination)
		}
	}
}

func TestSendToUnknownModuleFailsNamingModuleAndMessage(t *testing.T) {
	r := New(nil)
	mustRegister(t, r, "gone", "", Options{})
	r.Unregister("gone")
	for _, to := range []string{"never", "gone", ""} {
		err := r.Send(context.Background(), to, msg("m-1"))
		wantErr(t, err, ErrUnknownModule)
		wantMentions(t, err, fmt.Sprintf("%q", to), "m-1")
	}
}

func TestRegisterRejectsBadInput(t *testing.T) {
	r := New(nil)
	mustRegister(t, r, "a", "", Options{})
	for _, tc := range []struct {
		name, module string
		opts         Options
		target       error
	}{
		{"duplicate", "a", Options{}, ErrDuplicate},
		{"empty name", "", Options{}, nil},
		{"negative capacity", "b", Options{Capacity: -1}, nil},
		{"unknown policy", "b", Options{Policy: 7}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.Register(tc.module, "", tc.opts)
			if err == nil {
				t.Fatal("Register succeeded")
			}
			if tc.target != nil {
				wantErr(t, err, tc.target)
			}
		})
	}
	if got := len(r.Modules()); got != 1 {
		t.Fatalf("%d modules registered, want 1", got)
	}
}

func TestRegisterDefaultsCapacity(t *testing.T) {
	r := New(nil)
	mustRegister(t, r, "a", "", Options{})
	if c := r.Modules()[0].Capacity; c != DefaultCapacity {
		t.Fatalf("capacity %d, want %d", c, DefaultCapacity)
	}
}

func TestSendToGroupReachesEveryMemberInRegistrationOrder(t *testing.T) {
	r := New(nil)
	names := []string{"z", "a", "m"}
	var boxes []*Mailbox
	for _, n := range names {
		boxes = append(boxes, mustRegister(t, r, n, "meta", Options{}))
	}
	outsider := mustRegister(t, r, "outsider", "other", Options{})
	if err := r.SendToGroup(context.Background(), "meta", msg("g-1")); err != nil {
		t.Fatal(err)
	}
	for i, mb := range boxes {
		if m := receive(t, mb); m.Header.ID != "g-1" || m.Route.Destination != names[i] {
			t.Fatalf("%s got %v", names[i], m)
		}
	}
	if outsider.Len() != 0 {
		t.Fatal("a module outside the group got the message")
	}
	var order []string
	for _, mi := range r.Modules() {
		order = append(order, mi.Name)
	}
	if got := strings.Join(order, ","); got != "z,a,m,outsider" {
		t.Fatalf("Modules order %s", got)
	}
}

func TestSendToGroupDeliversToOthersWhenSomeFail(t *testing.T) {
	r := New(nil)
	full1 := mustRegister(t, r, "full1", "g", Options{Capacity: 1, Policy: Reject})
	ok := mustRegister(t, r, "ok", "g", Options{})
	full2 := mustRegister(t, r, "full2", "g", Options{Capacity: 1, Policy: Reject})
	ctx := context.Background()
	for _, n := range []string{"full1", "full2"} {
		if err := r.Send(ctx, n, msg("filler")); err != nil {
			t.Fatal(err)
		}
	}
	err := r.SendToGroup(ctx, "g", msg("g-2"))
	wantErr(t, err, ErrMailboxFull)
	wantMentions(t, err, `"full1"`, `"full2"`, "g-2", `group "g"`)
	if m := receive(t, ok); m.Header.ID != "g-2" {
		t.Fatalf("ok got %v", m)
	}
	if full1.Len() != 1 || full2.Len() != 1 {
		t.Fatal("full mailboxes changed")
	}
}

func TestSendToGroupWithoutMembersFails(t *testing.T) {
	r := New(nil)
	mustRegister(t, r, "nogroup", "", Options{})
	mustRegister(t, r, "left", "g", Options{})
	r.Unregister("left")
	for _, g := range []string{"", "nope", "g"} {
		wantErr(t, r.SendToGroup(context.Background(), g, msg("x")), ErrUnknownModule)
	}
}

func TestBlockPolicyWaitsForRoomThenSucceeds(t *testing.T) {
	r := New(nil)
	mb := mustRegister(t, r, "slow", "", Options{Capacity: 1, Policy: Block})
	ctx := context.Background()
	if err := r.Send(ctx, "slow", msg("first")); err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() { sent <- r.Send(ctx, "slow", msg("second")) }()
	select {
	case err := <-sent:
		t.Fatalf("Send to a full Block mailbox returned at once: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	if m := receive(t, mb); m.Header.ID != "first" {
		t.Fatalf("got %v", m)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if m := receive(t, mb); m.Header.ID != "second" {
		t.Fatalf("got %v", m)
	}
}

func TestBlockPolicyFailsWhenContextEnds(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ctx    func() (context.Context, context.CancelFunc)
		target error
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 20*time.Millisecond)
		}, context.DeadlineExceeded},
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(20*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New(nil)
			mb := mustRegister(t, r, "slow", "", Options{Capacity: 1})
			if err := r.Send(context.Background(), "slow", msg("first")); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := tc.ctx()
			defer cancel()
			err := r.Send(ctx, "slow", msg("second"))
			wantErr(t, err, tc.target, ErrMailboxFull)
			wantMentions(t, err, `"slow"`, "second")
			if mb.Len() != 1 || r.Modules()[0].Failed != 1 {
				t.Fatalf("Len %d, info %+v", mb.Len(), r.Modules()[0])
			}
		})
	}
}

func TestRejectPolicyFailsAtOnce(t *testing.T) {
	r := New(nil)
	mustRegister(t, r, "shed", "", Options{Capacity: 2, Policy: Reject})
	ctx := context.Background()
	for i := range 2 {
		if err := r.Send(ctx, "shed", msg(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	err := r.Send(ctx, "shed", msg("third"))
	wantErr(t, err, ErrMailboxFull)
	wantMentions(t, err, `"shed"`, "third")
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("Reject took %v", d)
	}
}

func TestReceiveFailsWhenContextEnds(t *testing.T) {
	r := New(nil)
	mb := mustRegister(t, r, "idle", "", Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_, err := mb.Receive(ctx)
	wantErr(t, err, context.DeadlineExceeded)
	wantMentions(t, err, `"idle"`)
}

// responder answers every request on mb through r.Reply until mb is closed.
func responder(r *Router, mb *Mailbox) {
	for {
		req, err := mb.Receive(context.Background())
		if err != nil {
			return
		}
		resp, _ := req.Reply(mb.Name(), map[string]string{"echo": req.Header.ID})
		_ = r.Reply(context.Background(), resp)
	}
}

func TestSendSyncReturnsTheMatchingReplyOnly(t *testing.T) {
	r := New(nil)
	requester := mustRegister(t, r, "requester", "", Options{})
	mb := mustRegister(t, r, "meta", "", Options{})
	go func() {
		req := receive(t, mb)
		if !req.Header.Sync || req.Route.Destination != "meta" {
			t.Errorf("request not marked sync for meta: %v", req)
		}
		// A reply to another request comes first; it must not satisfy the waiter.
		other := message.Message{Header: message.Header{ID: "r-other", ParentID: "other"},
			Route: message.Route{Destination: "requester"}}
		if err := r.Reply(context.Background(), other); err != nil {
			t.Error(err)
		}
		resp, _ := req.Reply("meta", "ok")
		if err := r.Reply(context.Background(), resp); err != nil {
			t.Error(err)
		}
	}()
	resp, err := r.SendSync(context.Background(), "meta", msg("q-1"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.ParentID != "q-1" || string(resp.Content) != `"ok"` {
		t.Fatalf("got %v %s", resp, resp.Content)
	}
	if m := receive(t, requester); m.Header.ID != "r-other" {
		t.Fatalf("the unrelated reply went elsewhere: %v", m)
	}
	if n := r.waiters.pending(); n != 0 {
		t.Fatalf("%d waiters left", n)
	}
}

func TestSendSyncConcurrentCallersEachGetTheirOwnReply(t *testing.T) {
	r := New(nil)
	mb := mustRegister(t, r, "meta", "", Options{})
	const n = 50
	go func() { // collect all requests, then answer them in reverse order
		reqs := make([]message.Message, n)
		for i := range n {
			reqs[i] = receive(t, mb)
		}
		for i := n - 1; i >= 0; i-- {
			resp, _ := reqs[i].Reply("meta", reqs[i].Header.ID)
			if err := r.Reply(context.Background(), resp); err != nil {
				t.Error(err)
			}
		}
	}()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("q-%d", i)
			resp, err := r.SendSync(context.Background(), "meta", msg(id), 5*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			if resp.Header.ParentID != id || string(resp.Content) != fmt.Sprintf("%q", id) {
				t.Errorf("%s got reply %v %s", id, resp, resp.Content)
			}
		})
	}
	wg.Wait()
	if n := r.waiters.pending(); n != 0 {
		t.Fatalf("%d waiters left", n)
	}
}

func TestSendSyncTimesOutWithClearErrorAndNoWaiterLeft(t *testing.T) {
	r := New(nil)
	mustRegister(t, r, "mute", "", Options{})
	start := time.Now()
	_, err := r.SendSync(context.Background(), "mute", msg("q-9"), 30*time.Millisecond)
	wantErr(t, err, context.DeadlineExceeded)
	wantMentions(t, err, `"mute"`, "q-9")
	if d := time.Since(start); d < 30*time.Millisecond || d > 2*time.Second {
		t.Fatalf("timed out after %v", d)
	}
	if n := r.waiters.pending(); n != 0 {
		t.Fatalf("%d waiters left", n)
	}
	// The ID is free again.
	_, err = r.SendSync(context.Background(), "mute", msg("q-9"), time.Millisecond)
	wantErr(t, err, context.DeadlineExceeded)
}

func TestSendSyncTimeoutBoundsQueueingToFullMailbox(t *testing.T) {
	r := New(nil)
	mb := mustRegister(t, r, "busy", "", Options{Capacity: 1})
	if err := r.Send(context.Background(), "busy", msg("filler")); err != nil {
		t.Fatal(err)
	}
	_, err := r.SendSync(context.Background(), "busy", msg("q-2"), 20*time.Millisecond)
	wantErr(t, err, context.DeadlineExceeded, ErrMailboxFull)
	wantMentions(t, err, `"busy"`, "q-2")
	if mb.Len() != 1 || r.waiters.pending() != 0 || r.Modules()[0].Failed != 1 {
		t.Fatalf("Len %d, waiters %d, info %+v", mb.Len(), r.waiters.pending(), r.Modules()[0])
	}
}

func TestSendSyncStopsWhenContextIsCanceled(t *testing.T) {
	r := New(nil)
	mustRegister(t, r, "mute", "", Options{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	_, err := r.SendSync(ctx, "mute", msg("q-3"), time.Minute)
	wantErr(t, err, context.Canceled)
	wantMentions(t, err, `"mute"`, "q-3")
	if n := r.waiters.pending(); n != 0 {
		t.Fatalf("%d waiters left", n)
	}
}

func TestSendSyncRefusesBadRequests(t *testing.T) {
	r := New(nil)
	mb := mustRegister(t, r, "meta", "", Options{})
	_, err := r.SendSync(context.Background(), "meta", msg(""), time.Second)
	wantErr(t, err, ErrNoID)
	_, err = r.SendSync(context.Background(), "nobody", msg("q-4"), time.Second)
	wantErr(t, err, ErrUnknownModule)

	// Two pending requests with one ID could not tell their replies apart.
	first := make(chan error, 1)
	go func() {
		_, err := r.SendSync(context.Background(), "meta", msg("dup"), 5*time.Second)
		first <- err
	}()
	req := receive(t, mb) // the first request is now pending
	_, err = r.SendSync(context.Background(), "meta", msg("dup"), time.Second)
	wantErr(t, err, ErrDuplicate)
	resp, _ := req.Reply("meta", nil)
	if err := r.Reply(context.Background(), resp); err != nil {
		t.Fatal(err)
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if mb.Len() != 0 {
		t.Fatal("the refused duplicate was queued")
	}
}

func TestLateReplyAfterTimeoutReachesRequesterMailbox(t *testing.T) {
	r := New(nil)
	requester := mustRegister(t, r, "test", "", Options{}) // msg() sets Source "test"
	mb := mustRegister(t, r, "slow", "", Options{})
	_, err := r.SendSync(context.Background(), "slow", msg("q-5"), 10*time.Millisecond)
	wantErr(t, err, context.DeadlineExceeded)
	req := receive(t, mb)
	resp, _ := req.Reply("slow", nil)
	if err := r.Reply(context.Background(), resp); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, requester); m.Header.ParentID != "q-5" {
		t.Fatalf("got %v", m)
	}
}

func TestReplyWithoutWaiter(t *testing.T) {
	r := New(nil)
	home := mustRegister(t, r, "home", "", Options{})
	for _, tc := range []struct {
		name, destination string
		targets           []error
	}{
		{"routes to destination", "home", nil},
		{"no destination", "", []error{ErrNoWaiter}},
		{"unknown destination", "nowhere", []error{ErrNoWaiter, ErrUnknownModule}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := message.Message{Header: message.Header{ID: "r-1", ParentID: "q-unknown"},
				Route: message.Route{Destination: tc.destination}}
			err := r.Reply(context.Background(), resp)
			if tc.targets == nil {
				if err != nil {
					t.Fatal(err)
				}
				if m := receive(t, home); m.Header.ID != "r-1" {
					t.Fatalf("got %v", m)
				}
				return
			}
			wantErr(t, err, tc.targets...)
			wantMentions(t, err, "r-1", "q-unknown")
		})
	}
}

func TestUnregisterDrainsQueuedThenReportsClosed(t *testing.T) {
	r := New(nil)
	mb := mustRegister(t, r, "leaving", "", Options{})
	for i := range 3 {
		if err := r.Send(context.Background(), "leaving", msg(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	r.Unregister("leaving")
	r.Unregister("leaving") // a second call is a no-op
	wantErr(t, r.Send(context.Background(), "leaving", msg("late")), ErrUnknownModule)
	for i := range 3 {
		if m := receive(t, mb); m.Header.ID != fmt.Sprint(i) {
			t.Fatalf("got %v", m)
		}
	}
	_, err := mb.Receive(context.Background())
	wantErr(t, err, ErrClosed)
	if len(r.Modules()) != 0 {
		t.Fatal("module still listed")
	}
	// The name can be registered again, with a fresh mailbox.
	mb2 := mustRegister(t, r, "leaving", "", Options{})
	if err := r.Send(context.Background(), "leaving", msg("again")); err != nil || mb2.Len() != 1 {
		t.Fatalf("re-registered module: %v, Len %d", err, mb2.Len())
	}
}

func TestUnregisterWakesSenderBlockedOnFullMailbox(t *testing.T) {
	r := New(nil)
	mb := mustRegister(t, r, "full", "", Options{Capacity: 1})
	if err := r.Send(context.Background(), "full", msg("filler")); err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() { sent <- r.Send(context.Background(), "full", msg("blocked")) }()
	for deadline := time.Now().Add(time.Minute); mb.waiting.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the sender never waited for room")
		}
	}
	r.Unregister("full")
	select {
	case err := <-sent:
		wantErr(t, err, ErrClosed)
		wantMentions(t, err, `"full"`, "blocked")
	case <-time.After(5 * time.Second):
		t.Fatal("blocked sender not woken by Unregister")
	}
	if m := receive(t, mb); m.Header.ID != "filler" {
		t.Fatalf("got %v", m)
	}
}

// Every Send racing with Unregister either succeeds, and its message is received, or fails with
// ErrUnknownModule/ErrClosed (or ErrMailboxFull under Reject). Nothing panics and nothing is lost.
func TestUnregisterRacingSendsLosesNothing(t *testing.T) {
	for _, opts := range []Options{{Capacity: 4, Policy: Block}, {Capacity: 4, Policy: Reject}, {Capacity: 4096}} {
		t.Run(fmt.Sprintf("%v-%d", opts.Policy, opts.Capacity), func(t *testing.T) {
			r := New(nil)
			mb := mustRegister(t, r, "target", "", opts)
			var ok, refused atomic.Int64
			received := make(chan int64)
			go func() {
				var n int64
				for {
					if _, err := mb.Receive(context.Background()); err != nil {
						if !errors.Is(err, ErrClosed) {
							t.Error(err)
						}
						received <- n
						return
					}
					n++
				}
			}()
			var wg sync.WaitGroup
			start := make(chan struct{})
			for g := range 16 {
				wg.Go(func() {
					<-start
					for i := range 500 {
						err := r.Send(context.Background(), "target", msg(fmt.Sprintf("%d-%d", g, i)))
						switch {
						case err == nil:
							ok.Add(1)
						case errors.Is(err, ErrUnknownModule), errors.Is(err, ErrClosed), errors.Is(err, ErrMailboxFull):
							refused.Add(1)
						default:
							t.Error(err)
						}
					}
				})
			}
			close(start)
			time.Sleep(time.Millisecond)
			r.Unregister("target")
			wg.Wait()
			if got := <-received; got != ok.Load() {
				t.Fatalf("%d sends succeeded but %d messages received", ok.Load(), got)
			}
			if ok.Load()+refused.Load() != 16*500 {
				t.Fatalf("%d ok + %d refused != %d", ok.Load(), refused.Load(), 16*500)
			}
			t.Logf("%d delivered, %d refused", ok.Load(), refused.Load())
		})
	}
}

func TestStressEveryMessageReceivedExactlyOnce(t *testing.T) {
	const modules, producers, perProducer = 4, 8, 2000
	r := New(nil)
	seen := make([][]atomic.Int32, modules)
	var consumers sync.WaitGroup
	for mod := range modules {
		// Small mailboxes so producers really block.
		mb := mustRegister(t, r, fmt.Sprint("mod", mod), "", Options{Capacity: 8})
		seen[mod] = make([]atomic.Int32, producers*perProducer)
		consumers.Go(func() {
			for {
				m, err := mb.Receive(context.Background())
				if err != nil {
					return
				}
				var p, i int
				if _, err := fmt.Sscanf(m.Header.ID, "%d-%d", &p, &i); err != nil {
					t.Error(err)
					return
				}
				seen[mod][p*perProducer+i].Add(1)
			}
		})
	}
	var producersWG sync.WaitGroup
	for p := range producers {
		producersWG.Go(func() {
			for i := range perProducer {
				to := fmt.Sprint("mod", (p+i)%modules)
				if err := r.Send(context.Background(), to, msg(fmt.Sprintf("%d-%d", p, i))); err != nil {
					t.Error(err)
				}
			}
		})
	}
	producersWG.Wait()
	for mod := range modules {
		r.Unregister(fmt.Sprint("mod", mod)) // consumers drain, then stop
	}
	consumers.Wait()
	for p := range producers {
		for i := range perProducer {
			mod := (p + i) % modules
			for m := range modules {
				want := int32(0)
				if m == mod {
					want = 1
				}
				if got := seen[m][p*perProducer+i].Load(); got != want {
					t.Fatalf("message %d-%d seen %d times by mod%d, want %d", p, i, got, m, want)
				}
			}
		}
	}
}

func TestMetricsFollowSendsReceivesAndRefusals(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := New(reg)
	mb := mustRegister(t, r, "edged", "", Options{Capacity: 2, Policy: Reject})
	mustRegister(t, r, "idle", "", Options{})
	ctx := context.Background()
	for i := range 3 { // two accepted, one refused
		_ = r.Send(ctx, "edged", msg(fmt.Sprint(i)))
	}
	receive(t, mb)
	want := `
# HELP kedge_router_delivered_total Messages handed out by the module's Receive.
# TYPE kedge_router_delivered_total counter
kedge_router_delivered_total{module="edged"} 1
kedge_router_delivered_total{module="idle"} 0
# HELP kedge_router_failed_total Sends to the module refused: mailbox full, caller's context done, timeout or mailbox closed.
# TYPE kedge_router_failed_total counter
kedge_router_failed_total{module="edged"} 1
kedge_router_failed_total{module="idle"} 0
# HELP kedge_router_queued Messages waiting in the module's mailbox.
# TYPE kedge_router_queued gauge
kedge_router_queued{module="edged"} 1
kedge_router_queued{module="idle"} 0
# HELP kedge_router_sent_total Messages accepted into the module's mailbox.
# TYPE kedge_router_sent_total counter
kedge_router_sent_total{module="edged"} 2
kedge_router_sent_total{module="idle"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	mi := r.Modules()[0]
	if mi.Sent != 2 || mi.Delivered != 1 || mi.Failed != 1 || mi.Queued != 1 || mi.Policy != Reject {
		t.Fatalf("Modules()[0] = %+v", mi)
	}
}

func TestRoutersSharingARegistryDoNotPanicAndAreSummed(t *testing.T) {
	reg := prometheus.NewRegistry()
	for range 3 {
		r := New(reg)
		mustRegister(t, r, "edged", "", Options{})
		if err := r.Send(context.Background(), "edged", msg("x")); err != nil {
			t.Fatal(err)
		}
	}
	want := `
# HELP kedge_router_sent_total Messages accepted into the module's mailbox.
# TYPE kedge_router_sent_total counter
kedge_router_sent_total{module="edged"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "kedge_router_sent_total"); err != nil {
		t.Fatal(err)
	}
}

func TestNewPanicsOnForeignMetricWithTheSameName(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_router_sent_total", Help: "other"}))
	defer func() {
		if recover() == nil {
			t.Fatal("New did not panic")
		}
	}()
	New(reg)
}

func TestSendAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	r := New(nil)
	mb := mustRegister(t, r, "sink", "", Options{Capacity: 1})
	m := msg("m-1")
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() {
		if err := r.Send(ctx, "sink", m); err != nil {
			t.Fatal(err)
		}
		if _, err := mb.Receive(ctx); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Send+Receive allocates %v times", allocs)
	}
}

// A mailbox's memory follows what is queued: none is held for its capacity, a burst's buffer is
// given back once the mailbox drains after using little of it.
func TestMailboxHoldsMemoryForWhatIsQueuedNotForItsCapacity(t *testing.T) {
	r := New(nil)
	mb := mustRegister(t, r, "sink", "", Options{Capacity: 4096})
	ctx := context.Background()
	buffered := func() int { mb.qmu.Lock(); defer mb.qmu.Unlock(); return cap(mb.q) }
	if got := buffered(); got != 0 {
		t.Fatalf("an empty mailbox of capacity 4096 buffers %d messages, want 0", got)
	}
	for i := range 1000 {
		if err := r.Send(ctx, "sink", msg(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 1000 {
		if m := receive(t, mb); m.Header.ID != fmt.Sprint(i) {
			t.Fatalf("message %d is %q", i, m.Header.ID)
		}
	}
	if got := buffered(); got < 1000 {
		t.Fatalf("buffer after a drained burst of 1000: %d, want it kept while bursts go on", got)
	}
	// One message at a time after the burst: the burst's buffer goes.
	if err := r.Send(ctx, "sink", msg("one")); err != nil {
		t.Fatal(err)
	}
	receive(t, mb)
	if got := buffered(); got > keepCap {
		t.Fatalf("buffer after a small round: %d messages, want at most %d", got, keepCap)
	}
}

// Many senders blocked on a small mailbox and several receivers: every message is delivered exactly
// once (the one-slot wake-ups are passed on, none is lost).
func TestBlockedSendersAndSeveralReceiversDeliverEveryMessageOnce(t *testing.T) {
	r := New(nil)
	mb := mustRegister(t, r, "small", "", Options{Capacity: 2})
	const senders, each, receivers = 8, 200, 3
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	got := make(chan string, senders*each)
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := r.Send(ctx, "small", msg(fmt.Sprintf("%d-%d", s, i))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for range receivers {
		go func() {
			for {
				m, err := mb.Receive(ctx)
				if err != nil {
					return
				}
				got <- m.Header.ID
			}
		}()
	}
	seen := map[string]bool{}
	for len(seen) < senders*each {
		select {
		case id := <-got:
			if seen[id] {
				t.Fatalf("%s delivered twice", id)
			}
			seen[id] = true
		case <-ctx.Done():
			t.Fatalf("%d of %d messages delivered", len(seen), senders*each)
		}
	}
	wg.Wait()
}
