package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of CertServerOptions.
const (
	DefaultNodeCertValidity = 365 * 24 * time.Hour
	DefaultMaxCSRBytes      = 64 << 10
)

// CertServerOptions configures a CertServer.
type CertServerOptions struct {
	CA *CA
	// Records holds the join tokens ('cloudcore token create') and the certificates issued per
	// node: FileRecords in the CA's folder, or SecretRecords beside the CA's Secret. Required.
	Records      Records
	Validity     time.Duration         // lifetime of issued node certificates; default DefaultNodeCertValidity
	MaxBodyBytes int64                 // largest CSR accepted; default DefaultMaxCSRBytes
	Logger       *slog.Logger          // default slog.Default()
	Registerer   prometheus.Registerer // where kedge_pki_requests_total and kedge_certserver_join_refused_total go; nil: not registered
}

// The reasons of kedge_certserver_join_refused_total.
var joinRefusalReasons = []string{"bad_token", "expired", "revoked", "used_up", "node_mismatch", "node_exists"}

// CertServer is the HTTP handler of cloudcore's certificate server (KubeEdge's :10002):
//
//	GET /ca.crt    the CA certificate, DER
//	GET /edge.crt  body: a DER CSR; answer: a DER node certificate. Authenticated either by
//	               "Authorization: Bearer <JWT part of a join token>" plus a "NodeName" header
//	               (first join), or by a valid client certificate from this CA (renewal, for the
//	               certificate's own node only).
//
// A join token must be recorded in Records (not revoked, not expired, with uses left, bound to
// the node asked for if bound at all), and the node must not hold a valid certificate already
// unless the token was created to replace it: a token never takes over a node's identity. A
// renewal must present the node's current certificate (one recorded for it, not revoked).
//
// Serve it over TLS with CertServerTLSConfig, which asks for client certificates without
// requiring them. Errors are answered with a status code and a one-line plain-text reason.
type CertServer struct {
	ca       *CA
	recs     Records
	validity time.Duration
	maxBody  int64
	log      *slog.Logger
	requests *prometheus.CounterVec
	refused  *prometheus.CounterVec
	// mu serializes the check-sign-record sequence within this process; across processes the
	// records' atomic updates decide.
	mu sync.Mutex
}

// NewCertServer returns a CertServer, registering its metrics with opts.Registerer.
func NewCertServer(opts CertServerOptions) (*CertServer, error) {
	if opts.CA == nil {
		return nil, errors.New("certificate server: no CA given")
	}
	if opts.Records == nil {
		return nil, errors.New("certificate server: no records given (where join tokens and issued certificates are kept)")
	}
	s := &CertServer{ca: opts.CA, recs: opts.Records, validity: opts.Validity, maxBody: opts.MaxBodyBytes, log: opts.Logger}
	if s.validity <= 0 {
		s.validity = DefaultNodeCertValidity
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxCSRBytes
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kedge_pki_requests_total",
		Help: "Requests to the certificate server by endpoint (ca.crt, edge.crt, other) and result (ok, issued, renewed, or why it was refused).",
	}, []string{"endpoint", "result"})
	s.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kedge_certserver_join_refused_total",
		Help: "Joins (token requests for a node certificate) refused, by reason: bad_token, expired, revoked, used_up, node_mismatch, node_exists.",
	}, []string{"reason"})
	if opts.Registerer != nil {
		for _, c := range []**prometheus.CounterVec{&s.requests, &s.refused} {
			if err := opts.Registerer.Register(*c); err != nil {
				are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err)
				if !ok {
					return nil, fmt.Errorf("certificate server: register metrics: %w", err)
				}
				*c = are.ExistingCollector.(*prometheus.CounterVec)
			}
		}
	}
	for _, r := range joinRefusalReasons {
		s.refused.WithLabelValues(r) // present at 0
	}
	return s, nil
}

// refusal is a request the server turns down: the HTTP status, the metric's result label and a
// reason for the client and the log.
type refusal struct {
	status int
	result string
	err    error
	join   string // reason of kedge_certserver_join_refused_total, for refused joins
}

func refuse(status int, result, format string, args ...any) *refusal {
	return &refusal{status: status, result: result, err: fmt.Errorf(format, args...)}
}

// refuseJoin is a refused join, counted by reason.
func refuseJoin(status int, result, reason string, err error) *refusal {
	return &refusal{status: status, result: result, err: err, join: reason}
}

