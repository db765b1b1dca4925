package pki

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
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
	CA           *CA
	Validity     time.Duration         // lifetime of issued node certificates; default DefaultNodeCertValidity
	MaxBodyBytes int64                 // largest CSR accepted; default DefaultMaxCSRBytes
	Logger       *slog.Logger          // default slog.Default()
	Registerer   prometheus.Registerer // where kedge_pki_requests_total goes; nil: not registered
}

// CertServer is the HTTP handler of cloudcore's certificate server (KubeEdge's :10002):
//
//	GET /ca.crt    the CA certificate, DER
//	GET /edge.crt  body: a DER CSR; answer: a DER node certificate. Authenticated either by
//	               "Authorization: Bearer <JWT part of a join token>" plus a "NodeName" header
//	               (first join), or by a valid client certificate from this CA (renewal, for the
//	               certificate's own node only).
//
// Serve it over TLS with CertServerTLSConfig, which asks for client certificates without
// requiring them. Errors are answered with a status code and a one-line plain-text reason.
type CertServer struct {
	ca       *CA
	validity time.Duration
	maxBody  int64
	log      *slog.Logger
	requests *prometheus.CounterVec
}

// NewCertServer returns a CertServer, registering its metrics with opts.Registerer.
func NewCertServer(opts CertServerOptions) (*CertServer, error) {
	if opts.CA == nil {
		return nil, errors.New("certificate server: no CA given")
	}
	s := &CertServer{ca: opts.CA, validity: opts.Validity, maxBody: opts.MaxBodyBytes, log: opts.Logger}
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
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(s.requests); err != nil {
			are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err)
			if !ok {
				return nil, fmt.Errorf("certificate server: register metrics: %w", err)
			}
			s.requests = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	return s, nil
}

// refusal is a request the server turns down: the HTTP status, the metric's result label and a
// reason for the client and the log.
type refusal struct {
	status int
	result string
	err    error
}

func refuse(status int, result, format string, args ...any) *refusal {
	return &refusal{status, result, fmt.Errorf(format, args...)}
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

// issue authenticates the request, reads the CSR and signs it.
func (s *CertServer) issue(w http.ResponseWriter, r *http.Request) (node, result string, cert *x509.Certificate, ref *refusal) {
	node, result, ref = s.authenticate(r)
	if ref != nil {
		return node, "", nil, ref
	}
	der, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return node, "", nil, refuse(http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds %d bytes; send only the DER-encoded CSR", s.maxBody)
		}
		return node, "", nil, refuse(http.StatusBadRequest, "bad_csr", "read request body: %v", err)
	}
	csr, ref := parseCSR(der)
	if ref != nil {
		return node, "", nil, ref
	}
	// The CSR's subject is ignored: the identity comes from the token request or the client cert.
	cert, err = s.ca.IssueNodeCert(csr.PublicKey, node, s.validity)
	if err != nil {
		return node, "", nil, refuse(http.StatusInternalServerError, "internal", "sign certificate: %v", err)
	}
	return node, result, cert, nil
}

// authenticate returns the node the request may get a certificate for.
func (s *CertServer) authenticate(r *http.Request) (node, result string, ref *refusal) {
	header := r.Header.Get(NodeNameHeader)
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		name, err := s.ca.VerifyNodeCert(r.TLS.PeerCertificates[0])
		if err != nil {
			return header, "", refuse(http.StatusUnauthorized, "bad_client_cert", "client certificate not accepted: %v; join again with a new token", err)
		}
		if header != "" && header != name {
			return header, "", refuse(http.StatusForbidden, "node_mismatch", "the client certificate belongs to node %q and cannot renew the certificate of node %q", name, header)
		}
		return name, "renewed", nil
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return header, "", refuse(http.StatusUnauthorized, "missing_token", "no client certificate and no Authorization header: send 'Authorization: Bearer <JWT part of the join token>'")
	}
	scheme, jwt, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || jwt == "" {
		return header, "", refuse(http.StatusUnauthorized, "token_malformed", "the Authorization header must be 'Bearer <JWT part of the join token>'")
	}
	if err := s.ca.VerifyJWT(jwt); err != nil {
		return header, "", refuse(http.StatusUnauthorized, tokenResult(err), "%v", err)
	}
	if header == "" {
		return "", "", refuse(http.StatusBadRequest, "missing_node_name", "no %s header: name the node the certificate is for", NodeNameHeader)
	}
	if err := CheckNodeName(header); err != nil {
		return header, "", refuse(http.StatusBadRequest, "bad_node_name", "%s header: %v", NodeNameHeader, err)
	}
	return header, "issued", nil
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
	s.log.Warn("certificate request refused", "endpoint", endpoint, "result", ref.result, "node", node,
		"remote", r.RemoteAddr, "err", ref.err)
	http.Error(w, ref.err.Error(), ref.status)
}
