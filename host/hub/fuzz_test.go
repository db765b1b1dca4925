package hub

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/kedge-io/kedge/host/message"
)

// FuzzDecodeFrame feeds arbitrary header and payload frames to DecodeFrame. Properties: no panic;
// every failure is a *FrameError with a known reason; whatever decodes re-encodes and decodes to the
// same message; and the protobuf library, given the same payload and the published schema (plus
// Kedge's extensions), reads the same field values, so our decoder accepts nothing KubeEdge's would
// read differently.
func FuzzDecodeFrame(f *testing.F) {
	for _, m := range sampleMessages {
		h, p, err := EncodeFrame(m, false)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(h, p)
	}
	md := viaductSchema(f, true)
	const limit = 1 << 20 // keeps gzip bombs cheap
	f.Fuzz(func(t *testing.T, header, payload []byte) {
		m, err := DecodeFrame(header, payload, limit)
		if err != nil {
			var fe *FrameError
			if !errors.As(err, &fe) || fe.Reason() == "other" || fe.Detail == "" {
				t.Fatalf("error %v is not a *FrameError with a known reason and a detail", err)
			}
			return
		}
		h2, p2, err := EncodeFrame(m, false)
		if err != nil {
			t.Fatalf("decoded message does not re-encode: %v", err)
		}
		again, err := DecodeFrame(h2, p2, limit)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		assertSameMessage(t, again, m)

		plain := payload
		if header[5]&FlagCompressed != 0 {
			if plain, err = gunzipBytes(payload, limit); err != nil {
				t.Fatalf("decoded, yet gunzip fails: %v", err)
			}
		}
		dm := dynamicpb.NewMessage(md)
		if err := proto.Unmarshal(plain, dm); err != nil {
			t.Fatalf("we decoded a payload the protobuf library rejects: %v", err)
		}
		if lib, ours := fromDynamic(md, dm), fieldsOf(m); lib != ours {
			t.Fatalf("the protobuf library reads\n%+v\nwe read\n%+v", lib, ours)
		}
		libContent := dm.Get(md.Fields().ByName("Content")).Bytes()
		if want, _ := contentJSON(libContent); !bytes.Equal(want, m.Content) {
			t.Fatalf("content: library %q, ours %q", libContent, m.Content)
		}
	})
}

// wireFields are a message's fields other than content, for comparing two decoders.
type wireFields struct {
	ID, ParentID, Type, RV, Source, Group, Op, Resource, Dest string
	Timestamp                                                 int64
	Sync                                                      bool
}

func fieldsOf(m message.Message) wireFields {
	h, r := m.Header, m.Route
	return wireFields{h.ID, h.ParentID, h.Type, h.ResourceVersion, r.Source, r.Group, r.Operation, r.Resource,
		r.Destination, h.Timestamp, h.Sync}
}

// fromDynamic reads the reference decoder's fields.
func fromDynamic(md protoreflect.MessageDescriptor, dm *dynamicpb.Message) wireFields {
	h := dm.Get(md.Fields().ByName("header")).Message()
	r := dm.Get(md.Fields().ByName("router")).Message()
	s := func(pm protoreflect.Message, name string) string {
		return pm.Get(pm.Descriptor().Fields().ByName(protoreflect.Name(name))).String()
	}
	return wireFields{s(h, "ID"), s(h, "ParentID"), s(h, "MessageType"), s(h, "resourceVersion"),
		s(r, "Source"), s(r, "Group"), s(r, "Operaion"), s(r, "Resouce"), s(r, "destination"),
		h.Get(h.Descriptor().Fields().ByName("Timestamp")).Int(), h.Get(h.Descriptor().Fields().ByName("Sync")).Bool()}
}
