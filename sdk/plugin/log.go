package plugin

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	modulepb "github.com/kedge-io/kedge/sdk/proto"
)

// maxPendingLogs bounds the records waiting for the host. Past it records are counted, and the count
// reaches the host's log with the next batch, so a flood is visible rather than silently lost.
const maxPendingLogs = 10000

// shipper sends log records to the host in batches from one goroutine, so logging never waits for a
// round trip to the host (one call costs about as much as handling a message).
type shipper struct {
	client  modulepb.HostClient
	mu      sync.Mutex
	pending []*modulepb.LogRecord
	dropped uint64
	kick    chan struct{}      // a record is pending
	flushes chan chan struct{} // ship everything, then close the channel
	done    chan struct{}      // closed by close: the goroutine ships what is left and ends
	ended   chan struct{}
}

func newShipper(client modulepb.HostClient) *shipper {
	s := &shipper{client: client, kick: make(chan struct{}, 1), flushes: make(chan chan struct{}),
		done: make(chan struct{}), ended: make(chan struct{})}
	go s.run()
	return s
}

func (s *shipper) add(r *modulepb.LogRecord) {
	s.mu.Lock()
	if len(s.pending) >= maxPendingLogs {
		s.dropped++
	} else {
		s.pending = append(s.pending, r)
	}
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *shipper) run() {
	defer close(s.ended)
	for {
		var ack chan struct{}
		select {
		case <-s.kick:
		case ack = <-s.flushes:
		case <-s.done:
			s.shipAll()
			return
		}
		s.shipAll()
		if ack != nil {
			close(ack)
		}
	}
}

func (s *shipper) shipAll() {
	for {
		s.mu.Lock()
		recs, dropped := s.pending, s.dropped
		s.pending, s.dropped = nil, 0
		s.mu.Unlock()
		if len(recs) == 0 && dropped == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := s.client.Log(ctx, &modulepb.LogRequest{Records: recs, Dropped: dropped})
		cancel()
		if err != nil {
			// The host's end is gone or stuck; stderr still reaches the host's log line by line.
			fmt.Fprintf(os.Stderr, "kedge plugin: sending %d log records to the host failed: %v\n", len(recs), err)
			for _, r := range recs {
				fmt.Fprintf(os.Stderr, "%s %s %s %v\n", time.Unix(0, r.GetTimeUnixNano()).Format(time.RFC3339Nano),
					slog.Level(r.GetLevel()), r.GetMessage(), r.GetAttrs())
			}
		}
	}
}

// flush returns once every record logged before it reached the host, or ctx ended.
func (s *shipper) flush(ctx context.Context) {
	ack := make(chan struct{})
	select {
	case s.flushes <- ack:
	case <-s.ended:
		return
	case <-ctx.Done():
		return
	}
	select {
	case <-ack:
	case <-ctx.Done():
	}
}

// close ships what is pending and stops the goroutine.
func (s *shipper) close(ctx context.Context) {
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	select {
	case <-s.ended:
	case <-ctx.Done():
	}
}

// logHandler is the slog.Handler behind the module's Logger: records go to the host's log stream,
// where the host adds the module's name. Attributes inside groups are flattened to "group.key".
type logHandler struct {
	ship   *shipper
	min    slog.Level
	attrs  []*modulepb.Attr
	prefix string // the open groups, "a.b."
}

var _ slog.Handler = (*logHandler)(nil)

func (h *logHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.min }

func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	rec := &modulepb.LogRecord{TimeUnixNano: r.Time.UnixNano(), Level: int32(r.Level), Message: r.Message,
		Attrs: slices.Clone(h.attrs)}
	if r.Time.IsZero() {
		rec.TimeUnixNano = time.Now().UnixNano()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs = appendAttr(rec.Attrs, h.prefix, a)
		return true
	})
	h.ship.add(rec)
	return nil
}

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = slices.Clone(h.attrs)
	for _, a := range as {
		c.attrs = appendAttr(c.attrs, h.prefix, a)
	}
	return &c
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.prefix = h.prefix + name + "."
	return &c
}

// appendAttr converts one slog attribute, keeping its kind (int, bool, duration, ...) so the host's
// handler prints it as the module meant.
func appendAttr(dst []*modulepb.Attr, prefix string, a slog.Attr) []*modulepb.Attr {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return dst
	}
	v := a.Value
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p = prefix + a.Key + "."
		}
		for _, g := range v.Group() {
			dst = appendAttr(dst, p, g)
		}
		return dst
	}
	out := &modulepb.Attr{Key: prefix + a.Key}
	switch v.Kind() {
	case slog.KindString:
		out.Value = &modulepb.Attr_Str{Str: v.String()}
	case slog.KindInt64:
		out.Value = &modulepb.Attr_Int{Int: v.Int64()}
	case slog.KindUint64:
		out.Value = &modulepb.Attr_Uint{Uint: v.Uint64()}
	case slog.KindFloat64:
		out.Value = &modulepb.Attr_Float{Float: v.Float64()}
	case slog.KindBool:
		out.Value = &modulepb.Attr_Bool{Bool: v.Bool()}
	case slog.KindDuration:
		out.Value = &modulepb.Attr_DurationNs{DurationNs: int64(v.Duration())}
	case slog.KindTime:
		out.Value = &modulepb.Attr_TimeUnixNano{TimeUnixNano: v.Time().UnixNano()}
	default: // KindAny: errors, structs, ...
		out.Value = &modulepb.Attr_Str{Str: fmt.Sprint(v.Any())}
	}
	return append(dst, out)
}
