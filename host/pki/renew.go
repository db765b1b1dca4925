package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"time"
)

// RenewerOptions says which files to keep fresh and where to renew them.
type RenewerOptions struct {
	CertServer string // host:port of cloudcore's certificate server
	CAFile     string
	CertFile   string
	KeyFile    string
	Logger     *slog.Logger // default slog.Default()
	Clock      Clock        // default SystemClock
	// Jitter returns a number in [0, 1) that places each renewal between 70% (0) and 90% (1) of
	// the certificate's lifetime; default random, so nodes that joined together renew apart.
	Jitter func() float64
	// MinBackoff and MaxBackoff bound the waits between failed attempts (default 2 s and 5 min).
	MinBackoff, MaxBackoff time.Duration
}

// Renewer keeps a node's certificate fresh: at a jittered 70–90% of its lifetime it asks the
// certificate server for a new one, authenticating with the current one (mTLS), replaces the
// files, and hands the new certificate to every later TLS handshake through GetClientCertificate.
// Failed attempts are retried with exponential backoff until one succeeds.
type Renewer struct {
	opts RenewerOptions
	ca   *x509.Certificate
	pool *x509.CertPool
	host string
	log  *slog.Logger

	mu   sync.RWMutex
	cur  *tls.Certificate // Leaf set
	node string
	next time.Time // when to renew cur
}

// NewRenewer loads the CA, certificate and key files; it fails if they are missing or damaged.
func NewRenewer(opts RenewerOptions) (*Renewer, error) {
	host, _, err := net.SplitHostPort(opts.CertServer)
	if err != nil {
		return nil, fmt.Errorf("certificate server address %q: want host:port (%v)", opts.CertServer, err)
	}
	opts.Clock = orSystem(opts.Clock)
	if opts.Jitter == nil {
		opts.Jitter = rand.Float64
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 2 * time.Second
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(5*time.Minute, opts.MinBackoff)
	}
	r := &Renewer{opts: opts, host: host, log: opts.Logger}
	if r.log == nil {
		r.log = slog.Default()
	}
	caPEM, err := os.ReadFile(opts.CAFile)
	if err != nil {
		return nil, fmt.Errorf("read the cloud's CA: %w (join again with 'edgecore join')", err)
	}
	if r.ca, err = parseCertPEM(caPEM); err != nil {
		return nil, fmt.Errorf("the cloud's CA %s is damaged: %w (join again with 'edgecore join')", opts.CAFile, err)
	}
	r.pool = x509.NewCertPool()
	r.pool.AddCert(r.ca)
	pair, err := loadKeyPair(opts.CertFile, opts.KeyFile)
	if err != nil {
		return nil, err
	}
	if err := r.set(pair); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Renewer) set(pair *tls.Certificate) error {
	node, err := NodeNameFromCert(pair.Leaf)
	if err != nil {
		return fmt.Errorf("%s: %w", r.opts.CertFile, err)
	}
	next := renewalTime(pair.Leaf, r.opts.Jitter())
	r.mu.Lock()
	r.cur, r.node, r.next = pair, node, next
	r.mu.Unlock()
	return nil
}

// renewalTime places a renewal at 70% + jitter·20% of the certificate's lifetime.
func renewalTime(leaf *x509.Certificate, jitter float64) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotBefore.Add(time.Duration(float64(life) * (0.7 + 0.2*jitter)))
}

// Certificate returns the current certificate.
func (r *Renewer) Certificate() *tls.Certificate {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cur
}

// NodeName is the node the certificate names.
func (r *Renewer) NodeName() string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.node
}

// NextRenewal is when Run will next renew.
func (r *Renewer) NextRenewal() time.Time {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.next
}

// GetClientCertificate is for tls.Config.GetClientCertificate: every handshake gets the newest
// certificate, so connections made after a renewal use it without a restart.
func (r *Renewer) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.Certificate(), nil
}

// ClientTLSConfig is a TLS config for dialing cloudcore: the server must present a certificate from
// the cloud's CA; the client presents the current node certificate. The dialer sets ServerName.
func (r *Renewer) ClientTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS12,
		RootCAs:              r.pool,
		GetClientCertificate: r.GetClientCertificate,
	}
}

// Run renews the certificate whenever it is due until ctx ends.
func (r *Renewer) Run(ctx context.Context) error {
	clock := r.opts.Clock
	for renewed := false; ; renewed = true {
		next := r.NextRenewal()
		r.log.Info("node certificate renewal scheduled", "at", next.UTC().Format(time.RFC3339),
			"expires", r.Certificate().Leaf.NotAfter.UTC().Format(time.RFC3339))
		wait := next.Sub(clock.Now())
		if renewed && wait <= 0 {
			// A certificate due the moment it arrives means skewed clocks or a tiny validity;
			// renewing again at once would only hammer the server.
			r.log.Warn("the renewed certificate is already due; check the clocks of this node and the cloud", "retryIn", r.opts.MaxBackoff)
			wait = r.opts.MaxBackoff
		}
		if wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-clock.After(wait):
			}
		}
		backoff := r.opts.MinBackoff
		for attempt := 1; ; attempt++ {
			err := r.Renew(ctx)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			// Half fixed, half random, so nodes that fail together do not retry together.
			wait := backoff/2 + rand.N(backoff/2+1)
			attrs := []any{"attempt", attempt, "retryIn", wait, "err", err}
			if leaf := r.Certificate().Leaf; clock.Now().After(leaf.NotAfter) {
				r.log.Error("node certificate has expired and cannot renew itself; join again with a new token ('edgecore join')", attrs...)
			} else {
				r.log.Warn("node certificate renewal failed", attrs...)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-clock.After(wait):
			}
			backoff = min(backoff*2, r.opts.MaxBackoff)
		}
	}
}

// Renew gets a new certificate now, authenticating with the current one, and replaces the files.
func (r *Renewer) Renew(ctx context.Context) error {
	conf := r.ClientTLSConfig()
	conf.ServerName = r.host
	cert, key, err := requestNodeCert(ctx, newHTTPClient(conf), r.opts.CertServer, r.NodeName(), "", r.ca)
	if err != nil {
		return err
	}
	if err := storeKeyPair(r.opts.CertFile, r.opts.KeyFile, cert, key); err != nil {
		return err
	}
	pair := &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
	if err := r.set(pair); err != nil {
		return err
	}
	r.log.Info("node certificate renewed", "node", r.NodeName(), "serial", cert.SerialNumber.Text(16),
		"notAfter", cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}
