package index

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"reflect"
	"testing"
)

// fuzzKey is fixed so the committed seed corpus (testdata/fuzz/FuzzVerify) holds validly signed
// envelopes the fuzzer can mutate from.
var fuzzKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

// FuzzVerify feeds arbitrary bytes to the envelope and index decoders: they must never panic,
// every refusal must be one of the package's errors, and an index that is accepted must encode and
// decode back to itself.
func FuzzVerify(f *testing.F) {
	good, err := Sign(sample(3), fuzzKey)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	payload, _ := sample(3).Marshal()
	f.Add(payload)
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, _, err := Verify(data, Policy{Trusted: []ed25519.PublicKey{fuzzKey.Public().(ed25519.PublicKey)}, Now: t0})
		if err != nil {
			known := false
			for _, e := range []error{ErrMalformed, ErrUntrustedKey, ErrBadSignature, ErrRollback, ErrExpired} {
				known = known || errorsIs(err, e)
			}
			if !known {
				t.Fatalf("refusal without a refusal error: %v", err)
			}
		} else if idx.Validate() != nil {
			t.Fatalf("accepted an invalid index: %v", idx.Validate())
		}
		// The payload decoder on its own, and its round trip.
		x, err := Decode(data)
		if err != nil {
			if !errorsIs(err, ErrMalformed) {
				t.Fatalf("Decode refusal is not ErrMalformed: %v", err)
			}
			return
		}
		again, err := x.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		y, err := Decode(again)
		if err != nil {
			t.Fatalf("re-encoded index does not decode: %v\n%s", err, again)
		}
		if !reflect.DeepEqual(x, y) {
			t.Fatalf("round trip changed the index:\n%+v\n%+v", x, y)
		}
	})
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }
