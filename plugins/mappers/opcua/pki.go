package opcua

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// appURI is the client's application URI; OPC-UA wants it in the certificate's subjectAltName.
const appURI = "urn:kedge:mapper:opcua"

// clientIdentity loads the client certificate and key from the configured files, generating both
// there on first start when they do not exist yet (the key 0600), or in memory when no path is set.
func clientIdentity(cfg ProtocolConfig) (cert []byte, key *rsa.PrivateKey, err error) {
	if cfg.Certificate != "" {
		_, errC := os.Stat(cfg.Certificate)
		_, errK := os.Stat(cfg.PrivateKey)
		switch {
		case errC == nil && errK == nil:
			return loadIdentity(cfg.Certificate, cfg.PrivateKey)
		case errors.Is(errC, os.ErrNotExist) && errors.Is(errK, os.ErrNotExist):
		default:
			return nil, nil, fmt.Errorf("client certificate %s / key %s: one exists without the other (%v, %v)", cfg.Certificate, cfg.PrivateKey, errC, errK)
		}
	}
	certDER, k, err := generateIdentity()
	if err != nil {
		return nil, nil, err
	}
	if cfg.Certificate != "" {
		for _, f := range []struct {
			path  string
			block *pem.Block
			mode  os.FileMode
		}{
			{cfg.PrivateKey, &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}, 0o600},
			{cfg.Certificate, &pem.Block{Type: "CERTIFICATE", Bytes: certDER}, 0o644},
		} {
			if err := os.MkdirAll(filepath.Dir(f.path), 0o700); err != nil {
				return nil, nil, fmt.Errorf("storing the generated client identity: %w", err)
			}
			if err := os.WriteFile(f.path, pem.EncodeToMemory(f.block), f.mode); err != nil {
				return nil, nil, fmt.Errorf("storing the generated client identity: %w", err)
			}
		}
	}
	return certDER, k, nil
}

func loadIdentity(certFile, keyFile string) ([]byte, *rsa.PrivateKey, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("client certificate %s with key %s: %w", certFile, keyFile, err)
	}
	k, ok := pair.PrivateKey.(*rsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("client key %s is not an RSA key (OPC-UA's Basic256Sha256 needs RSA)", keyFile)
	}
	return pair.Certificate[0], k, nil
}

func generateIdentity() ([]byte, *rsa.PrivateKey, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	uri, _ := url.Parse(appURI)
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "kedge opcua mapper", Organization: []string{"kedge"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(5, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{uri},
		DNSNames:              []string{host},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return nil, nil, err
	}
	return der, k, nil
}
