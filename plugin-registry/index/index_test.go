package index

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/wasm/manifest"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

const sumA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func sample(version uint64) *Index {
	return &Index{Format: Format, Version: version, IssuedAt: t0, Expires: t0.Add(time.Hour), Plugins: []Plugin{
		{Name: "modbus", Version: "1.10.0", Kind: KindMapper, API: "1", Artifacts: []Artifact{
			{Runtime: RuntimeProcess, OS: "linux", Arch: "arm64", URL: "artifacts/" + sumA, Size: 3, SHA256: sumA}}},
		{Name: "modbus", Version: "1.9.0", Kind: KindMapper, API: "1", Artifacts: []Artifact{
			{Runtime: RuntimeWASM, URL: "artifacts/" + sumA, Size: 3, SHA256: sumA}},
			Capabilities: &manifest.Capabilities{Log: true, Send: manifest.Send{Resources: []string{"*"}}}},
	}}
}

func TestSemverParsesAndOrdersLikeSemverOrg(t *testing.T) {
	order := []string{"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
		"1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.2.0", "1.10.0", "2.0.0+build.5"}
	for i := 1; i < len(order); i++ {
		if c := CompareVersions(order[i-1], order[i]); c != -1 {
			t.Errorf("Compare(%s, %s) = %d, want -1", order[i-1], order[i], c)
		}
		if c := CompareVersions(order[i], order[i-1]); c != 1 {
			t.Errorf("Compare(%s, %s) = %d, want 1", order[i], order[i-1], c)
		}
	}
	if CompareVersions("1.0.0+a", "1.0.0+b") != 0 {
		t.Error("build metadata must not count in precedence")
	}
	bad := map[string]string{"v1.0.0": "not a number", "1.0": "MAJOR.MINOR.PATCH", "01.0.0": "leading zero",
		"1.0.0-01": "leading zero", "1.0.0-": "empty identifier", "1.0.0+x_y": "only [0-9A-Za-z-]", "": "MAJOR.MINOR.PATCH"}
	for in, want := range bad {
		if _, err := ParseSemver(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseSemver(%q) = %v, want %q", in, err, want)
		}
	}
}

func TestFindPicksTheHighestReleaseAndArtifactsByTarget(t *testing.T) {
	idx := sample(1)
	p, err := idx.Find("modbus", "")
	if err != nil || p.Version != "1.10.0" {
		t.Fatalf("latest = %v, %v; want 1.10.0 (semver, not string order)", p, err)
	}
	if _, err := idx.Find("modbus", "3.0.0"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing version: %v", err)
	}
	if _, err := p.Artifact(RuntimeProcess, "linux", "arm64"); err != nil {
		t.Error(err)
	}
	if _, err := p.Artifact(RuntimeProcess, "linux", "amd64"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "it has process/linux/arm64") {
		t.Errorf("other arch: %v", err)
	}
	if err := p.CheckAPI("1"); err != nil {
		t.Error(err)
	}
	if err := p.CheckAPI("2"); !errors.Is(err, ErrAPIVersion) || !strings.Contains(err.Error(), `needs module API "1", this host speaks "2"`) {
		t.Errorf("api: %v", err)
	}
}

