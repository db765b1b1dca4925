package index

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// PayloadType names what an envelope carries; it is part of what is signed, so a signature over
// some other kind of document can never pass for an index signature.
const PayloadType = "application/vnd.kedge.plugin-index.v1+json"

// Envelope is what index.json holds: the exact payload bytes (base64) and detached signatures over
// them. The payload is never re-encoded before checking, so there is no canonicalisation to get wrong:
// what is verified is byte for byte what is then parsed.
type Envelope struct {
	PayloadType string      `json:"payloadType"`
	Payload     string      `json:"payload"` // standard base64 of the index JSON
	Signatures  []Signature `json:"signatures"`
}

// Signature is one ed25519 signature over SigningInput(payloadType, payload).
type Signature struct {
	KeyID string `json:"keyid"` // KeyID of the signing public key
	Sig   string `json:"sig"`   // standard base64, 64 bytes
}

// KeyID names a public key: the first 16 hex digits of its sha256.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:])[:16]
}

// SigningInput is the exact byte string that is signed:
//
//	"kedge-plugin-index" SP len(payloadType) SP payloadType SP len(payload) SP payload
//
// with lengths in decimal ASCII (the DSSE pre-authentication encoding, with Kedge's own prefix).
func SigningInput(payloadType string, payload []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "kedge-plugin-index %d %s %d ", len(payloadType), payloadType, len(payload))
	b.Write(payload)
	return b.Bytes()
}

// Sign encodes idx and signs it with each key, returning index.json's bytes.
func Sign(idx *Index, keys ...ed25519.PrivateKey) ([]byte, error) {
	if len(keys) == 0 {
		return nil, errors.New("sign: no key")
	}
	if err := idx.Validate(); err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	payload, err := idx.Marshal()
	if err != nil {
		return nil, err
	}
	return SignPayload(payload, keys...)
}

// SignPayload signs payload bytes as they are (tests use it to sign deliberately odd payloads).
func SignPayload(payload []byte, keys ...ed25519.PrivateKey) ([]byte, error) {
	env := Envelope{PayloadType: PayloadType, Payload: base64.StdEncoding.EncodeToString(payload)}
	in := SigningInput(PayloadType, payload)
	for _, k := range keys {
		if len(k) != ed25519.PrivateKeySize {
			return nil, fmt.Errorf("sign: a private key is %d bytes, not %d", ed25519.PrivateKeySize, len(k))
		}
		env.Signatures = append(env.Signatures, Signature{
			KeyID: KeyID(k.Public().(ed25519.PublicKey)),
			Sig:   base64.StdEncoding.EncodeToString(ed25519.Sign(k, in)),
		})
	}
	out, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// DecodeEnvelope parses index.json's envelope strictly and returns it with its decoded payload. It
// checks no signature: use Verify for anything you will act on.
func DecodeEnvelope(data []byte) (*Envelope, []byte, error) {
	var env Envelope
	if err := decodeStrict(data, &env); err != nil {
		return nil, nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	if env.PayloadType != PayloadType {
		return nil, nil, fmt.Errorf("%w: envelope: payloadType %q, want %q", ErrMalformed, env.PayloadType, PayloadType)
	}
	payload, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: envelope: payload is not standard base64: %v", ErrMalformed, err)
	}
	if len(env.Signatures) == 0 {
		return nil, nil, fmt.Errorf("%w: envelope: signatures: none", ErrMalformed)
	}
	for i, s := range env.Signatures {
		if b, err := base64.StdEncoding.DecodeString(s.Sig); err != nil || len(b) != ed25519.SignatureSize {
			return nil, nil, fmt.Errorf("%w: envelope: signatures[%d].sig: %d bytes of standard base64 expected", ErrMalformed, i, ed25519.SignatureSize)
		}
	}
	return &env, payload, nil
}

// Unverified decodes index.json without checking any signature, expiry or version (for `ls` of a
// registry whose key you do not have). Never install from it.
func Unverified(data []byte) (*Index, error) {
	_, payload, err := DecodeEnvelope(data)
	if err != nil {
		return nil, err
	}
	return Decode(payload)
}

// Policy is what a client trusts and remembers.
type Policy struct {
	// Trusted are the registry's public keys; one valid signature by one of them is enough.
	Trusted []ed25519.PublicKey
	// Last is the last index the client accepted (zero: none yet).
	Last State
	// Now is the current time (zero: time.Now()).
	Now time.Time
}

// Verify checks index.json's bytes and returns the index. In order it refuses: a malformed
// envelope (ErrMalformed), no signature by a trusted key (ErrUntrustedKey), a trusted key's
// signature that does not match the payload (ErrBadSignature), a malformed index (ErrMalformed), a
// version lower than the last accepted one, or the same version with other content (ErrRollback),
// and an index past its expiry (ErrExpired).
//
// The returned State is what the caller records once it has acted on the index (see StateFile).
func Verify(data []byte, p Policy) (*Index, State, error) {
	env, payload, err := DecodeEnvelope(data)
	if err != nil {
		return nil, State{}, err
	}
	trusted := map[string]ed25519.PublicKey{}
	for _, k := range p.Trusted {
		if len(k) == ed25519.PublicKeySize {
			trusted[KeyID(k)] = k
		}
	}
	in := SigningInput(env.PayloadType, payload)
	var byTrusted []string
	ok := false
	for _, s := range env.Signatures {
		k, known := trusted[s.KeyID]
		if !known {
			continue
		}
		byTrusted = append(byTrusted, s.KeyID)
		sig, _ := base64.StdEncoding.DecodeString(s.Sig)
		if ed25519.Verify(k, in, sig) {
			ok = true
			break
		}
	}
	switch {
	case len(trusted) == 0:
		return nil, State{}, fmt.Errorf("%w: no trusted key configured", ErrUntrustedKey)
	case !ok && len(byTrusted) == 0:
		var ids []string
		for _, s := range env.Signatures {
			ids = append(ids, s.KeyID)
		}
		var want []string
		for id := range trusted {
			want = append(want, id)
		}
		return nil, State{}, fmt.Errorf("%w: signed by key %s, trusted: %s", ErrUntrustedKey, strings.Join(ids, ", "), strings.Join(want, ", "))
	case !ok:
		return nil, State{}, fmt.Errorf("%w: signature by trusted key %s fails", ErrBadSignature, strings.Join(byTrusted, ", "))
	}
	idx, err := Decode(payload)
	if err != nil {
		return nil, State{}, err
	}
	sum := sha256.Sum256(payload)
	st := State{Version: idx.Version, PayloadSHA256: hex.EncodeToString(sum[:])}
	switch {
	case idx.Version < p.Last.Version:
		return nil, State{}, fmt.Errorf("%w: index version %d is older than version %d already seen", ErrRollback, idx.Version, p.Last.Version)
	case idx.Version == p.Last.Version && p.Last.PayloadSHA256 != "" && p.Last.PayloadSHA256 != st.PayloadSHA256:
		return nil, State{}, fmt.Errorf("%w: index version %d differs from the version %d already seen (a re-signed index must have a higher version)", ErrRollback, idx.Version, p.Last.Version)
	}
	now := p.Now
	if now.IsZero() {
		now = time.Now()
	}
	if !now.Before(idx.Expires) {
		return nil, State{}, fmt.Errorf("%w: index version %d expired at %s (now %s); the registry must re-sign it",
			ErrExpired, idx.Version, idx.Expires.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return idx, st, nil
}
