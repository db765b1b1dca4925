package message

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
)

func TestNewIDIsVersion4UUIDAndUnique(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := make(map[string]bool)
	for range 1000 {
		id := NewID()
		if !re.MatchString(id) {
			t.Fatalf("NewID() = %q, not a v4 UUID", id)
		}
		if seen[id] {
			t.Fatalf("NewID() repeated %q", id)
		}
		seen[id] = true
	}
}

func TestAppendIDAppendsAnIDWithoutAllocatingWhenThereIsRoom(t *testing.T) {
	re := regexp.MustCompile(`^prefix:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	buf := make([]byte, 0, 64)
	if got := AppendID(append(buf, "prefix:"...)); !re.Match(got) {
		t.Fatalf("AppendID = %q, want the prefix and a v4 UUID", got)
	}
	if allocs := testing.AllocsPerRun(100, func() { buf = AppendID(buf[:0]) }); allocs != 0 {
		t.Fatalf("AppendID into a buffer with room allocated %v times", allocs)
	}
	if allocs := testing.AllocsPerRun(100, func() { _ = NewID() }); allocs != 1 {
		t.Fatalf("NewID allocated %v times, want 1 (the string)", allocs)
	}
}

func TestJSONFieldNamesAreKubeEdges(t *testing.T) {
	m := Message{
		Header: Header{ID: "id1", ParentID: "p1", Timestamp: 1700000000000, ResourceVersion: "42", Sync: true, Type: "t"},
		Route:  Route{Source: "edged", Destination: "metamanager", Group: "meta", Operation: OpUpdate, Resource: "default/pod/nginx"},
	}
	m, err := m.WithContent(map[string]int{"a": 1})
	if err != nil {
		t.Fatal(err)
	}
	got, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"header":{"msg_id":"id1","parent_msg_id":"p1","timestamp":1700000000000,"resourceversion":"42","sync":true,"type":"t"},` +
		`"route":{"source":"edged","destination":"metamanager","group":"meta","operation":"update","resource":"default/pod/nginx"},` +
		`"content":{"a":1}}`
	if string(got) != want {
		t.Fatalf("Encode:\n got  %s\n want %s", got, want)
	}
}

func TestDecodeRejectsMalformedMessagesWithReason(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{"not json", `{`, "decode message"},
		{"missing id", `{"header":{"timestamp":1},"route":{"operation":"update"}}`, "msg_id is empty"},
		{"negative timestamp", `{"header":{"msg_id":"a","timestamp":-5},"route":{"operation":"update"}}`, "timestamp -5 is negative"},
		{"missing operation", `{"header":{"msg_id":"a","timestamp":1},"route":{}}`, "route.operation is empty"},
		{"timestamp wrong type", `{"header":{"msg_id":"a","timestamp":"x"},"route":{"operation":"update"}}`, "decode message"},
		{"top level array", `[]`, "decode message"},
		{"oversized", `{"header":{"msg_id":"` + strings.Repeat("a", MaxSize) + `"}}`, "exceeds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Decode(%.40q) error = %v, want it to contain %q", tt.in, err, tt.wantErr)
			}
		})
	}
}

func TestDecodeIgnoresUnknownFieldsFromNewerPeers(t *testing.T) {
	m, err := Decode([]byte(`{"header":{"msg_id":"a","timestamp":1,"future":1},"route":{"operation":"query","x":2},"content":"OK","extra":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.ID != "a" || m.Route.Operation != OpQuery || string(m.Content) != `"OK"` {
		t.Fatalf("Decode = %+v", m)
	}
}

func TestWithContentRejectsInvalidRawJSON(t *testing.T) {
	m := New("a", "g", OpUpdate, "ns/pod/x")
	if _, err := m.WithContent([]byte("{not json")); err == nil {
		t.Fatal("WithContent accepted invalid raw JSON")
	}
	raw := []byte(`{"k":"v"}`)
	m2, err := m.WithContent(raw)
	if err != nil {
		t.Fatal(err)
	}
	raw[2] = 'X' // the message must not alias the caller's buffer
	if string(m2.Content) != `{"k":"v"}` {
		t.Fatalf("content aliased caller buffer: %s", m2.Content)
	}
}

func TestReplyPointsBackAtRequest(t *testing.T) {
	req := New("edged", "meta", OpQuery, "default/configmap/c1")
	req.Header.Sync = true
	resp, err := req.Reply("metamanager", "OK")
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case resp.Header.ParentID != req.Header.ID:
		t.Errorf("ParentID = %q, want %q", resp.Header.ParentID, req.Header.ID)
	case resp.Header.ID == req.Header.ID:
		t.Errorf("reply reused the request ID")
	case resp.Route.Destination != "edged" || resp.Route.Source != "metamanager":
		t.Errorf("route = %+v, want metamanager->edged", resp.Route)
	case resp.Route.Operation != OpResponse || !resp.Header.Sync || !resp.IsReply():
		t.Errorf("reply = %+v", resp)
	}
	e := req.ErrorReply("metamanager", errors.New("not found"))
	var body map[string]string
	if err := e.DecodeContent(&body); err != nil || body["error"] != "not found" || e.Route.Operation != OpError {
		t.Fatalf("ErrorReply = %+v (%v)", e, err)
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	m, _ := New("a", "b", OpInsert, "default/pod/x").WithContent(json.RawMessage(`{"spec":{"n":[1,2]}}`))
	data, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Header != m.Header || got.Route != m.Route || string(got.Content) != string(m.Content) {
		t.Fatalf("round trip:\n got  %+v\n want %+v", got, m)
	}
}

func TestStringNeverPrintsContent(t *testing.T) {
	m, _ := New("a", "b", OpInsert, "default/secret/s").WithContent(map[string]string{"password": "hunter2"})
	if strings.Contains(m.String(), "hunter2") {
		t.Fatalf("String() leaked content: %s", m)
	}
}

// FuzzDecode: any input either decodes to a message that re-encodes and decodes to itself, or is an error.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"header":{"msg_id":"a","timestamp":1},"route":{"operation":"update","resource":"default/pod/x"},"content":{"a":1}}`))
	f.Add([]byte(`{"header":{"msg_id":"a","parent_msg_id":"b","sync":true},"route":{"operation":"response"},"content":"OK"}`))
	f.Add([]byte(`{"header":{}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode(data)
		if err != nil {
			return
		}
		again, err := Encode(m)
		if err != nil {
			t.Fatalf("a decoded message does not re-encode: %v", err)
		}
		m2, err := Decode(again)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if m2.Header != m.Header || m2.Route != m.Route {
			t.Fatalf("round trip changed the message: %+v vs %+v", m, m2)
		}
	})
}
