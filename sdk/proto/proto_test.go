package modulepb

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/sdk/message"
)

func TestErrorsKeepTheirIdentityAcrossTheWire(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		is   []error
		not  []error
		code codes.Code
	}{
		{"store miss", fmt.Errorf("get pod/x: %w", store.ErrNotFound), []error{store.ErrNotFound}, []error{router.ErrUnknownModule}, codes.NotFound},
		{"late reply", fmt.Errorf("reply: %w: %w", router.ErrNoWaiter, router.ErrUnknownModule),
			[]error{router.ErrNoWaiter, router.ErrUnknownModule}, []error{store.ErrNotFound}, codes.FailedPrecondition},
		{"full mailbox", fmt.Errorf("send: %w: %w", router.ErrMailboxFull, context.DeadlineExceeded),
			[]error{router.ErrMailboxFull, context.DeadlineExceeded}, nil, codes.ResourceExhausted},
		{"plain", errors.New("disk on fire"), nil, []error{store.ErrNotFound, context.Canceled}, codes.Unknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wire := Status(tc.err)
			if st, _ := status.FromError(wire); st.Code() != tc.code {
				t.Errorf("code %s, want %s", st.Code(), tc.code)
			}
			back := Error(wire)
			if back.Error() != tc.err.Error() {
				t.Errorf("message %q, want %q", back, tc.err)
			}
			for _, e := range tc.is {
				if !errors.Is(back, e) {
					t.Errorf("errors.Is(%v) = false after the round trip", e)
				}
			}
			for _, e := range tc.not {
				if errors.Is(back, e) {
					t.Errorf("errors.Is(%v) = true, want false", e)
				}
			}
		})
	}
	if Status(nil) != nil || Error(nil) != nil {
		t.Error("nil did not stay nil")
	}
	transport := errors.New("connection reset")
	if Error(transport) != transport {
		t.Error("a non-status error was changed")
	}
	if !errors.Is(Error(status.Error(codes.DeadlineExceeded, "deadline")), context.DeadlineExceeded) {
		t.Error("gRPC's own deadline error does not match context.DeadlineExceeded")
	}
}

func TestMessageConvertsBothWays(t *testing.T) {
	m := message.Message{
		Header:  message.Header{ID: "id-1", ParentID: "p", Timestamp: 1700000000123, ResourceVersion: "42", Sync: true, Type: "t"},
		Route:   message.Route{Source: "a", Destination: "b", Group: "g", Operation: "update", Resource: "ns/pod/x"},
		Content: []byte(`{"k":[1,2]}`),
	}
	b, err := proto.Marshal(FromMessage(m))
	if err != nil {
		t.Fatal(err)
	}
	var pm Message
	if err := proto.Unmarshal(b, &pm); err != nil {
		t.Fatal(err)
	}
	if got := pm.ToMessage(); !reflect.DeepEqual(got, m) {
		t.Errorf("got  %+v\nwant %+v", got, m)
	}
	var nilMsg *Message
	if got := nilMsg.ToMessage(); !reflect.DeepEqual(got, message.Message{}) {
		t.Errorf("a nil message converts to %+v, want the zero message", got)
	}
}

func TestObjectConvertsBothWays(t *testing.T) {
	o := store.Object{Key: store.Key{Type: "pod", Namespace: "ns", Name: "x"}, ResourceVersion: 9, Value: []byte(`"v"`),
		UpdatedAt: time.Unix(0, 1700000000123456789)}
	if got := FromObject(o).ToObject(); !reflect.DeepEqual(got, o) || !got.UpdatedAt.Equal(o.UpdatedAt) {
		t.Errorf("got %+v, want %+v", got, o)
	}
	r := store.PutResult{Applied: true, Stored: 9}
	if got := FromPutResult(r).ToPutResult(); got != r {
		t.Errorf("put result %+v", got)
	}
}

// FuzzMessage: whatever bytes arrive as a Message, conversion never panics and is stable: a message
// converted back to the wire and again gives the same host message.
func FuzzMessage(f *testing.F) {
	seed, _ := proto.Marshal(FromMessage(message.Message{Header: message.Header{ID: "x", Timestamp: 1},
		Route: message.Route{Operation: "update"}, Content: []byte(`{}`)}))
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		var pm Message
		if proto.Unmarshal(b, &pm) != nil {
			return
		}
		m := pm.ToMessage()
		_ = m.Validate()
		again, err := proto.Marshal(FromMessage(m))
		if err != nil {
			t.Fatal(err)
		}
		var pm2 Message
		if err := proto.Unmarshal(again, &pm2); err != nil {
			t.Fatal(err)
		}
		if m2 := pm2.ToMessage(); !reflect.DeepEqual(m2, m) && !(len(m.Content) == 0 && len(m2.Content) == 0) {
			t.Fatalf("unstable: %+v became %+v", m, m2)
		}
	})
}
