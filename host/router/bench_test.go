package router

import (
	"context"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/message"
)

// consume receives n messages from mb and then signals done.
func consume(b *testing.B, mb *Mailbox, n int) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx := context.Background()
		for range n {
			if _, err := mb.Receive(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	}()
	return done
}

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkSend: one producer, one consumer goroutine, default mailbox.
func BenchmarkSend(b *testing.B) {
	r := New(nil)
	mb := mustRegister(b, r, "sink", "", Options{})
	mustRegister(b, r, "other", "", Options{}) // the lookup is not a one-entry map
	m := msg(message.NewID())
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	done := consume(b, mb, b.N)
	for range b.N {
		if err := r.Send(ctx, "sink", m); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	reportRate(b)
}

// BenchmarkSendParallel: GOMAXPROCS producers, one consumer.
func BenchmarkSendParallel(b *testing.B) {
	r := New(nil)
	mb := mustRegister(b, r, "sink", "", Options{})
	m := msg(message.NewID())
	b.ReportAllocs()
	b.ResetTimer()
	done := consume(b, mb, b.N)
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if err := r.Send(ctx, "sink", m); err != nil {
				b.Error(err)
				return
			}
		}
	})
	<-done
	reportRate(b)
}

// BenchmarkSendSync: requester -> module goroutine Receive -> Reply -> requester.
func BenchmarkSendSync(b *testing.B) {
	r := New(nil)
	mb := mustRegister(b, r, "meta", "", Options{})
	go func() {
		ctx := context.Background()
		for {
			req, err := mb.Receive(ctx)
			if err != nil {
				return
			}
			// A hand-built reply: message.Reply's ID and JSON encoding are not the router's cost.
			resp := message.Message{Header: message.Header{ID: "resp", ParentID: req.Header.ID, Sync: true},
				Route: message.Route{Source: "meta", Destination: req.Route.Source, Operation: message.OpResponse}}
			if err := r.Reply(ctx, resp); err != nil {
				b.Error(err)
				return
			}
		}
	}()
	defer r.Unregister("meta")
	m := msg(message.NewID()) // sequential calls can reuse one ID
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := r.SendSync(ctx, "meta", m, time.Second); err != nil {
			b.Fatal(err)
		}
	}
}
