package metaserver

import (
	"testing"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
)

func TestRingReplaysWhatItHoldsAndRefusesTheRest(t *testing.T) {
	r := newRing(3, 100)
	for range 5 { // sequences 101..105; 101 and 102 are forgotten
		r.push(&event{})
	}
	tests := []struct {
		name string
		from uint64
		want []uint64
		gone bool
	}{
		{"older than the window is gone", 101, nil, true},
		{"from the newest forgotten one replays all held", 102, []uint64{103, 104, 105}, false},
		{"from the middle replays the rest", 104, []uint64{105}, false},
		{"from the current sequence waits for more", 105, nil, false},
		{"from the future (another process) is gone", 106, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, gone, _ := r.since(tt.from)
			if gone != tt.gone || len(evs) != len(tt.want) {
				t.Fatalf("since(%d) = %d events, gone %v; want %v, gone %v", tt.from, len(evs), gone, tt.want, tt.gone)
			}
			for i, e := range evs {
				if e.seq != tt.want[i] {
					t.Fatalf("event %d has seq %d, want %d", i, e.seq, tt.want[i])
				}
			}
		})
	}
}

func TestWatchTypeFollowsTheSelection(t *testing.T) {
	web := meta{labels: labels.Set{"app": "web"}, fields: fields.Set{}}
	db := meta{labels: labels.Set{"app": "db"}, fields: fields.Set{}}
	sel := selector{labels: labels.SelectorFromSet(labels.Set{"app": "web"}), fields: fields.Everything()}
	tests := []struct {
		name string
		e    event
		want string // "" = not shown
	}{
		{"new matching object is ADDED", event{cur: web}, "ADDED"},
		{"change of a matching object is MODIFIED", event{existed: true, hasPrevM: true, prev: web, cur: web}, "MODIFIED"},
		{"object moving into the selection is ADDED", event{existed: true, hasPrevM: true, prev: db, cur: web}, "ADDED"},
		{"object moving out of the selection is DELETED", event{existed: true, hasPrevM: true, prev: web, cur: db}, "DELETED"},
		{"object outside the selection is not shown", event{existed: true, hasPrevM: true, prev: db, cur: db}, ""},
		{"deleted matching object is DELETED", event{deleted: true, existed: true, hasPrevM: true, prev: web, cur: web}, "DELETED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.e.watchType(sel)
			if !ok {
				got = ""
			}
			if got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}
