package abi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func full() Message {
	return Message{
		Header: Header{ID: "id-1", ParentID: "parent", Timestamp: 1700000000123, ResourceVersion: "42", Sync: true, Type: "t"},
		Route: Route{Source: "src", Destination: "dst", Group: "grp", Operation: "update",
			Resource: "device/d1/register/temp"},
		Content: []byte(`{"raw":700}`),
	}
}

func TestMessageSurvivesEncodeAndBothDecoders(t *testing.T) {
	for _, m := range []Message{full(), {Route: Route{Operation: "op"}}, {Header: Header{Timestamp: -1}}} {
		enc := AppendMessage([]byte("prefix"), m)[len("prefix"):]
		if len(enc) != MessageSize(m) {
			t.Fatalf("encoded %d bytes, MessageSize says %d", len(enc), MessageSize(m))
		}
		var a Arena
		for name, decode := range map[string]func([]byte) (Message, error){
			"DecodeMessage":     DecodeMessage,
			"DecodeMessageView": func(b []byte) (Message, error) { return DecodeMessageView(b, &a) },
		} {
			got, err := decode(enc)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("%s: got %+v, want %+v", name, got, m)
			}
		}
	}
}

func TestDecodedStringsNeverChangeWhenTheBufferIsReused(t *testing.T) {
	buf := AppendMessage(nil, full())
	owned, err := DecodeMessage(buf)
	if err != nil {
		t.Fatal(err)
	}
	var a Arena
	views := make([]Message, 0, 2000) // enough to cross several arena chunks
	for range cap(views) {
		v, err := DecodeMessageView(buf, &a)
		if err != nil {
			t.Fatal(err)
		}
		views = append(views, v)
	}
	other := full()
	other.Header.ID, other.Route.Resource, other.Content = "ID-2", "DEVICE/D2/REGISTER/TEMP", []byte(`{"raw":800}`)
	AppendMessage(buf[:0], other) // same sizes: overwrites buf in place
	if owned.Header.ID != "id-1" || string(owned.Content) != `{"raw":700}` {
		t.Fatalf("DecodeMessage result changed with its input: %+v", owned)
	}
	for i, v := range views {
		if v.Header.ID != "id-1" || v.Route.Resource != "device/d1/register/temp" {
			t.Fatalf("view %d's strings changed: %+v", i, v)
		}
	}
	if string(views[0].Content) != `{"raw":800}` {
		t.Fatalf("a view's content should alias the buffer, got %s", views[0].Content)
	}
}

func TestDecodeMessageRejectsMalformedInput(t *testing.T) {
	good := AppendMessage(nil, full())
	lenAt := func(b []byte, at int, n uint32) []byte {
		b = bytes.Clone(b)
		binary.LittleEndian.PutUint32(b[at:], n)
		return b
	}
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "shorter than the 49-byte minimum"},
		{"unknown flags", append([]byte{0x82}, good[1:]...), "unknown flags 0x82"},
		{"field past the end", lenAt(good, 9, 1<<20), "field 0 at byte 13 claims 1048576 bytes"},
		{"truncated", good[:len(good)-3], "field 9"},
		{"trailing bytes", append(bytes.Clone(good), 0), "1 trailing bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, decode := range []func([]byte) (Message, error){DecodeMessage, func(b []byte) (Message, error) { return DecodeMessageView(b, &Arena{}) }} {
				if _, err := decode(tt.in); err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("error %v, want %q", err, tt.want)
				}
			}
		})
	}
}

func TestStoreAndInitEncodingsRoundTrip(t *testing.T) {
	k := Key{Type: "reading", Namespace: "d1", Name: "temp"}
	if got, err := DecodeKey(AppendKey(nil, k)); err != nil || got != k {
		t.Fatalf("key: %+v %v", got, err)
	}
	q := Query{Type: "reading", NamePrefix: "te"}
	if got, err := DecodeQuery(AppendQuery(nil, q)); err != nil || got != q {
		t.Fatalf("query: %+v %v", got, err)
	}
	if rv, v, err := DecodeValue(AppendValue(nil, 7, []byte("v"))); err != nil || rv != 7 || string(v) != "v" {
		t.Fatalf("value: %d %q %v", rv, v, err)
	}
	es := []Entry{{Key: k, ResourceVersion: 3, Value: []byte("a")}, {Key: Key{Type: "x", Name: "y"}, Value: []byte{}}}
	if got, err := DecodeEntries(AppendEntries(nil, es)); err != nil || !reflect.DeepEqual(got, es) {
		t.Fatalf("entries: %+v %v", got, err)
	}
	in := Init{Name: "scaler", Node: "n1", Group: "drivers", Config: []byte(`{"scale":2}`)}
	if got, err := DecodeInit(AppendInit(nil, in)); err != nil || !reflect.DeepEqual(got, in) {
		t.Fatalf("init: %+v %v", got, err)
	}
	if _, err := DecodeEntries([]byte{0xff, 0xff, 0xff, 0x0f}); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Fatalf("a huge entry count must be refused before allocating, got %v", err)
	}
	if _, err := DecodeKey(AppendKey(nil, k)[:5]); err == nil {
		t.Fatal("truncated key decoded")
	}
}

