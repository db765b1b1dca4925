package hub

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReadQUICStream feeds arbitrary bytes to the QUIC lane's stream reader as one message stream
// (after its "msg" use). Properties: no panic; the stream ends with io.EOF only at a frame boundary;
// every other failure is a *FrameError with a known reason and a detail; whatever decodes re-encodes
// as a frame that decodes to the same message. Seeds: testdata/fuzz/FuzzReadQUICStream and the sample
// messages back to back.
func FuzzReadQUICStream(f *testing.F) {
	var stream []byte
	for _, m := range sampleMessages {
		var err error
		if stream, err = AppendQUICFrame(stream, m); err != nil {
			f.Fatal(err)
		}
	}
	f.Add(stream)
	const limit = 1 << 20
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := bytes.NewReader(stream)
		for {
			at := len(stream) - r.Len()
			m, err := ReadQUICMessage(r, limit)
			if errors.Is(err, io.EOF) {
				if at != len(stream) {
					t.Fatalf("io.EOF at byte %d of %d", at, len(stream))
				}
				return
			}
			if err != nil {
				var fe *FrameError
				if !errors.As(err, &fe) || fe.Reason() == "other" || fe.Detail == "" {
					t.Fatalf("error %v is not a *FrameError with a known reason and a detail", err)
				}
				return
			}
			b, err := AppendQUICFrame(nil, m)
			if err != nil {
				t.Fatalf("decoded message does not re-encode: %v", err)
			}
			again, err := ReadQUICMessage(bytes.NewReader(b), limit)
			if err != nil {
				t.Fatalf("re-encoded message does not decode: %v", err)
			}
			assertSameMessage(t, again, m)
		}
	})
}