func (s *CertServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var endpoint string
	switch r.URL.Path {
	case CAPath:
		endpoint = "ca.crt"
	case CertPath:
		endpoint = "edge.crt"
	default:
		s.reject(w, r, "other", "", refuse(http.StatusNotFound, "not_found", "no such endpoint %q (there are GET %s and GET %s)", r.URL.Path, CAPath, CertPath))
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		s.reject(w, r, endpoint, "", refuse(http.StatusMethodNotAllowed, "method_not_allowed", "%s %s: only GET is served", r.Method, r.URL.Path))
		return
	}
	if endpoint == "ca.crt" {
		w.Header().Set("Content-Type", "application/pkix-cert")
		_, _ = w.Write(s.ca.cert.Raw)
		s.requests.WithLabelValues(endpoint, "ok").Inc()
		return
	}
	node, result, cert, ref := s.issue(w, r)
	if ref != nil {
		s.reject(w, r, endpoint, node, ref)
		return
	}
	w.Header().Set("Content-Type", "application/pkix-cert")
	_, _ = w.Write(cert.Raw)
	s.requests.WithLabelValues(endpoint, result).Inc()
	s.log.Info("issued node certificate", "node", node, "how", result, "serial", cert.SerialNumber.Text(16),
		"notAfter", cert.NotAfter.UTC().Format(time.RFC3339), "remote", r.RemoteAddr)
}

// grant is who a request authenticated as: a node joining with a token, or renewing with its
// certificate.
type grant struct {
	node   string
	result string // "issued" (join) or "renewed"
	token  string // the join token's ID
	serial string // the presented certificate's serial (renewal), hex
	// peerNotAfter is the presented certificate's expiry (renewal).
	peerNotAfter time.Time
}

// issue authenticates the request, reads the CSR, checks the records and signs.
func (s *CertServer) issue(w http.ResponseWriter, r *http.Request) (node, result string, cert *x509.Certificate, ref *refusal) {
	g, ref := s.authenticate(r)
	if ref != nil {
		return g.node, "", nil, ref
	}
	der, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return g.node, "", nil, refuse(http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds %d bytes; send only the DER-encoded CSR", s.maxBody)
		}
		return g.node, "", nil, refuse(http.StatusBadRequest, "bad_csr", "read request body: %v", err)
	}
	csr, ref := parseCSR(der)
	if ref != nil {
		return g.node, "", nil, ref
	}
	// The CSR's subject is ignored: the identity comes from the token request or the client cert.
	s.mu.Lock()
	defer s.mu.Unlock()
	if g.result == "renewed" {
		cert, ref = s.renew(r.Context(), g, csr.PublicKey)
	} else {
		cert, ref = s.join(r.Context(), g, csr.PublicKey)
	}
	return g.node, g.result, cert, ref
}

// internal is a refusal for a failure of the server itself.
func internal(what string, err error) *refusal {
	return refuse(http.StatusInternalServerError, "internal", "%s: %v", what, err)
}

// tokenRefusal maps a token record's check to a refusal.
func tokenRefusal(err error) *refusal {
	switch {
	case errors.Is(err, ErrTokenUnknown):
		return refuseJoin(http.StatusUnauthorized, "token_unknown", "bad_token", err)
	case errors.Is(err, ErrTokenRevoked):
		return refuseJoin(http.StatusUnauthorized, "token_revoked", "revoked", err)
	case errors.Is(err, ErrTokenExpired):
		return refuseJoin(http.StatusUnauthorized, "token_expired", "expired", err)
	case errors.Is(err, ErrTokenUsedUp):
		return refuseJoin(http.StatusUnauthorized, "token_used_up", "used_up", err)
	case errors.Is(err, ErrTokenNodeMismatch):
		return refuseJoin(http.StatusForbidden, "token_node_mismatch", "node_mismatch", err)
	case errors.Is(err, ErrNodeExists):
		return refuseJoin(http.StatusConflict, "node_exists", "node_exists", err)
	}
	return internal("join token record", err)
}

// nodeExists says why node may not join: it holds a valid certificate.
func nodeExists(rec NodeRecord) error {
	c := rec.Certs[len(rec.Certs)-1]
	return fmt.Errorf("%w: node %q holds certificate %s, valid until %s; a node renews with its own certificate. To re-install it, join with a token from 'cloudcore token create --node %s --replace'",
		ErrNodeExists, rec.Node, c.Serial, c.NotAfter.UTC().Format(time.RFC3339), rec.Node)
}