func TestErrorsMatchTheirStatus(t *testing.T) {
	err := error(&Error{Status: Denied, Message: `sending to module "x" is not granted`})
	if !errors.Is(err, ErrDenied) || errors.Is(err, ErrNotFound) || err.Error() != `sending to module "x" is not granted` {
		t.Fatalf("errors.Is / Error() wrong for %v", err)
	}
	if s := Status(99).String(); s != "status 99" {
		t.Fatalf("unknown status reads %q", s)
	}
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add(AppendMessage(nil, full()))
	f.Add(AppendMessage(nil, Message{Route: Route{Operation: "op"}}))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b)
		v, verr := DecodeMessageView(b, &Arena{})
		if (err == nil) != (verr == nil) {
			t.Fatalf("decoders disagree: %v / %v", err, verr)
		}
		if err != nil {
			return
		}
		if !reflect.DeepEqual(m, v) {
			t.Fatalf("decoders disagree: %+v / %+v", m, v)
		}
		if re := AppendMessage(nil, m); !bytes.Equal(re, b) {
			t.Fatalf("re-encoding %x gives %x", b, re)
		}
	})
}

func FuzzDecodeEntries(f *testing.F) {
	f.Add(AppendEntries(nil, []Entry{{Key: Key{Type: "a", Name: "b"}, ResourceVersion: 1, Value: []byte("v")}}))
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := DecodeEntries(b)
		if err != nil {
			return
		}
		if re := AppendEntries(nil, es); !bytes.Equal(re, b) {
			t.Fatalf("re-encoding %x gives %x", b, re)
		}
	})
}

func TestIsReplyToHoldsOnlyForAnUnchangedReply(t *testing.T) {
	req := full()
	other := full() // equal strings, but not the request's own
	other.Header.ID = strings.Clone(req.Header.ID)
	tests := []struct {
		name   string
		change func(r *Message)
		want   bool
	}{
		{"unchanged", func(r *Message) {}, true},
		{"another content", func(r *Message) { r.Content = []byte(`"other"`) }, true},
		{"no content", func(r *Message) { r.Content = nil }, true},
		{"an ID set", func(r *Message) { r.Header.ID = "mine" }, false},
		{"a timestamp set", func(r *Message) { r.Header.Timestamp = 1 }, false},
		{"a type set", func(r *Message) { r.Header.Type = "t" }, false},
		{"a source set", func(r *Message) { r.Route.Source = "me" }, false},
		{"sync flipped", func(r *Message) { r.Header.Sync = !r.Header.Sync }, false},
		{"another parent", func(r *Message) { r.Header.ParentID = "x" }, false},
		{"an equal parent that is a copy", func(r *Message) { r.Header.ParentID = other.Header.ID }, false},
		{"another resourceVersion", func(r *Message) { r.Header.ResourceVersion = "43" }, false},
		{"another destination", func(r *Message) { r.Route.Destination = "elsewhere" }, false},
		{"another group", func(r *Message) { r.Route.Group = "" }, false},
		{"another operation", func(r *Message) { r.Route.Operation = "error" }, false},
		{"another resource", func(r *Message) { r.Route.Resource = "device/d2" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := req.Reply(req.Content)
			tt.change(&r)
			if got := IsReplyTo(&req, &r); got != tt.want {
				t.Fatalf("IsReplyTo = %v, want %v", got, tt.want)
			}
		})
	}
	if r := other.Reply(nil); IsReplyTo(&req, &r) {
		t.Fatal("a reply to another message with equal fields counts as a reply to the request")
	}
}
