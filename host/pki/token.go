package pki

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// DefaultTokenTTL is how long a join token is valid unless told otherwise (KubeEdge's 24 h).
const DefaultTokenTTL = 24 * time.Hour

// Why a join token was refused. VerifyJWT wraps one of these with the details.
var (
	ErrTokenMalformed   = errors.New("join token is malformed")
	ErrTokenAlgorithm   = errors.New("join token uses a signing algorithm other than HS256")
	ErrTokenSignature   = errors.New("join token signature does not verify")
	ErrTokenExpired     = errors.New("join token has expired")
	ErrTokenNotYetValid = errors.New("join token is not valid yet")
)

// tokenLeeway absorbs small clock differences between cloudcore replicas.
const tokenLeeway = 30 * time.Second

const maxTokenLen = 4096

// Token is a join token, "<CA hash>.<JWT>": the hash lets the edge check the CA it is given
// before trusting it; the JWT (HS256, with an expiry) lets the cloud check the edge.
type Token struct {
	CAHash string // hex SHA-256 of the CA certificate's DER bytes
	JWT    string // header.claims.signature
}

// String returns the token as handed to edgecore join.
func (t Token) String() string { return t.CAHash + "." + t.JWT }

// ParseToken splits a join token and checks its shape. It cannot check the JWT's signature (only
// the cloud holds the key); the certificate server does that. Errors never repeat the token.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Token{}, fmt.Errorf("%w: it is empty", ErrTokenMalformed)
	}
	if len(s) > maxTokenLen {
		return Token{}, fmt.Errorf("%w: it is %d characters long; a join token has at most %d", ErrTokenMalformed, len(s), maxTokenLen)
	}
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return Token{}, fmt.Errorf("%w: it has %d dot-separated parts; want 4 (<CA hash>.<JWT header>.<JWT claims>.<JWT signature>, as printed by 'cloudcore token create')", ErrTokenMalformed, len(parts))
	}
	hash := strings.ToLower(parts[0])
	if len(hash) != 64 || strings.Trim(hash, "0123456789abcdef") != "" {
		return Token{}, fmt.Errorf("%w: its first part must be the CA certificate's SHA-256 as 64 hex digits", ErrTokenMalformed)
	}
	for i, p := range parts[1:] {
		if p == "" || strings.Trim(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			return Token{}, fmt.Errorf("%w: JWT %s is empty or not base64url", ErrTokenMalformed, [...]string{"header", "claims", "signature"}[i])
		}
	}
	return Token{CAHash: hash, JWT: strings.Join(parts[1:], ".")}, nil
}

// VerifyJWT checks the JWT part of a join token: HS256 with this CA's token secret, with an
// expiry that has not passed and no not-before in the future. The error wraps one of the
// ErrToken* values.
func (ca *CA) VerifyJWT(token string) error {
	_, err := ca.verifyJWT(token)
	return err
}

// verifyJWT is VerifyJWT returning the claims.
func (ca *CA) verifyJWT(token string) (jwt.RegisteredClaims, error) {
	var (
		claims jwt.RegisteredClaims
		badAlg string
	)
	_, err := jwt.ParseWithClaims(token, &claims, func(t *jwt.Token) (any, error) {
		// Check the algorithm by name: alg=none and public-key algorithms must never reach a
		// verifier, and HS384/HS512 are not what cloudcore issues.
		if alg := t.Method.Alg(); alg != jwt.SigningMethodHS256.Alg() {
			badAlg = alg
			return nil, ErrTokenAlgorithm
		}
		return ca.secret, nil
	},
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(tokenLeeway),
		jwt.WithTimeFunc(ca.clock.Now),
	)
	switch {
	case err == nil:
		return claims, nil
	case badAlg != "":
		return claims, fmt.Errorf("%w (got %q)", ErrTokenAlgorithm, badAlg)
	case errors.Is(err, jwt.ErrTokenMalformed):
		return claims, fmt.Errorf("%w: %v", ErrTokenMalformed, err)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// An unknown "alg" ends here.
		return claims, fmt.Errorf("%w: %v", ErrTokenAlgorithm, err)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return claims, fmt.Errorf("%w: it was not created by this cloudcore's CA, or it was altered; create one with 'cloudcore token create'", ErrTokenSignature)
	case errors.Is(err, jwt.ErrTokenExpired):
		return claims, fmt.Errorf("%w (at %s); create a new one with 'cloudcore token create'", ErrTokenExpired, claims.ExpiresAt.UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return claims, fmt.Errorf("%w (not before %s); check that the cloud's clocks agree", ErrTokenNotYetValid, claims.NotBefore.UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return claims, fmt.Errorf("%w: it has no expiry (exp)", ErrTokenMalformed)
	default:
		return claims, fmt.Errorf("%w: %v", ErrTokenMalformed, err)
	}
}
