package pki

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"
)

// DefaultServerCertValidity is the lifetime of cloudcore's serving certificate.
const DefaultServerCertValidity = 365 * 24 * time.Hour

// ServerCertOptions says which names cloudcore's serving certificate covers.
type ServerCertOptions struct {
	IPs      []net.IP // 127.0.0.1 is always added
	DNSNames []string // localhost is always added
	Validity time.Duration
	Logger   *slog.Logger
}

// ServerCert is cloudcore's serving certificate for the hub (:10000) and the certificate server
// (:10002), issued by the CA and kept in the same Storage. It is reissued when the configured names
// change, when the CA changes, and once two thirds of its lifetime have passed.
type ServerCert struct {
	ca       *CA
	st       Storage
	ips      []net.IP
	dnsNames []string
	validity time.Duration
	log      *slog.Logger

	mu  sync.Mutex
	cur *tls.Certificate // Leaf set
}

// NewServerCert loads the serving certificate from st, or issues one when it is missing, damaged
// (it is derived material, so it is replaced, not repaired), stale or for other names.
func NewServerCert(ctx context.Context, ca *CA, st Storage, opts ServerCertOptions) (*ServerCert, error) {
	s := &ServerCert{ca: ca, st: st, validity: opts.Validity, log: opts.Logger}
	if s.validity <= 0 {
		s.validity = DefaultServerCertValidity
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.ips, s.dnsNames = normalizeSANs(opts.IPs, opts.DNSNames)
	cur, why := s.load(ctx)
	if why == "" {
		s.cur = cur
		return s, nil
	}
	if err := s.reissue(ctx, why); err != nil {
		return nil, err
	}
	return s, nil
}

// load returns the stored certificate, or why a new one is needed.
func (s *ServerCert) load(ctx context.Context) (*tls.Certificate, string) {
	certPEM, err := s.st.Read(ctx, ServerCertName)
	if isNotExist(err) {
		return nil, "none stored yet"
	}
	if err != nil {
		return nil, fmt.Sprintf("reading it failed: %v", err)
	}
	keyPEM, err := s.st.Read(ctx, ServerKeyName)
	if err != nil {
		return nil, fmt.Sprintf("reading its key failed: %v", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Sprintf("the stored pair is damaged: %v", err)
	}
	if err := pair.Leaf.CheckSignatureFrom(s.ca.cert); err != nil {
		return nil, "it was issued by another CA"
	}
	ips, dnsNames := normalizeSANs(pair.Leaf.IPAddresses, pair.Leaf.DNSNames)
	if !slices.EqualFunc(ips, s.ips, net.IP.Equal) || !slices.Equal(dnsNames, s.dnsNames) {
		return nil, fmt.Sprintf("its names changed (was IPs %v, DNS %v)", ips, dnsNames)
	}
	if s.due(pair.Leaf) {
		return nil, "it is past two thirds of its lifetime"
	}
	return &pair, ""
}

func (s *ServerCert) due(leaf *x509.Certificate) bool {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return !s.ca.clock.Now().Before(leaf.NotBefore.Add(life * 2 / 3))
}

func (s *ServerCert) reissue(ctx context.Context, why string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate server key: %w", err)
	}
	leaf, err := s.ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kedge-cloudcore", Organization: []string{"Kedge"}},
		IPAddresses: s.ips,
		DNSNames:    s.dnsNames,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, key.Public(), s.validity)
	if err != nil {
		return err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return err
	}
	s.cur = &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	s.log.Info("issued server certificate", "reason", why, "ips", s.ips, "dnsNames", s.dnsNames,
		"notAfter", leaf.NotAfter.UTC().Format(time.RFC3339))
	// Keep serving the new certificate even if storing it fails: storing only saves a reissue on restart.
	if err := s.st.Write(ctx, Item{ServerKeyName, keyPEM}, Item{ServerCertName, encodeCert(leaf.Raw)}); err != nil {
		s.log.Warn("could not store the server certificate; a new one will be issued on restart", "where", s.st.String(), "err", err)
	}
	return nil
}

// Certificate returns the current serving certificate, reissuing it first when it is due.
func (s *ServerCert) Certificate(ctx context.Context) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.due(s.cur.Leaf) {
		if err := s.reissue(ctx, "it is past two thirds of its lifetime"); err != nil {
			if s.ca.clock.Now().Before(s.cur.Leaf.NotAfter) {
				s.log.Error("could not reissue the server certificate; serving the current one", "err", err)
				return s.cur, nil
			}
			return nil, err
		}
	}
	return s.cur, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (s *ServerCert) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.Certificate(hello.Context())
}

// ServerTLSConfig is the hub's (:10000) TLS config: only clients with a valid client certificate
// from ca get through the handshake (KubeEdge's mTLS); TLS 1.2 at least, 1.3 when the client has it.
// The hub then takes the node's identity from the peer certificate (NodeNameFromCert) and refuses
// certificates that name no node, where it can log and count the refusal.
func ServerTLSConfig(ca *CA, cert *ServerCert) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: cert.GetCertificate,
		ClientAuth:     tls.RequireAndVerifyClientCert,
		ClientCAs:      ca.pool,
		Time:           ca.clock.Now,
	}
}

// CertServerTLSConfig is the certificate server's (:10002) TLS config: it asks for a client
// certificate without requiring or verifying one, because a first join has only a token; a
// renewal's certificate is verified by the CertServer handler, which can then say what is wrong.
func CertServerTLSConfig(cert *ServerCert) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: cert.GetCertificate,
		ClientAuth:     tls.RequestClientCert,
	}
}

// normalizeSANs adds the loopback defaults, drops duplicates and sorts, so two sets compare equal.
func normalizeSANs(ips []net.IP, dnsNames []string) ([]net.IP, []string) {
	outIPs := []net.IP{net.IPv4(127, 0, 0, 1).To4()}
	for _, ip := range ips {
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		if !slices.ContainsFunc(outIPs, ip.Equal) {
			outIPs = append(outIPs, ip)
		}
	}
	slices.SortFunc(outIPs, func(a, b net.IP) int { return bytes.Compare(a, b) })
	outDNS := append([]string{"localhost"}, dnsNames...)
	slices.Sort(outDNS)
	return outIPs, slices.Compact(outDNS)
}