// join checks the token and the node's records, signs, consumes a use of the token and records
// the certificate. Nothing is consumed when a check refuses; a join that loses a race with another
// replica for the same node after its token use was consumed is refused (node_exists).
func (s *CertServer) join(ctx context.Context, g grant, pub crypto.PublicKey) (*x509.Certificate, *refusal) {
	now := s.ca.clock.Now()
	data, err := s.recs.Get(ctx, KindToken, g.token)
	if err != nil && !isNotExist(err) {
		return nil, internal("read join token record", err)
	}
	tok, err := decodeToken(g.token, s.recs, data)
	if err == nil {
		err = tok.check(g.node, now)
	}
	if err != nil {
		return nil, tokenRefusal(err)
	}
	node, _, err := GetNodeRecord(ctx, s.recs, g.node)
	if err != nil {
		return nil, internal("read node record", err)
	}
	node.prune(now)
	if len(node.Certs) > 0 && !tok.Replace {
		return nil, tokenRefusal(nodeExists(node))
	}
	cert, err := s.ca.IssueNodeCert(pub, g.node, s.validity)
	if err != nil {
		return nil, internal("sign certificate", err)
	}
	err = s.recs.Update(ctx, KindToken, g.token, func(old []byte) ([]byte, error) {
		t, err := decodeToken(g.token, s.recs, old)
		if err != nil {
			return nil, err
		}
		if err := t.check(g.node, now); err != nil {
			return nil, err
		}
		t.Used++
		t.Joined = append(t.Joined, g.node)
		return json.Marshal(t)
	})
	if err != nil {
		return nil, tokenRefusal(err)
	}
	how := "join"
	if tok.Replace {
		how = "replace"
	}
	issued := IssuedCert{Serial: cert.SerialNumber.Text(16), NotAfter: cert.NotAfter.UTC(), Issued: now.UTC(), How: how, Token: g.token}
	err = s.recs.Update(ctx, KindNode, g.node, func(old []byte) ([]byte, error) {
		rec, err := decodeNode(g.node, s.recs, old)
		if err != nil {
			return nil, err
		}
		rec.prune(now)
		if len(rec.Certs) > 0 {
			if !tok.Replace {
				return nil, nodeExists(rec)
			}
			rec.Revoked = append(rec.Revoked, rec.Certs...)
		}
		rec.Certs = []IssuedCert{issued}
		return json.Marshal(rec)
	})
	if err != nil {
		if errors.Is(err, ErrNodeExists) {
			return nil, tokenRefusal(err)
		}
		return nil, internal("record the node's certificate", err)
	}
	if tok.Replace && len(node.Certs) > 0 {
		s.log.Warn("join replaced a node's certificates", "node", g.node, "token", g.token, "revoked", len(node.Certs))
	}
	return cert, nil
}

// renew checks that the presented certificate is the node's (recorded, not revoked), signs and
// records the new certificate beside the presented one. A node with no record — its certificate
// was issued before records were kept — is adopted.
func (s *CertServer) renew(ctx context.Context, g grant, pub crypto.PublicKey) (*x509.Certificate, *refusal) {
	now := s.ca.clock.Now()
	check := func(rec NodeRecord, known bool) error {
		switch {
		case rec.find(rec.Revoked, g.serial):
			return fmt.Errorf("%w: certificate %s of node %q was revoked when the node joined again; join with a new token ('edgecore join')", ErrCertRevoked, g.serial, g.node)
		case known && !rec.find(rec.Certs, g.serial):
			return fmt.Errorf("%w: certificate %s is not the current certificate of node %q; join with a new token ('edgecore join')", ErrCertUnknown, g.serial, g.node)
		}
		return nil
	}
	rec, known, err := GetNodeRecord(ctx, s.recs, g.node)
	if err != nil {
		return nil, internal("read node record", err)
	}
	rec.prune(now)
	if err := check(rec, known); err != nil {
		return nil, renewRefusal(err)
	}
	cert, err := s.ca.IssueNodeCert(pub, g.node, s.validity)
	if err != nil {
		return nil, internal("sign certificate", err)
	}
	issued := IssuedCert{Serial: cert.SerialNumber.Text(16), NotAfter: cert.NotAfter.UTC(), Issued: now.UTC(), How: "renewal"}
	err = s.recs.Update(ctx, KindNode, g.node, func(old []byte) ([]byte, error) {
		rec, err := decodeNode(g.node, s.recs, old)
		if err != nil {
			return nil, err
		}
		rec.prune(now)
		if err := check(rec, old != nil); err != nil {
			return nil, err
		}
		// Keep the presented certificate: if this answer is lost, the node renews with it again.
		var presented []IssuedCert
		for _, c := range rec.Certs {
			if c.Serial == g.serial {
				presented = append(presented, c)
			}
		}
		if old == nil {
			presented = []IssuedCert{{Serial: g.serial, NotAfter: g.peerNotAfter, Issued: now.UTC(), How: "adopted"}}
		}
		rec.Certs = append(presented, issued)
		return json.Marshal(rec)
	})
	if err != nil {
		if ref := renewRefusal(err); ref.status != http.StatusInternalServerError {
			return nil, ref
		}
		return nil, internal("record the node's certificate", err)
	}
	return cert, nil
}

