package plugin

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	modulepb "github.com/kedge-io/kedge/sdk/proto"
)

// pending returns what the handler queued for the host (the shipper's goroutine is not running).
func pendingRecords(s *shipper) []*modulepb.LogRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending
}

func TestLogHandlerKeepsLevelsKindsAndGroups(t *testing.T) {
	s := &shipper{kick: make(chan struct{}, 1)}
	log := slog.New(&logHandler{ship: s, min: slog.LevelInfo})
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)

	log.Debug("dropped below the host's level")
	log.With("conn", 7).WithGroup("req").Warn("slow", "took", 2*time.Second, "ok", false,
		slog.Group("peer", "addr", "10.0.0.1", "port", uint64(502)), "ratio", 0.5, "at", at, "err", errors.New("boom"))

	recs := pendingRecords(s)
	if len(recs) != 1 {
		t.Fatalf("%d records queued, want 1 (debug is below the level)", len(recs))
	}
	r := recs[0]
	if r.GetMessage() != "slow" || slog.Level(r.GetLevel()) != slog.LevelWarn || r.GetTimeUnixNano() == 0 {
		t.Errorf("record %v", r)
	}
	want := map[string]any{
		"conn": int64(7), "req.took": int64(2 * time.Second), "req.ok": false, "req.peer.addr": "10.0.0.1",
		"req.peer.port": uint64(502), "req.ratio": 0.5, "req.at": at.UnixNano(), "req.err": "boom",
	}
	got := map[string]any{}
	for _, a := range r.GetAttrs() {
		switch v := a.GetValue().(type) {
		case *modulepb.Attr_Str:
			got[a.GetKey()] = v.Str
		case *modulepb.Attr_Int:
			got[a.GetKey()] = v.Int
		case *modulepb.Attr_Uint:
			got[a.GetKey()] = v.Uint
		case *modulepb.Attr_Float:
			got[a.GetKey()] = v.Float
		case *modulepb.Attr_Bool:
			got[a.GetKey()] = v.Bool
		case *modulepb.Attr_DurationNs:
			got[a.GetKey()] = v.DurationNs
		case *modulepb.Attr_TimeUnixNano:
			got[a.GetKey()] = v.TimeUnixNano
		}
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("attr %s = %v (%T), want %v (%T)", k, got[k], got[k], v, v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("attrs %v, want exactly %v", got, want)
	}
}

func TestLogShipperCountsWhatItCannotHold(t *testing.T) {
	s := &shipper{kick: make(chan struct{}, 1)}
	for range maxPendingLogs + 5 {
		s.add(&modulepb.LogRecord{Message: "x"})
	}
	if len(s.pending) != maxPendingLogs || s.dropped != 5 {
		t.Errorf("pending %d, dropped %d; want %d and 5", len(s.pending), s.dropped, maxPendingLogs)
	}
}

func TestBatchTakesSendsOnlyWhileHandleRuns(t *testing.T) {
	b := &batch{}
	if !b.add(&modulepb.Outgoing{Target: "a"}) || !b.add(&modulepb.Outgoing{Target: "b"}) {
		t.Fatal("an open batch refused a send")
	}
	if got := b.take(); len(got) != 2 || got[0].GetTarget() != "a" {
		t.Fatalf("take: %v", got)
	}
	b.add(&modulepb.Outgoing{Target: "c"})
	if got := b.seal(); len(got) != 1 || got[0].GetTarget() != "c" {
		t.Fatalf("seal: %v", got)
	}
	if b.add(&modulepb.Outgoing{Target: "late"}) {
		t.Error("a sealed batch took a send: it would never be routed")
	}
}
