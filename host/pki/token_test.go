package pki

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestParseToken(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	tests := []struct {
		name, in string
		want     Token
		err      string
	}{
		{"valid", hash + ".aaa.bbb.ccc", Token{hash, "aaa.bbb.ccc"}, ""},
		{"surrounding space and upper-case hash", "  " + strings.ToUpper(hash) + ".a-_.b.c\n", Token{hash, "a-_.b.c"}, ""},
		{"empty", "", Token{}, "empty"},
		{"jwt only", "aaa.bbb.ccc", Token{}, "3 dot-separated parts"},
		{"five parts", hash + ".a.b.c.d", Token{}, "5 dot-separated parts"},
		{"short hash", "abc.a.b.c", Token{}, "64 hex digits"},
		{"hash not hex", strings.Repeat("zz", 32) + ".a.b.c", Token{}, "64 hex digits"},
		{"empty signature", hash + ".a.b.", Token{}, "signature is empty or not base64url"},
		{"padding in claims", hash + ".a.b=.c", Token{}, "claims is empty or not base64url"},
		{"too long", hash + ".a.b." + strings.Repeat("c", maxTokenLen), Token{}, "characters long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseToken(tt.in)
			if tt.err != "" {
				if !errors.Is(err, ErrTokenMalformed) || !errorContains(err, tt.err) {
					t.Fatalf("err = %v; want ErrTokenMalformed mentioning %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseToken = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestParseTokenErrorsDoNotRepeatTheToken(t *testing.T) {
	secretish := "c2VjcmV0c2VjcmV0c2VjcmV0"
	_, err := ParseToken("abc." + secretish + ".x.y")
	if err == nil || strings.Contains(err.Error(), secretish) {
		t.Fatalf("err = %v; want an error that does not quote the token", err)
	}
}

func TestCreateTokenRoundTrips(t *testing.T) {
	ca, _, err := LoadOrCreateCA(context.Background(), FileStorage{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := testToken(t, ca, DefaultTokenTTL)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseToken(tok.String())
	if err != nil {
		t.Fatal(err)
	}
	if parsed.CAHash != ca.Hash() || parsed.CAHash != HashCert(ca.Certificate().Raw) {
		t.Errorf("token hash %s; want the CA's %s", parsed.CAHash, ca.Hash())
	}
	if err := ca.VerifyJWT(parsed.JWT); err != nil {
		t.Errorf("fresh token refused: %v", err)
	}
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(parsed.JWT, &claims); err != nil {
		t.Fatal(err)
	}
	if got := claims.ExpiresAt.Sub(claims.IssuedAt.Time); got != DefaultTokenTTL {
		t.Errorf("token lifetime %s; want %s", got, DefaultTokenTTL)
	}
	if _, _, err := CreateToken(context.Background(), ca, FileRecords{Dir: t.TempDir()}, TokenOptions{TTL: -time.Second}); err == nil {
		t.Error("CreateToken with a negative TTL succeeded; want an error")
	}
	if claims.ID == "" {
		t.Error("the JWT carries no token ID (jti)")
	}
}

func TestVerifyJWTRefusesBadTokens(t *testing.T) {
	ctx := context.Background()
	ca, _, err := LoadOrCreateCA(ctx, FileStorage{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := LoadOrCreateCA(ctx, FileStorage{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	at := func(c *CA, when time.Time, ttl time.Duration) string {
		tok, err := testToken(t, c.WithClock(newFakeClock(when)), ttl)
		if err != nil {
			t.Fatal(err)
		}
		return tok.JWT
	}
	claims := jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}
	sign := func(m jwt.SigningMethod, claims jwt.Claims, key any) string {
		s, err := jwt.NewWithClaims(m, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	// Same header and signature, claims edited to live longer.
	good := at(ca, now, time.Hour)
	parts := strings.Split(good, ".")
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"exp":4102444800}`))
	tampered := strings.Join(parts, ".")

	tests := []struct {
		name, jwt string
		want      error
		msg       string
	}{
		{"expired", at(ca, now.Add(-2*time.Hour), time.Hour), ErrTokenExpired, "cloudcore token create"},
		{"not valid yet", at(ca, now.Add(time.Hour), 2*time.Hour), ErrTokenNotYetValid, "not before"},
		{"signed by another CA's secret", at(other, now, time.Hour), ErrTokenSignature, "not created by this cloudcore"},
		{"claims tampered with", tampered, ErrTokenSignature, ""},
		{"alg none", sign(jwt.SigningMethodNone, claims, jwt.UnsafeAllowNoneSignatureType), ErrTokenAlgorithm, `"none"`},
		{"alg RS256", sign(jwt.SigningMethodRS256, claims, rsaKey), ErrTokenAlgorithm, `"RS256"`},
		{"alg HS512 with the right secret", sign(jwt.SigningMethodHS512, claims, ca.secret), ErrTokenAlgorithm, `"HS512"`},
		{"unknown alg", base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"XX1","typ":"JWT"}`)) + "." + parts[1] + ".c2ln", ErrTokenAlgorithm, ""},
		{"no expiry", sign(jwt.SigningMethodHS256, jwt.RegisteredClaims{}, ca.secret), ErrTokenMalformed, "no expiry"},
		{"not a JWT", "a.b.c", ErrTokenMalformed, ""},
		{"empty", "", ErrTokenMalformed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ca.VerifyJWT(tt.jwt)
			if !errors.Is(err, tt.want) || !errorContains(err, tt.msg) {
				t.Fatalf("err = %v; want %v mentioning %q", err, tt.want, tt.msg)
			}
		})
	}
	if err := ca.VerifyJWT(good); err != nil {
		t.Errorf("the untouched token was refused: %v", err)
	}
}

func FuzzParseToken(f *testing.F) {
	hash := strings.Repeat("0f", 32)
	for _, seed := range []string{
		hash + ".eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.c2ln",
		hash + "...",
		"....",
		"a.b.c.d",
		strings.ToUpper(hash) + ".a.b.c",
		" " + hash + ".a.b.c\n",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, ErrTokenMalformed) {
				t.Fatalf("error %v does not wrap ErrTokenMalformed", err)
			}
			return
		}
		if len(tok.CAHash) != 64 || strings.Count(tok.JWT, ".") != 2 {
			t.Fatalf("accepted token has hash %q and JWT %q", tok.CAHash, tok.JWT)
		}
		again, err := ParseToken(tok.String())
		if err != nil || again != tok {
			t.Fatalf("re-parsing %q gave %+v, %v", tok.String(), again, err)
		}
	})
}