func renewRefusal(err error) *refusal {
	switch {
	case errors.Is(err, ErrCertRevoked):
		return &refusal{status: http.StatusForbidden, result: "cert_revoked", err: err}
	case errors.Is(err, ErrCertUnknown):
		return &refusal{status: http.StatusForbidden, result: "cert_unknown", err: err}
	}
	return internal("renewal", err)
}

// authenticate returns who the request is: a join (token) or a renewal (client certificate).
func (s *CertServer) authenticate(r *http.Request) (g grant, ref *refusal) {
	header := r.Header.Get(NodeNameHeader)
	g.node = header
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		peer := r.TLS.PeerCertificates[0]
		name, err := s.ca.VerifyNodeCert(peer)
		if err != nil {
			return g, refuse(http.StatusUnauthorized, "bad_client_cert", "client certificate not accepted: %v; join again with a new token", err)
		}
		if header != "" && header != name {
			return g, refuse(http.StatusForbidden, "node_mismatch", "the client certificate belongs to node %q and cannot renew the certificate of node %q", name, header)
		}
		return grant{node: name, result: "renewed", serial: peer.SerialNumber.Text(16), peerNotAfter: peer.NotAfter.UTC()}, nil
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return g, refuseJoin(http.StatusUnauthorized, "missing_token", "bad_token", errors.New("no client certificate and no Authorization header: send 'Authorization: Bearer <JWT part of the join token>'"))
	}
	scheme, jwt, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || jwt == "" {
		return g, refuseJoin(http.StatusUnauthorized, "token_malformed", "bad_token", errors.New("the Authorization header must be 'Bearer <JWT part of the join token>'"))
	}
	claims, err := s.ca.verifyJWT(jwt)
	if err != nil {
		reason := "bad_token"
		if errors.Is(err, ErrTokenExpired) {
			reason = "expired"
		}
		return g, refuseJoin(http.StatusUnauthorized, tokenResult(err), reason, err)
	}
	if claims.ID == "" || CheckRecordName(claims.ID) != nil {
		return g, refuseJoin(http.StatusUnauthorized, "token_unknown", "bad_token", fmt.Errorf("%w: the token carries no token ID (jti); it was made by an older cloudcore: create one with 'cloudcore token create'", ErrTokenUnknown))
	}
	g.token = claims.ID
	if header == "" {
		return g, refuse(http.StatusBadRequest, "missing_node_name", "no %s header: name the node the certificate is for", NodeNameHeader)
	}
	if err := CheckNodeName(header); err != nil {
		return g, refuse(http.StatusBadRequest, "bad_node_name", "%s header: %v", NodeNameHeader, err)
	}
	g.result = "issued"
	return g, nil
}

func tokenResult(err error) string {
	switch {
	case errors.Is(err, ErrTokenExpired):
		return "token_expired"
	case errors.Is(err, ErrTokenNotYetValid):
		return "token_not_yet_valid"
	case errors.Is(err, ErrTokenSignature):
		return "token_forged"
	case errors.Is(err, ErrTokenAlgorithm):
		return "token_algorithm"
	default:
		return "token_malformed"
	}
}

func parseCSR(der []byte) (*x509.CertificateRequest, *refusal) {
	if len(der) == 0 {
		return nil, refuse(http.StatusBadRequest, "bad_csr", "empty request body: send the DER-encoded CSR")
	}
	if bytes.HasPrefix(bytes.TrimSpace(der), []byte("-----BEGIN")) {
		return nil, refuse(http.StatusBadRequest, "bad_csr", "the CSR is PEM; send it DER-encoded (openssl req -outform DER)")
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, refuse(http.StatusBadRequest, "bad_csr", "parse CSR: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, refuse(http.StatusBadRequest, "bad_csr", "CSR signature does not verify: %v", err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, refuse(http.StatusBadRequest, "bad_csr", "CSR public key: %v", err)
	}
	return csr, nil
}

func (s *CertServer) reject(w http.ResponseWriter, r *http.Request, endpoint, node string, ref *refusal) {
	s.requests.WithLabelValues(endpoint, ref.result).Inc()
	if ref.join != "" {
		s.refused.WithLabelValues(ref.join).Inc()
	}
	s.log.Warn("certificate request refused", "endpoint", endpoint, "result", ref.result, "node", node,
		"remote", r.RemoteAddr, "err", ref.err)
	http.Error(w, ref.err.Error(), ref.status)
}
