package hub

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/kedge-io/kedge/host/message"
)

var update = flag.Bool("update", false, "rewrite the header and payload lines of the golden vectors from the encoder")

// golden is one vector in testdata/golden: a message (Kedge JSON) and its two frames in hex.
type golden struct {
	path       string
	comment    []string
	message    string
	header     string
	payload    string
	decodeOnly bool // hand-made bytes Kedge decodes but never produces (compressed, bare-text content)
}

func readGolden(t *testing.T) []golden {
	t.Helper()
	paths, err := filepath.Glob("testdata/golden/*.txt")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no golden vectors in testdata/golden: %v", err)
	}
	var out []golden
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		g := golden{path: p}
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			key, val, _ := strings.Cut(line, ":")
			val = strings.TrimSpace(val)
			switch {
			case strings.HasPrefix(line, "#"):
				g.comment = append(g.comment, line)
			case key == "message":
				g.message = val
			case key == "header":
				g.header = val
			case key == "payload":
				g.payload = val
			case key == "decode-only":
				g.decodeOnly = val == "true"
			default:
				t.Fatalf("%s: unexpected line %q", p, line)
			}
		}
		out = append(out, g)
	}
	return out
}

func (g golden) write(t *testing.T) {
	var b strings.Builder
	for _, c := range g.comment {
		b.WriteString(c + "\n")
	}
	b.WriteString("message: " + g.message + "\nheader: " + g.header + "\npayload: " + g.payload + "\n")
	if g.decodeOnly {
		b.WriteString("decode-only: true\n")
	}
	if err := os.WriteFile(g.path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func TestGoldenVectorsEncodeAndDecode(t *testing.T) {
	for _, g := range readGolden(t) {
		t.Run(filepath.Base(g.path), func(t *testing.T) {
			want, err := message.Decode([]byte(g.message))
			if err != nil {
				t.Fatalf("message line: %v", err)
			}
			if !g.decodeOnly {
				h, p, err := EncodeFrame(want, false)
				if err != nil {
					t.Fatal(err)
				}
				if *update {
					g.header, g.payload = hex.EncodeToString(h), hex.EncodeToString(p)
					g.write(t)
				}
				if got := hex.EncodeToString(h); got != g.header {
					t.Errorf("header = %s, golden %s", got, g.header)
				}
				if got := hex.EncodeToString(p); got != g.payload {
					t.Errorf("payload = %s\n          golden %s", got, g.payload)
				}
			}
			got, err := DecodeFrame(mustHex(t, g.header), mustHex(t, g.payload), 0)
			if err != nil {
				t.Fatalf("decode golden frames: %v", err)
			}
			assertSameMessage(t, got, want)
		})
	}
}

func assertSameMessage(t *testing.T, got, want message.Message) {
	t.Helper()
	if len(got.Content) == 0 && len(want.Content) == 0 {
		got.Content, want.Content = nil, nil
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("message differs\n got: %+v content %s\nwant: %+v content %s", got, got.Content, want, want.Content)
	}
}

// viaductSchema builds KubeEdge viaduct's message.proto (field names, numbers and types as published)
// with the protobuf library, so the library's own encoder and decoder can check ours. With kedge set
// it adds Kedge's two extension fields.
func viaductSchema(t testing.TB, kedge bool) protoreflect.MessageDescriptor {
	t.Helper()
	field := func(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, typeName string) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{Name: proto.String(name), JsonName: proto.String(name), Number: proto.Int32(num),
			Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: typ.Enum()}
		if typeName != "" {
			f.TypeName = proto.String(typeName)
		}
		return f
	}
	str, sint64, boolean := descriptorpb.FieldDescriptorProto_TYPE_STRING, descriptorpb.FieldDescriptorProto_TYPE_SINT64, descriptorpb.FieldDescriptorProto_TYPE_BOOL
	router := &descriptorpb.DescriptorProto{Name: proto.String("MessageRouter"), Field: []*descriptorpb.FieldDescriptorProto{
		field("Source", 1, str, ""), field("Group", 2, str, ""), field("Operaion", 3, str, ""), field("Resouce", 4, str, "")}}
	header := &descriptorpb.DescriptorProto{Name: proto.String("MessageHeader"), Field: []*descriptorpb.FieldDescriptorProto{
		field("ID", 1, str, ""), field("ParentID", 2, str, ""), field("Timestamp", 3, sint64, ""),
		field("Sync", 4, boolean, ""), field("MessageType", 5, str, "")}}
	if kedge {
		header.Field = append(header.Field, field("resourceVersion", 1000, str, ""))
		router.Field = append(router.Field, field("destination", 1000, str, ""))
	}
	msg := &descriptorpb.DescriptorProto{Name: proto.String("Message"), Field: []*descriptorpb.FieldDescriptorProto{
		field("header", 1, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, ".message.MessageHeader"),
		field("router", 2, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, ".message.MessageRouter"),
		field("Content", 3, descriptorpb.FieldDescriptorProto_TYPE_BYTES, "")}}
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name: proto.String("viaduct/message.proto"), Package: proto.String("message"), Syntax: proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{router, header, msg},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return fd.Messages().ByName("Message")
}

// toDynamic fills the reference message from m, setting only non-zero fields as proto3 does, and
// both sub-messages always, as KubeEdge's translator does.
func toDynamic(md protoreflect.MessageDescriptor, m message.Message) *dynamicpb.Message {
	dm := dynamicpb.NewMessage(md)
	hd := md.Fields().ByName("header").Message()
	rd := md.Fields().ByName("router").Message()
	h, r := dynamicpb.NewMessage(hd), dynamicpb.NewMessage(rd)
	setStr := func(dm *dynamicpb.Message, name, v string) {
		if f := dm.Descriptor().Fields().ByName(protoreflect.Name(name)); f != nil && v != "" {
			dm.Set(f, protoreflect.ValueOfString(v))
		}
	}
	setStr(h, "ID", m.Header.ID)
	setStr(h, "ParentID", m.Header.ParentID)
	if m.Header.Timestamp != 0 {
		h.Set(hd.Fields().ByName("Timestamp"), protoreflect.ValueOfInt64(m.Header.Timestamp))
	}
	if m.Header.Sync {
		h.Set(hd.Fields().ByName("Sync"), protoreflect.ValueOfBool(true))
	}
	setStr(h, "MessageType", m.Header.Type)
	setStr(h, "resourceVersion", m.Header.ResourceVersion)
	setStr(r, "Source", m.Route.Source)
	setStr(r, "Group", m.Route.Group)
	setStr(r, "Operaion", m.Route.Operation)
	setStr(r, "Resouce", m.Route.Resource)
	setStr(r, "destination", m.Route.Destination)
	dm.Set(md.Fields().ByName("header"), protoreflect.ValueOfMessage(h))
	dm.Set(md.Fields().ByName("router"), protoreflect.ValueOfMessage(r))
	if len(m.Content) > 0 {
		dm.Set(md.Fields().ByName("Content"), protoreflect.ValueOfBytes(m.Content))
	}
	return dm
}

var sampleMessages = []message.Message{
	{Header: message.Header{ID: "a", Timestamp: 0}, Route: message.Route{Operation: "keepalive"}},
	{Header: message.Header{ID: "4bd2c4a4-6ed4-4ac4-9b1a-6c4a2f0e2a11", ParentID: "p-1", Timestamp: 1700000000123, Sync: true, Type: "typ"},
		Route:   message.Route{Source: "edgecontroller", Group: "resource", Operation: "update", Resource: "node/edge-1/default/pod/nginx"},
		Content: json.RawMessage(`{"metadata":{"name":"nginx","resourceVersion":"42"}}`)},
	{Header: message.Header{ID: "x", Timestamp: 1, ResourceVersion: "987654321"},
		Route:   message.Route{Source: "metamanager", Destination: "edged", Group: "meta", Operation: "response", Resource: "r"},
		Content: json.RawMessage(`"OK"`)},
	{Header: message.Header{ID: "ünïcode-id", Timestamp: 1<<62 + 7}, Route: message.Route{Operation: "op", Resource: strings.Repeat("r", 300)},
		Content: json.RawMessage(`[1,2,3]`)},
}

func TestEncodingMatchesTheProtobufLibraryWithKedgeSchema(t *testing.T) {
	md := viaductSchema(t, true)
	for i, m := range sampleMessages {
		ours, err := MarshalMessage(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		lib, err := proto.MarshalOptions{Deterministic: true}.Marshal(toDynamic(md, m))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ours, lib) {
			t.Errorf("message %d: ours %x\n           lib  %x", i, ours, lib)
		}
	}
}

// A KubeEdge peer decodes our payload with its own schema: every KubeEdge field has our value and
// Kedge's extensions arrive as unknown fields it ignores.
func TestKubeEdgeSchemaReadsOurPayloadAndSkipsExtensions(t *testing.T) {
	md := viaductSchema(t, false)
	for i, m := range sampleMessages {
		ours, err := MarshalMessage(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		dm := dynamicpb.NewMessage(md)
		if err := proto.Unmarshal(ours, dm); err != nil {
			t.Fatalf("message %d: KubeEdge schema cannot decode our payload: %v", i, err)
		}
		h := dm.Get(md.Fields().ByName("header")).Message()
		r := dm.Get(md.Fields().ByName("router")).Message()
		get := func(pm protoreflect.Message, name string) string {
			return pm.Get(pm.Descriptor().Fields().ByName(protoreflect.Name(name))).String()
		}
		if get(h, "ID") != m.Header.ID || get(h, "ParentID") != m.Header.ParentID ||
			h.Get(h.Descriptor().Fields().ByName("Timestamp")).Int() != m.Header.Timestamp ||
			h.Get(h.Descriptor().Fields().ByName("Sync")).Bool() != m.Header.Sync ||
			get(h, "MessageType") != m.Header.Type || get(r, "Source") != m.Route.Source ||
			get(r, "Group") != m.Route.Group || get(r, "Operaion") != m.Route.Operation ||
			get(r, "Resouce") != m.Route.Resource ||
			!bytes.Equal(dm.Get(md.Fields().ByName("Content")).Bytes(), m.Content) {
			t.Errorf("message %d: KubeEdge sees different values: %v", i, dm)
		}
		wantUnknown := (m.Header.ResourceVersion != "") || (m.Route.Destination != "")
		if gotUnknown := len(h.GetUnknown())+len(r.GetUnknown()) > 0; gotUnknown != wantUnknown {
			t.Errorf("message %d: unknown fields present = %v, want %v", i, gotUnknown, wantUnknown)
		}
	}
}

// A payload made by the protobuf library from the KubeEdge schema, with an extra unknown field of every
// wire type, decodes to the same message.
func TestDecodesKubeEdgePayloadSkippingUnknownFields(t *testing.T) {
	md := viaductSchema(t, false)
	for i, m := range sampleMessages {
		m.Header.ResourceVersion, m.Route.Destination = "", "" // KubeEdge cannot send these
		lib, err := proto.Marshal(toDynamic(md, m))
		if err != nil {
			t.Fatal(err)
		}
		lib = protowire.AppendTag(lib, 50, protowire.VarintType)
		lib = protowire.AppendVarint(lib, 1<<40)
		lib = protowire.AppendTag(lib, 51, protowire.Fixed32Type)
		lib = protowire.AppendFixed32(lib, 7)
		lib = protowire.AppendTag(lib, 52, protowire.Fixed64Type)
		lib = protowire.AppendFixed64(lib, 7)
		lib = protowire.AppendTag(lib, 53, protowire.BytesType)
		lib = protowire.AppendString(lib, "future")
		lib = protowire.AppendTag(lib, 54, protowire.StartGroupType)
		lib = protowire.AppendTag(lib, 1, protowire.VarintType)
		lib = protowire.AppendVarint(lib, 3)
		lib = protowire.AppendTag(lib, 54, protowire.EndGroupType)
		got, err := UnmarshalMessage(lib)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		assertSameMessage(t, got, m)
	}
}

func TestContentFromThePeerIsKeptIfJSONAndQuotedIfBareText(t *testing.T) {
	for _, tc := range []struct{ wire, want string }{
		{`{"a":1}`, `{"a":1}`},
		{`"OK"`, `"OK"`},
		{`OK`, `"OK"`},
		{`42`, `42`},
		{`hello "world"`, `"hello \"world\""`},
		{``, ``},
	} {
		p := payloadWith(t, message.Message{Header: message.Header{ID: "1"}, Route: message.Route{Operation: "op"}}, []byte(tc.wire))
		m, err := UnmarshalMessage(p)
		if err != nil {
			t.Fatalf("content %q: %v", tc.wire, err)
		}
		if string(m.Content) != tc.want {
			t.Errorf("content %q decoded to %q, want %q", tc.wire, m.Content, tc.want)
		}
	}
}

// payloadWith encodes m, then appends content as raw bytes (bypassing the JSON check).
func payloadWith(t testing.TB, m message.Message, content []byte) []byte {
	t.Helper()
	p, err := MarshalMessage(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	if len(content) > 0 {
		p = protowire.AppendTag(p, fieldContent, protowire.BytesType)
		p = protowire.AppendBytes(p, content)
	}
	return p
}

func TestCompressedFrameRoundTrips(t *testing.T) {
	m := sampleMessages[1]
	h, p, err := EncodeFrame(m, true)
	if err != nil {
		t.Fatal(err)
	}
	if h[5] != FlagCompressed {
		t.Fatalf("flags = %#x, want 0x80", h[5])
	}
	got, err := DecodeFrame(h, p, 0)
	if err != nil {
		t.Fatal(err)
	}
	assertSameMessage(t, got, m)
}

func hdr(version uint32, typ, flags byte, length uint32) []byte {
	return AppendHeader(nil, Header{Version: version, Type: typ, Flags: flags, Length: length})
}

// badFrames are header+payload pairs each breaking one rule; shared with the connection tests.
func badFrames(t testing.TB) []struct {
	name            string
	header, payload []byte
	want            error
} {
	good, err := MarshalMessage(nil, sampleMessages[1])
	if err != nil {
		t.Fatal(err)
	}
	withHeader := func(p []byte) ([]byte, []byte) { return hdr(Version, TypeMessage, 0, uint32(len(p))), p }
	tag := func(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }
	sub := func(num protowire.Number, inner []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), inner)
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	okRouter := sub(fieldRouter, cat(tag(routerOperation, protowire.BytesType), []byte{2, 'o', 'p'}))
	okHeader := sub(fieldHeader, cat(tag(headerID, protowire.BytesType), []byte{1, 'i'}))
	var cases []struct {
		name            string
		header, payload []byte
		want            error
	}
	add := func(name string, h, p []byte, want error) {
		cases = append(cases, struct {
			name            string
			header, payload []byte
			want            error
		}{name, h, p, want})
	}
	add("version 2.0.0", hdr(2<<24, TypeMessage, 0, uint32(len(good))), good, ErrVersion)
	add("version 0.1.1", hdr(1<<16|1<<8, TypeMessage, 0, uint32(len(good))), good, ErrVersion)
	add("stream package type", hdr(Version, 0x02, 0, uint32(len(good))), good, ErrType)
	add("unknown package type", hdr(Version, 0x09, 0, uint32(len(good))), good, ErrType)
	add("unknown flag", hdr(Version, TypeMessage, 0x01, uint32(len(good))), good, ErrFlags)
	add("length over the limit", hdr(Version, TypeMessage, 0, MaxPayload+1), nil, ErrTooLarge)
	add("short header", hdr(Version, TypeMessage, 0, 3)[:7], nil, ErrHeader)
	add("long header", append(hdr(Version, TypeMessage, 0, 3), 0), nil, ErrHeader)
	add("payload shorter than announced", hdr(Version, TypeMessage, 0, uint32(len(good)+5)), good, ErrLength)
	add("payload longer than announced", hdr(Version, TypeMessage, 0, uint32(len(good)-1)), good, ErrLength)
	h, p := withHeader(good[:len(good)-3])
	add("truncated protobuf", h, p, ErrTruncated)
	h, p = withHeader(cat(tag(fieldHeader, protowire.BytesType), []byte{0x80}))
	add("truncated length varint", h, p, ErrTruncated)
	h, p = withHeader(cat(tag(fieldHeader, protowire.VarintType), []byte{1}, okRouter))
	add("header as varint", h, p, ErrWireType)
	h, p = withHeader(cat(okHeader, sub(fieldRouter, cat(tag(routerOperation, protowire.Fixed32Type), []byte{1, 2, 3, 4}))))
	add("operation as fixed32", h, p, ErrWireType)
	h, p = withHeader(cat(sub(fieldHeader, cat(tag(headerTimestamp, protowire.BytesType), []byte{1, 'x'})), okRouter))
	add("timestamp as bytes", h, p, ErrWireType)
	h, p = withHeader(cat(sub(fieldHeader, cat(tag(headerID, protowire.BytesType), []byte{2, 0xff, 0xfe})), okRouter))
	add("ID not UTF-8", h, p, ErrMalformed)
	h, p = withHeader([]byte{0x00, 0x01})
	add("field number 0", h, p, ErrMalformed)
	h, p = withHeader(cat(okHeader, okRouter, tag(60, protowire.EndGroupType)))
	add("stray end-group", h, p, ErrMalformed)
	h, p = withHeader(payloadWith(t, message.Message{Header: message.Header{ID: "i"}, Route: message.Route{Operation: "op"}}, []byte{0xff, 0x00}))
	add("binary content", h, p, ErrContent)
	h, p = withHeader(okRouter)
	add("no ID", h, p, ErrInvalid)
	h, p = withHeader(cat(sub(fieldHeader, cat(tag(headerID, protowire.BytesType), []byte{1, 'i', byte(tag(headerTimestamp, protowire.VarintType)[0]), 1})), okRouter))
	add("negative timestamp", h, p, ErrInvalid)
	h = hdr(Version, TypeMessage, FlagCompressed, uint32(len(good)))
	add("compressed flag on plain payload", h, good, ErrCompressed)
	return cases
}

func TestDecodeFrameRejectsBadFramesWithTypedErrors(t *testing.T) {
	for _, tc := range badFrames(t) {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeFrame(tc.header, tc.payload, 0)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			var fe *FrameError
			if !errors.As(err, &fe) || fe.Detail == "" || fe.Reason() == "other" {
				t.Fatalf("err %v is not a *FrameError with a detail and a known reason", err)
			}
		})
	}
}

func TestGzipBombIsStoppedAtTheLimit(t *testing.T) {
	p := payloadWith(t, message.Message{Header: message.Header{ID: "i"}, Route: message.Route{Operation: "op"}},
		[]byte(`"`+strings.Repeat("a", 2<<20)+`"`))
	z, err := gzipBytes(p)
	if err != nil {
		t.Fatal(err)
	}
	_, err = DecodeFrame(hdr(Version, TypeMessage, FlagCompressed, uint32(len(z))), z, 1<<20)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
}

func TestMarshalRefusesInvalidMessages(t *testing.T) {
	for name, m := range map[string]message.Message{
		"no ID":        {Route: message.Route{Operation: "op"}},
		"no operation": {Header: message.Header{ID: "i"}},
		"bad content":  {Header: message.Header{ID: "i"}, Route: message.Route{Operation: "op"}, Content: json.RawMessage("{")},
	} {
		if _, _, err := EncodeFrame(m, false); err == nil {
			t.Errorf("%s: EncodeFrame succeeded, want an error", name)
		}
	}
}
