package hub

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
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
