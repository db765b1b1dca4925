package hub

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRecentClaimsEachIDOnceAndForgetsTheOldest(t *testing.T) {
	r := NewRecent(3)
	for _, id := range []string{"a", "b", "c"} {
		if !r.Claim(id) {
			t.Fatalf("first claim of %s refused", id)
		}
	}
	if r.Claim("b") {
		t.Fatal("a repeat was claimed again")
	}
	r.Claim("d") // pushes out a
	if !r.Claim("a") {
		t.Fatal("the oldest ID was not forgotten after n newer ones")
	}
}

func TestRecentGivesAnIDToExactlyOneOfManyClaimants(t *testing.T) {
	r := NewRecent(1024)
	var won atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 100 {
				if r.Claim(fmt.Sprint("id-", i)) {
					won.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if won.Load() != 100 {
		t.Fatalf("%d claims succeeded for 100 IDs", won.Load())
	}
}

// TestRecentForgetsOldIDsButKeepsTheNewestFloor proves an idle peer's Recent does not fill up over
// hours: IDs older than RecentKeep are forgotten, except the newest RecentFloor (what a peer may
// resend after a long disconnect), and a repeat within RecentKeep is still refused.
func TestRecentForgetsOldIDsButKeepsTheNewestFloor(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	r := NewRecent(4096)
	r.now = func() time.Time { return now }
	// An idle node: one message every 10 s for 3 hours (1,080 IDs, inside n = 4,096).
	const total = 1080
	for i := range total {
		if !r.Claim(fmt.Sprint("msg-", i)) {
			t.Fatalf("first claim of msg-%d refused", i)
		}
		now = now.Add(10 * time.Second)
	}
	// Kept: the IDs of the last RecentKeep (one a 10 s) or the newest RecentFloor, whichever is more.
	if got, want := r.Len(), max(RecentFloor, int(RecentKeep/(10*time.Second))); got != want {
		t.Fatalf("remembers %d IDs after 3 hours of one a 10 s, want %d", got, want)
	}
	if r.Claim(fmt.Sprint("msg-", total-RecentFloor)) {
		t.Fatal("one of the newest RecentFloor IDs was claimed again")
	}
	if !r.Claim("msg-0") {
		t.Fatal("an ID 3 hours old beyond the newest RecentFloor is still remembered")
	}
	// A chattier node, one message a second: what is younger than RecentKeep is all remembered.
	fast := NewRecent(4096)
	fast.now = func() time.Time { return now }
	for i := range 1000 {
		fast.Claim(fmt.Sprint("f-", i))
		now = now.Add(time.Second)
	}
	if got, want := fast.Len(), int(RecentKeep/time.Second); got != want || fast.Claim(fmt.Sprint("f-", 1000-want+1)) {
		t.Fatalf("one ID a second: %d kept, want %d, or an ID younger than RecentKeep was claimed again", got, want)
	}
	// A burst: n IDs within a minute are all remembered (the count bound, not the age, applies).
	busy := NewRecent(300)
	busy.now = func() time.Time { return now }
	for i := range 300 {
		busy.Claim(fmt.Sprint("b-", i))
	}
	if busy.Claim("b-0") || busy.Len() != 300 {
		t.Fatalf("a burst of 300 IDs within a second: b-0 claimed again or %d kept, want 300", busy.Len())
	}
	if !busy.Claim("b-300") || !busy.Claim("b-0") {
		t.Fatal("the count bound did not push out the oldest")
	}
}
