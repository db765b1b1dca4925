package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"
)

// handshake dials a ServerTLSConfig listener with clientCerts and returns the node name the server
// took from the certificate, or the handshake error as either side saw it.
func handshake(t *testing.T, ca *CA, server *ServerCert, clientCerts []tls.Certificate) (string, error) {
	t.Helper()
	peer, err := handshakeWith(t, ca, server, &tls.Config{RootCAs: ca.Pool(), Certificates: clientCerts})
	if err != nil {
		return "", err
	}
	return NodeNameFromCert(peer)
}

// handshakeWith dials a ServerTLSConfig listener with client and returns the client certificate
// the server saw, or the handshake error as either side saw it.
func handshakeWith(t *testing.T, ca *CA, server *ServerCert, client *tls.Config) (*x509.Certificate, error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ServerTLSConfig(ca, server))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		peer *x509.Certificate
		err  error
	}
	got := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer conn.Close()
		tc := conn.(*tls.Conn)
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			got <- result{err: err}
			return
		}
		got <- result{peer: tc.ConnectionState().PeerCertificates[0]}
	}()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), client)
	if err == nil {
		// TLS 1.3 clients finish before the server has checked their certificate: read to learn.
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = conn.Read(make([]byte, 1))
		conn.Close()
	}
	r := <-got
	return r.peer, r.err
}

func TestServerTLSConfigAcceptsOnlyNodeCertificatesFromItsCA(t *testing.T) {
	c := newCloud(t, CertServerOptions{})
	other := newCloud(t, CertServerOptions{})
	serverAsClient, err := c.server.Certificate(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		certs []tls.Certificate
		node  string // empty: refused
	}{
		{"node certificate from the CA", []tls.Certificate{nodePair(t, c.ca, "edge-1", time.Hour)}, "edge-1"},
		{"node certificate from another CA", []tls.Certificate{nodePair(t, other.ca, "edge-1", time.Hour)}, ""},
		{"no certificate", nil, ""},
		{"expired node certificate", []tls.Certificate{nodePair(t, c.ca.WithClock(newFakeClock(time.Now().Add(-3*time.Hour))), "edge-1", time.Hour)}, ""},
		{"the server's own certificate", []tls.Certificate{*serverAsClient}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node, err := handshake(t, c.ca, c.server, tt.certs)
			if tt.node == "" {
				if err == nil {
					t.Fatalf("handshake succeeded as node %q; want it refused", node)
				}
				return
			}
			if err != nil || node != tt.node {
				t.Fatalf("node %q, err %v; want node %q", node, err, tt.node)
			}
		})
	}
}

func TestServerTLSConfigRequiresTLS12(t *testing.T) {
	c := newCloud(t, CertServerOptions{})
	if got := ServerTLSConfig(c.ca, c.server).MinVersion; got != tls.VersionTLS12 {
		t.Errorf("hub MinVersion %x; want TLS 1.2", got)
	}
	if got := CertServerTLSConfig(c.server).ClientAuth; got != tls.RequestClientCert {
		t.Errorf("cert server ClientAuth %v; want RequestClientCert", got)
	}
}

func TestServerCertIsKeptUntilNamesChangeOrItNearsExpiry(t *testing.T) {
	ctx := context.Background()
	st := FileStorage{Dir: t.TempDir()}
	ca, _, err := LoadOrCreateCA(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	opts := ServerCertOptions{IPs: []net.IP{net.ParseIP("10.0.0.5")}, DNSNames: []string{"cloud.example.com"}, Validity: 30 * time.Hour, Logger: quietLogger()}
	serial := func(s *ServerCert) string {
		cert, err := s.Certificate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return cert.Leaf.SerialNumber.String()
	}
	first, err := NewServerCert(ctx, ca, st, opts)
	if err != nil {
		t.Fatal(err)
	}
	leaf := first.cur.Leaf
	if len(leaf.IPAddresses) != 2 || len(leaf.DNSNames) != 2 {
		t.Errorf("SANs IPs %v DNS %v; want 10.0.0.5 and 127.0.0.1, cloud.example.com and localhost", leaf.IPAddresses, leaf.DNSNames)
	}

	restarted, err := NewServerCert(ctx, ca, st, opts)
	if err != nil {
		t.Fatal(err)
	}
	if serial(restarted) != serial(first) {
		t.Error("same names after a restart, yet a new certificate")
	}

	opts.DNSNames = append(opts.DNSNames, "cloud2.example.com")
	renamed, err := NewServerCert(ctx, ca, st, opts)
	if err != nil {
		t.Fatal(err)
	}
	if serial(renamed) == serial(first) {
		t.Error("names changed, yet the old certificate was kept")
	}

	// 2/3 of 30h (plus backdating) is 20h: at 19h it stays, at 21h the next handshake gets a new one.
	clock := newFakeClock(time.Now())
	aging, err := NewServerCert(ctx, ca.WithClock(clock), st, opts)
	if err != nil {
		t.Fatal(err)
	}
	before := serial(aging)
	clock.Set(clock.Now().Add(19 * time.Hour))
	if serial(aging) != before {
		t.Error("reissued at 19h of 30h")
	}
	clock.Set(clock.Now().Add(2 * time.Hour))
	got, err := aging.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Leaf.SerialNumber.String() == before {
		t.Error("not reissued at 21h of 30h")
	}
}
