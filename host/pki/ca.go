package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"strings"
	"time"
)

const (
	caValidity = 10 * 365 * 24 * time.Hour
	// backdate covers clock skew between the cloud and a node that is a few minutes behind.
	backdate        = 5 * time.Minute
	tokenSecretSize = 32
)

// CA signs node and server certificates and join tokens. It is safe for concurrent use.
type CA struct {
	cert   *x509.Certificate
	key    crypto.Signer
	secret []byte // HMAC key of join tokens
	pool   *x509.CertPool
	clock  Clock
}

// LoadOrCreateCA loads the CA from st, or creates one (a self-signed ECDSA P-256 CA valid for 10
// years, plus a random token secret) when st holds none; created says which. A damaged or
// incomplete CA is an error that says how to recover; it is never silently replaced, since
// replacing it would lock out every joined node.
func LoadOrCreateCA(ctx context.Context, st Storage) (ca *CA, created bool, err error) {
	certPEM, err := st.Read(ctx, CACertName)
	switch {
	case isNotExist(err):
		if _, kerr := st.Read(ctx, CAKeyName); kerr == nil {
			// Another cloudcore sharing st may have stored its whole CA between our two reads.
			if certPEM, rerr := st.Read(ctx, CACertName); rerr == nil {
				ca, err := loadCA(ctx, st, certPEM)
				return ca, false, err
			}
			return nil, false, fmt.Errorf("%s in %s exists but %s does not: if creating the CA was interrupted, remove %s and start again; if %s was lost, copy it back from an edge node (certs/ca.crt)",
				CAKeyName, st, CACertName, CAKeyName, CACertName)
		}
		ca, err := createCA(ctx, st)
		if errors.Is(err, fs.ErrExist) {
			// Another cloudcore sharing st stored its CA first (a Storage that refuses to replace a
			// CA says so with fs.ErrExist): use that one.
			certPEM, rerr := st.Read(ctx, CACertName)
			if rerr != nil {
				return nil, false, fmt.Errorf("read the CA another cloudcore stored in %s: %w", st, rerr)
			}
			ca, err = loadCA(ctx, st, certPEM)
			return ca, false, err
		}
		return ca, err == nil, err
	case err != nil:
		return nil, false, fmt.Errorf("read %s from %s: %w", CACertName, st, err)
	}
	ca, err = loadCA(ctx, st, certPEM)
	return ca, false, err
}

// LoadCA loads the CA from st and never creates one: for the modules that use the CA cloudhub made
// (creating a second one there would leave every node certificate untrusted).
func LoadCA(ctx context.Context, st Storage) (*CA, error) {
	certPEM, err := st.Read(ctx, CACertName)
	if isNotExist(err) {
		return nil, fmt.Errorf("no CA in %s (%s is missing): cloudhub creates it on its first start; use the same storage as cloudhub's (pkiDir, or caSecret when cloudhub keeps the CA in a Secret)", st, CACertName)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s from %s: %w", CACertName, st, err)
	}
	return loadCA(ctx, st, certPEM)
}

func createCA(ctx context.Context, st Storage) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "kedge-ca", Organization: []string{"Kedge"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	secret := make([]byte, tokenSecretSize)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("generate token secret: %w", err)
	}
	// ca.crt last: its presence marks a complete CA.
	if err := st.Write(ctx,
		Item{CAKeyName, keyPEM},
		Item{TokenSecretName, encodeSecret(secret)},
		Item{CACertName, encodeCert(der)},
	); err != nil {
		return nil, fmt.Errorf("store the new CA in %s: %w", st, err)
	}
	cert, _ := x509.ParseCertificate(der)
	return newCA(cert, key, secret), nil
}

