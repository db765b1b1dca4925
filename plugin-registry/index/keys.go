package index

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Key file names written by WriteKeyPair.
const (
	PrivateKeyFile = "registry.key" // PKCS#8 PEM, mode 0600
	PublicKeyFile  = "registry.pub" // PKIX PEM
)

// WriteKeyPair generates an ed25519 key pair into dir (PrivateKeyFile mode 0600, PublicKeyFile
// 0644). It refuses to overwrite an existing private key.
func WriteKeyPair(dir string) (ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	privPath := filepath.Join(dir, PrivateKeyFile)
	f, err := os.OpenFile(privPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("%s exists: not overwriting a signing key (move it away first)", privPath)
	}
	if err != nil {
		return nil, err
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	pder, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	if err := WriteFileAtomic(filepath.Join(dir, PublicKeyFile), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pder}), 0o644); err != nil {
		return nil, err
	}
	return pub, nil
}

// ReadPrivateKey reads a PKCS#8 PEM ed25519 private key. It refuses a file others can read.
func ReadPrivateKey(path string) (ed25519.PrivateKey, error) {
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("private key %s has mode %s: others can read it (chmod 600 %s)", path, fi.Mode().Perm(), path)
	}
	block, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(block)
	if err != nil {
		return nil, fmt.Errorf("private key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key %s is a %T, not ed25519", path, k)
	}
	return priv, nil
}

// ReadPublicKey reads a PKIX PEM ed25519 public key.
func ReadPublicKey(path string) (ed25519.PublicKey, error) {
	block, err := readPEM(path, "PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	return ParsePublicKey(block, path)
}

// ParsePublicKey parses a PKIX DER ed25519 public key; name says where it came from.
func ParsePublicKey(der []byte, name string) (ed25519.PublicKey, error) {
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", name, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key %s is a %T, not ed25519", name, k)
	}
	return pub, nil
}

func readPEM(path, typ string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block (expected %q)", path, typ)
	}
	if block.Type != typ {
		return nil, fmt.Errorf("%s: PEM block is %q, expected %q", path, block.Type, typ)
	}
	return block.Bytes, nil
}
