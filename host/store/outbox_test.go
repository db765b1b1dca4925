package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func enqueueN(t *testing.T, q *Outbox, from, n int) []int64 {
	t.Helper()
	var seqs []int64
	for i := from; i < from+n; i++ {
		seq, err := q.Enqueue(context.Background(), fmt.Appendf(nil, "m%d", i))
		if err != nil {
			t.Fatalf("Enqueue m%d: %v", i, err)
		}
		seqs = append(seqs, seq)
	}
	return seqs
}

func payloads(es []Entry) string {
	var s []string
	for _, e := range es {
		s = append(s, string(e.Payload))
	}
	return strings.Join(s, ",")
}

func TestOutboxFIFOAcrossReopen(t *testing.T) {
	ctx := context.Background()
	db, path := openTest(t, Options{})
	seqs := enqueueN(t, db.Outbox(), 0, 5)
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("seqs not increasing: %v", seqs)
		}
	}
	db.Close()

	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got, err := db.Outbox().Peek(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if p := payloads(got); p != "m0,m1,m2,m3,m4" {
		t.Fatalf("Peek after reopen = %s, want m0..m4 in order", p)
	}
	for i, e := range got {
		if e.Seq != seqs[i] || e.EnqueuedAt.IsZero() {
			t.Fatalf("entry %d = %+v, want seq %d and an enqueue time", i, e, seqs[i])
		}
	}
	// Peek does not remove, and honours max.
	if again, _ := db.Outbox().Peek(ctx, 2); payloads(again) != "m0,m1" {
		t.Fatalf("second Peek(2) = %s, want m0,m1", payloads(again))
	}
}

func TestOutboxAckRemovesOnlyUpToSeq(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	q := db.Outbox()
	seqs := enqueueN(t, q, 0, 5)
	tests := []struct {
		upTo        int64
		wantRemoved int
		wantLeft    string
	}{
		{seqs[0] - 1, 0, "m0,m1,m2,m3,m4"},
		{seqs[1], 2, "m2,m3,m4"},
		{seqs[1], 0, "m2,m3,m4"}, // acking again is harmless
		{seqs[3], 2, "m4"},
		{seqs[4] + 100, 1, ""},
	}
	for _, tt := range tests {
		removed, err := q.Ack(ctx, tt.upTo)
		if err != nil {
			t.Fatal(err)
		}
		left, _ := q.Peek(ctx, 100)
		n, _ := q.Len(ctx)
		if removed != tt.wantRemoved || payloads(left) != tt.wantLeft || n != len(left) {
			t.Fatalf("Ack(%d) removed %d leaving %q (Len %d); want %d leaving %q",
				tt.upTo, removed, payloads(left), n, tt.wantRemoved, tt.wantLeft)
		}
	}
}

func TestOutboxSeqNeverReusedAfterAck(t *testing.T) {
	ctx := context.Background()
	db, path := openTest(t, Options{})
	first := enqueueN(t, db.Outbox(), 0, 3)
	if _, err := db.Outbox().Ack(ctx, first[2]); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	next := enqueueN(t, db.Outbox(), 3, 1)
	if next[0] <= first[2] {
		t.Fatalf("seq after acking everything and reopening = %d, want > %d", next[0], first[2])
	}
}

func TestOutboxFullRefusesWithoutDropping(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		max     int
		enqueue int
		wantErr bool
	}{
		{max: 3, enqueue: 3},
		{max: 3, enqueue: 4, wantErr: true},
		{max: -1, enqueue: 5},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("max=%d,enqueue=%d", tt.max, tt.enqueue), func(t *testing.T) {
			db, _ := openTest(t, Options{OutboxMax: tt.max})
			q := db.Outbox()
			var err error
			var last int64
			for i := range tt.enqueue {
				var seq int64
				if seq, err = q.Enqueue(ctx, []byte{byte(i)}); err != nil {
					break
				}
				last = seq
			}
			if !tt.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrOutboxFull) {
				t.Fatalf("Enqueue past the limit = %v, want ErrOutboxFull", err)
			}
			for _, want := range []string{"3 entries pending", "limit 3", "Ack", "OutboxMax"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			if n, _ := q.Len(ctx); n != 3 {
				t.Fatalf("Len after refused Enqueue = %d, want 3 (nothing dropped, nothing added)", n)
			}
			// Acking frees room.
			if _, err := q.Ack(ctx, last); err != nil {
				t.Fatal(err)
			}
			if _, err := q.Enqueue(ctx, []byte("after ack")); err != nil {
				t.Fatalf("Enqueue after Ack: %v", err)
			}
		})
	}
}

func TestOutboxPeekRejectsNonPositiveMax(t *testing.T) {
	db, _ := openTest(t, Options{})
	for _, max := range []int{0, -1} {
		if _, err := db.Outbox().Peek(context.Background(), max); err == nil {
			t.Errorf("Peek(%d) succeeded, want an error", max)
		}
	}
}

func TestOutboxLenTracksEnqueueAndAck(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	q := db.Outbox()
	seqs := enqueueN(t, q, 0, 4)
	if n, err := q.Len(ctx); err != nil || n != 4 {
		t.Fatalf("Len = %d, %v; want 4", n, err)
	}
	if _, err := q.Ack(ctx, seqs[2]); err != nil {
		t.Fatal(err)
	}
	var count int
	if err := db.r.QueryRow(`SELECT count(*) FROM outbox`).Scan(&count); err != nil {
		t.Fatal(err)
	}
	if n, err := q.Len(ctx); err != nil || n != 1 || count != 1 {
		t.Fatalf("Len = %d, %v, rows = %d; want 1 and 1", n, err, count)
	}
}