func loadCA(ctx context.Context, st Storage, certPEM []byte) (*CA, error) {
	damaged := func(name string, err error) error {
		return fmt.Errorf("%s in %s is damaged: %w (restore it from a backup; removing %s creates a new CA, after which every edge node must join again)", name, st, err, st)
	}
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, damaged(CACertName, err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, damaged(CACertName, errors.New("the certificate is not a CA certificate"))
	}
	if now := time.Now(); now.After(cert.NotAfter) {
		return nil, fmt.Errorf("%s in %s expired at %s; create a new CA (remove %s) and join every edge node again", CACertName, st, cert.NotAfter.Format(time.RFC3339), st)
	}
	keyPEM, err := st.Read(ctx, CAKeyName)
	if err != nil {
		return nil, fmt.Errorf("read %s from %s: %w (the CA cannot sign without its key; restore it from a backup)", CAKeyName, st, err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, damaged(CAKeyName, err)
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, damaged(CAKeyName, fmt.Errorf("the key does not belong to %s", CACertName))
	}
	secretText, err := st.Read(ctx, TokenSecretName)
	var secret []byte
	switch {
	case isNotExist(err):
		// A CA brought over from elsewhere (say KubeEdge's rootCA.crt/.key) has no token secret yet.
		secret = make([]byte, tokenSecretSize)
		if _, err := rand.Read(secret); err != nil {
			return nil, fmt.Errorf("generate token secret: %w", err)
		}
		if err := st.Write(ctx, Item{TokenSecretName, encodeSecret(secret)}); errors.Is(err, fs.ErrExist) {
			// Another cloudcore sharing st stored one first: use it.
			if secretText, err = st.Read(ctx, TokenSecretName); err != nil {
				return nil, fmt.Errorf("read %s from %s: %w", TokenSecretName, st, err)
			}
			if secret, err = decodeSecret(secretText); err != nil {
				return nil, fmt.Errorf("%s in %s is damaged: %w (remove it to create a new one; join tokens already handed out stop working)", TokenSecretName, st, err)
			}
		} else if err != nil {
			return nil, fmt.Errorf("store the new token secret in %s: %w", st, err)
		}
	case err != nil:
		return nil, fmt.Errorf("read %s from %s: %w", TokenSecretName, st, err)
	default:
		if secret, err = decodeSecret(secretText); err != nil {
			return nil, fmt.Errorf("%s in %s is damaged: %w (remove it to create a new one; join tokens already handed out stop working)", TokenSecretName, st, err)
		}
	}
	return newCA(cert, key, secret), nil
}

func newCA(cert *x509.Certificate, key crypto.Signer, secret []byte) *CA {
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{cert: cert, key: key, secret: secret, pool: pool, clock: SystemClock}
}

// WithClock returns a CA that reads the time from c; for tests.
func (ca *CA) WithClock(c Clock) *CA {
	cp := *ca
	cp.clock = orSystem(c)
	return &cp
}

// Certificate returns the CA certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM returns the CA certificate, PEM-encoded.
func (ca *CA) CertPEM() []byte { return encodeCert(ca.cert.Raw) }

// Pool returns a pool holding only the CA certificate.
func (ca *CA) Pool() *x509.CertPool { return ca.pool }

// Hash is the hex SHA-256 of the CA certificate's DER bytes: the first part of a join token.
func (ca *CA) Hash() string { return HashCert(ca.cert.Raw) }

// HashCert returns the hex SHA-256 of a DER certificate.
func HashCert(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// IssueNodeCert signs a client certificate for a node: CN=system:node:<node>, O=system:nodes,
// client-auth usage, valid for validity (capped at the CA's own expiry).
func (ca *CA) IssueNodeCert(pub crypto.PublicKey, node string, validity time.Duration) (*x509.Certificate, error) {
	if err := CheckNodeName(node); err != nil {
		return nil, err
	}
	if err := checkPublicKey(pub); err != nil {
		return nil, err
	}
	usage := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		usage |= x509.KeyUsageKeyEncipherment // RSA key exchange in TLS 1.2
	}
	return ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: NodeCNPrefix + node, Organization: []string{NodesOrg}},
		KeyUsage:    usage,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, pub, validity)
}

// VerifyNodeCert checks that cert was issued by this CA for client auth and is valid now, and
// returns the node it names.
func (ca *CA) VerifyNodeCert(cert *x509.Certificate) (string, error) {
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:       ca.pool,
		CurrentTime: ca.clock.Now(),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return "", err
	}
	return NodeNameFromCert(cert)
}

func (ca *CA) issue(tmpl *x509.Certificate, pub crypto.PublicKey, validity time.Duration) (*x509.Certificate, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("certificate validity %s must be positive", validity)
	}
	now := ca.clock.Now()
	tmpl.SerialNumber = randomSerial()
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = now.Add(validity)
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %q: %w", tmpl.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

// checkPublicKey accepts the key types and sizes a node may ask to have certified.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("ECDSA curve %s is not accepted (use P-256)", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits is too short (at least 2048)", k.N.BitLen())
		}
		return nil
	default:
		return fmt.Errorf("public key type %T is not accepted (use ECDSA P-256)", pub)
	}
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return n.Add(n, big.NewInt(1)) // serials must be positive
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// encodeKey writes ECDSA keys as SEC 1 ("EC PRIVATE KEY"), the form KubeEdge writes, and other
// keys as PKCS #8.
func encodeKey(key crypto.Signer) ([]byte, error) {
	if ec, ok := key.(*ecdsa.PrivateKey); ok {
		der, err := x509.MarshalECPrivateKey(ec)
		if err != nil {
			return nil, fmt.Errorf("encode key: %w", err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func parseCertPEM(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block found")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return cert, nil
}

func parseKeyPEM(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", strings.ToLower(block.Type), err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key type %T cannot sign", key)
	}
	return signer, nil
}

func encodeSecret(secret []byte) []byte {
	return []byte(hex.EncodeToString(secret) + "\n")
}

func decodeSecret(text []byte) ([]byte, error) {
	secret, err := hex.DecodeString(string(bytes.TrimSpace(text)))
	if err != nil {
		return nil, fmt.Errorf("not hex: %w", err)
	}
	if len(secret) < tokenSecretSize {
		return nil, fmt.Errorf("%d bytes long; at least %d are needed", len(secret), tokenSecretSize)
	}
	return secret, nil
}