func TestVerifyAcceptsAGoodIndexAndRefusesEachAttackWithItsOwnError(t *testing.T) {
	key, other := newKey(t), newKey(t)
	good, err := Sign(sample(5), key)
	if err != nil {
		t.Fatal(err)
	}
	signedBy := func(p []byte, k ...ed25519.PrivateKey) []byte {
		out, err := SignPayload(p, k...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	payload := func(x *Index) []byte { b, _ := x.Marshal(); return b }
	tampered := func() []byte {
		var env Envelope
		if err := json.Unmarshal(good, &env); err != nil {
			t.Fatal(err)
		}
		p, _ := base64.StdEncoding.DecodeString(env.Payload)
		env.Payload = base64.StdEncoding.EncodeToString(bytes.Replace(p, []byte(`"1.9.0"`), []byte(`"1.9.1"`), 1))
		b, _ := json.Marshal(env)
		return b
	}()
	sumGood := func() string {
		_, st, err := Verify(good, Policy{Trusted: []ed25519.PublicKey{pub(key)}, Now: t0})
		must(t, err)
		return st.PayloadSHA256
	}()
	resigned := sample(5)
	resigned.Plugins = resigned.Plugins[:1]

	tests := []struct {
		name    string
		data    []byte
		trusted []ed25519.PublicKey
		last    State
		now     time.Time
		want    error
		msg     string
	}{
		{name: "good index from a trusted key", data: good, trusted: []ed25519.PublicKey{pub(key)}, now: t0},
		{name: "good index, same version seen before with same content", data: good, trusted: []ed25519.PublicKey{pub(key)}, last: State{5, sumGood}, now: t0},
		{name: "good index among several trusted keys and signatures", data: signedBy(payload(sample(5)), other, key), trusted: []ed25519.PublicKey{pub(key)}, now: t0},
		{name: "signed by another key", data: signedBy(payload(sample(5)), other), trusted: []ed25519.PublicKey{pub(key)}, now: t0, want: ErrUntrustedKey, msg: "signed by key " + KeyID(pub(other))},
		{name: "no trusted key configured", data: good, now: t0, want: ErrUntrustedKey, msg: "no trusted key"},
		{name: "payload changed after signing", data: tampered, trusted: []ed25519.PublicKey{pub(key)}, now: t0, want: ErrBadSignature, msg: KeyID(pub(key))},
		{name: "older index version than already seen", data: good, trusted: []ed25519.PublicKey{pub(key)}, last: State{Version: 6}, now: t0, want: ErrRollback, msg: "version 5 is older than version 6"},
		{name: "same version re-signed with other content", data: signedBy(payload(resigned), key), trusted: []ed25519.PublicKey{pub(key)}, last: State{5, sumGood}, now: t0, want: ErrRollback, msg: "must have a higher version"},
		{name: "expired index", data: good, trusted: []ed25519.PublicKey{pub(key)}, now: t0.Add(time.Hour), want: ErrExpired, msg: "expired at 2026-01-02T04:04:05Z"},
		{name: "envelope is not JSON", data: []byte("{\n  \"payload\": x}"), trusted: []ed25519.PublicKey{pub(key)}, now: t0, want: ErrMalformed, msg: "envelope: line 2 column 14"},
		{name: "envelope with an unknown field", data: []byte(`{"payloadType":"x","extra":1}`), trusted: []ed25519.PublicKey{pub(key)}, now: t0, want: ErrMalformed, msg: `unknown field "extra"`},
		{name: "envelope payload not base64", data: []byte(`{"payloadType":"` + PayloadType + `","payload":"!!","signatures":[]}`), trusted: []ed25519.PublicKey{pub(key)}, now: t0, want: ErrMalformed, msg: "not standard base64"},
		{name: "envelope without signatures", data: []byte(`{"payloadType":"` + PayloadType + `","payload":"","signatures":[]}`), trusted: []ed25519.PublicKey{pub(key)}, now: t0, want: ErrMalformed, msg: "signatures: none"},
		{name: "signed payload that is not JSON", data: signedBy([]byte("{\"format\":1,\n\"version\":}"), key), trusted: []ed25519.PublicKey{pub(key)}, now: t0, want: ErrMalformed, msg: "payload: line 2 column 11"},
		{name: "signed payload with a wrong type", data: signedBy([]byte(`{"format":1,"version":"7"}`), key), trusted: []ed25519.PublicKey{pub(key)}, now: t0, want: ErrMalformed, msg: `field "version"`},
		{name: "signed payload with a bad sha256", data: signedBy(bytes.Replace(payload(sample(5)), []byte(`"sha256": "`+sumA), []byte(`"sha256": "abc`), 1), key), trusted: []ed25519.PublicKey{pub(key)}, now: t0, want: ErrMalformed, msg: `plugins[0]: artifacts[0]: sha256 "abc"`},
		{name: "signed payload with a bad version", data: signedBy(bytes.Replace(payload(sample(5)), []byte(`"1.9.0"`), []byte(`"1.9"`), 1), key), trusted: []ed25519.PublicKey{pub(key)}, now: t0, want: ErrMalformed, msg: `plugins[0]: version "1.9"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idx, st, err := Verify(tt.data, Policy{Trusted: tt.trusted, Last: tt.last, Now: tt.now})
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if idx.Version != 5 || st.Version != 5 || len(st.PayloadSHA256) != 64 {
					t.Fatalf("index %d, state %+v", idx.Version, st)
				}
				return
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want %v containing %q", err, tt.want, tt.msg)
			}
			for _, other := range []error{ErrMalformed, ErrUntrustedKey, ErrBadSignature, ErrRollback, ErrExpired} {
				if other != tt.want && errors.Is(err, other) {
					t.Errorf("err also matches %v", other)
				}
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestCheckArtifactRefusesAnythingButTheExactBytes(t *testing.T) {
	content := []byte("abc")
	a := Artifact{Runtime: RuntimeWASM, URL: "artifacts/x", Size: 3,
		SHA256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}
	tests := []struct {
		name, body, msg string
	}{
		{"exact bytes", string(content), ""},
		{"one byte changed", "abd", "has sha256"},
		{"truncated", "ab", "is 2 bytes, the index says 3"},
		{"longer", "abcd", "larger than the 3 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := CheckArtifact(a, strings.NewReader(tt.body))
			if tt.msg == "" {
				must(t, err)
				return
			}
			if !errors.Is(err, ErrArtifactMismatch) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want %q", err, tt.msg)
			}
		})
	}
}

func TestIndexValidateNamesTheField(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Index)
		msg  string
	}{
		{"other format", func(x *Index) { x.Format = 2 }, "format is 2"},
		{"version zero", func(x *Index) { x.Version = 0 }, "version is 0"},
		{"expiry before issue", func(x *Index) { x.Expires = x.IssuedAt }, "is not after issuedAt"},
		{"bad name", func(x *Index) { x.Plugins[0].Name = "Mod_bus" }, `plugins[0]: name "Mod_bus"`},
		{"bad kind", func(x *Index) { x.Plugins[0].Kind = "driver" }, `kind "driver"`},
		{"no api", func(x *Index) { x.Plugins[0].API = "" }, "api is missing"},
		{"no artifacts", func(x *Index) { x.Plugins[0].Artifacts = nil }, "artifacts: none"},
		{"process without os", func(x *Index) { x.Plugins[0].Artifacts[0].OS = "" }, "names its GOOS and GOARCH"},
		{"wasm with arch", func(x *Index) { x.Plugins[1].Artifacts[0].Arch = "arm64" }, "plugins[1]: artifacts[0]: os/arch"},
		{"wasm without capabilities", func(x *Index) { x.Plugins[1].Capabilities = nil }, "capabilities: missing"},
		{"negative size", func(x *Index) { x.Plugins[0].Artifacts[0].Size = -1 }, "size -1"},
		{"duplicate target", func(x *Index) {
			x.Plugins[0].Artifacts = append(x.Plugins[0].Artifacts, x.Plugins[0].Artifacts[0])
		}, "a second artifact for process/linux/arm64"},
		{"duplicate version", func(x *Index) { x.Plugins[1] = x.Plugins[0] }, "modbus@1.10.0 listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := sample(1)
			tt.edit(x)
			err := x.Validate()
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want %q", err, tt.msg)
			}
		})
	}
}

func TestStateFilePersistsAndNeverLowersTheVersion(t *testing.T) {
	f := &StateFile{Path: filepath.Join(t.TempDir(), "sub", "index.state")}
	st, err := f.Load()
	if err != nil || st != (State{}) {
		t.Fatalf("missing file: %+v, %v", st, err)
	}
	must(t, f.Save(State{Version: 4, PayloadSHA256: sumA}))
	st, err = (&StateFile{Path: f.Path}).Load()
	if err != nil || st.Version != 4 || st.PayloadSHA256 != sumA {
		t.Fatalf("reloaded: %+v, %v", st, err)
	}
	if err := f.Save(State{Version: 3}); !errors.Is(err, ErrRollback) {
		t.Fatalf("lowering: %v", err)
	}
	must(t, os.WriteFile(f.Path, []byte("{"), 0o644))
	if _, err := f.Load(); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("corrupt state: %v", err)
	}
}

func TestKeyPairRoundTripsAndThePrivateKeyIsPrivate(t *testing.T) {
	dir := t.TempDir()
	pk, err := WriteKeyPair(dir)
	must(t, err)
	fi, err := os.Stat(filepath.Join(dir, PrivateKeyFile))
	must(t, err)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %s", fi.Mode().Perm())
	}
	priv, err := ReadPrivateKey(filepath.Join(dir, PrivateKeyFile))
	must(t, err)
	pub2, err := ReadPublicKey(filepath.Join(dir, PublicKeyFile))
	must(t, err)
	if !pub2.Equal(pk) || !pub(priv).Equal(pk) {
		t.Fatal("keys do not round-trip")
	}
	if _, err := WriteKeyPair(dir); err == nil || !strings.Contains(err.Error(), "not overwriting") {
		t.Errorf("second keygen: %v", err)
	}
	must(t, os.Chmod(filepath.Join(dir, PrivateKeyFile), 0o644))
	if _, err := ReadPrivateKey(filepath.Join(dir, PrivateKeyFile)); err == nil || !strings.Contains(err.Error(), "others can read it") {
		t.Errorf("readable key: %v", err)
	}
	if _, err := ReadPublicKey(filepath.Join(dir, PrivateKeyFile)); err == nil || !strings.Contains(err.Error(), `expected "PUBLIC KEY"`) {
		t.Errorf("wrong PEM: %v", err)
	}
}
