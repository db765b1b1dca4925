package cloudstream

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coordlisters "k8s.io/client-go/listers/coordination/v1"

	"github.com/kedge-io/kedge/host/pki"
)

// Any replica answers for any node. The kube-apiserver reaches some replica A for a node's kubelet
// API (through the load balancer), but the node's stream tunnel may be held by replica B. A then
// forwards the request, once, to B's forward server over mTLS with the cluster CA: both ends present
// a replica certificate (CN kedge:replica:<identity>, O kedge:replicas) that each replica issues
// itself from the cluster CA at start; a node certificate of the same CA, or anything else, is
// refused and counted. B serves the forwarded request from its own tunnel exactly as a local one
// (logs stream with flushes, exec/attach/port-forward upgrade and relay raw bytes: the reverse
// proxy carries the 101 and then both directions, so back-pressure is TCP's end to end), and never
// forwards it again (one hop). A finds B among the live replicas recorded by cloudhub's ownership
// (Leases labelled kedge.io/ownership=replica, annotation kedge.io/forward-address) by asking each,
// in parallel, whether it holds the node's tunnel.

// ForwardSettings is cloudstream's config block for several replicas.
type ForwardSettings struct {
	Enable      bool          `yaml:"enable" doc:"Forward kubelet API requests for nodes whose stream tunnel another replica holds to that replica (mTLS, cluster CA), and serve such requests from the other replicas on address. Needs cloudhub.ownership (the replicas' Leases name their forward addresses)."`
	Address     string        `yaml:"address" doc:"Listen address of the forward server the other replicas call (https, replica certificates only); cloudhub.ownership.forwardAddress is how they reach it."`
	Identity    string        `yaml:"identity" doc:"This replica's name (as cloudhub.ownership.identity); empty: the cloudcore instance name."`
	Namespace   string        `yaml:"namespace" doc:"Namespace of the replicas' Leases (cloudhub.ownership.namespace); empty: $POD_NAMESPACE, else default."`
	DialTimeout time.Duration `yaml:"dialTimeout" doc:"How long asking another replica whether it holds a node's tunnel may take."`
	HubModule   string        `yaml:"hubModule" doc:"The module that queues messages for the nodes this replica holds: sync requests another replica forwards here (a cloudbus call made there for a node held here) are handed to it; empty: cloudhub."`
}

func defaultForward() ForwardSettings {
	return ForwardSettings{Address: "0.0.0.0:10005", DialTimeout: 3 * time.Second, HubModule: "cloudhub"}
}

type forwardedKey struct{}

// forwardedBy is the replica a request was forwarded from ("" for a request from the API server).
func forwardedBy(r *http.Request) string {
	id, _ := r.Context().Value(forwardedKey{}).(string)
	return id
}

type forwarder struct {
	m         *Module
	cfg       ForwardSettings
	transport *http.Transport
	forwards  *prometheus.CounterVec
	served    prometheus.Counter
	refused   *prometheus.CounterVec
	// peerQueries counts asking another replica for the usage it holds (metrics API across replicas).
	peerQueries *prometheus.CounterVec
	lookups     *prometheus.CounterVec
	relayed     *prometheus.CounterVec            // hub messages forwarded here (forward_hub.go)
	leases      coordlisters.LeaseNamespaceLister // the ownership Leases (forward_lookup.go)
	stopLeases  func()
}

func (m *Module) startForward(ca *pki.CA) error {
	c := m.Forward
	if !c.Enable {
		return nil
	}
	if c.HubModule == "" {
		c.HubModule = defaultForward().HubModule
	}
	if c.Identity == "" {
		c.Identity = m.host.NodeName()
	}
	if c.Namespace == "" {
		c.Namespace = os.Getenv("POD_NAMESPACE")
	}
	if c.Namespace == "" {
		c.Namespace = "default"
	}
	f := &forwarder{m: m, cfg: c,
		forwards: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_cloudstream_forwards_total",
			Help: "Kubelet API requests for a node whose tunnel is not here, by result (ok: forwarded to the replica holding it; no_owner: no live replica holds it; error: the forward failed)."}, []string{"result"}),
		served: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_cloudstream_forwarded_served_total",
			Help: "Requests another replica forwarded here and this replica served from its tunnel."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_cloudstream_forward_refused_total",
			Help: "Callers of the forward server refused, by reason: not_a_replica (a certificate of the cluster CA that is not a replica's, e.g. a node's) or tls_* (the TLS handshake failed: no certificate, another CA, plain HTTP)."}, []string{"reason"}),
	}
	f.peerQueries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_cloudstream_metrics_peer_queries_total",
		Help: "Metrics API requests' questions to another replica for the node and pod usage it holds, by result (ok, error: that replica's nodes were missing from the answer)."}, []string{"result"})
	f.lookups = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_cloudstream_forward_lookups_total",
		Help: "How the replica holding a node's tunnel was found for a forward: lease (the node's hub owner per cloudhub's ownership Lease held it: one question), all (every other replica asked), none (nobody holds it)."}, []string{"via"})
	f.relayed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_cloudstream_hub_relayed_total",
		Help: "Messages another replica forwarded here for a node this replica holds (cloudhub's sync requests, e.g. cloudbus calls), by result: ok (handed to the hub module and answered), invalid (refused: not a message for a node), error (the hub module did not answer)."}, []string{"result"})
	for _, col := range []prometheus.Collector{f.forwards, f.served, f.refused, f.peerQueries, f.lookups, f.relayed} {
		if err := m.host.Metrics().Register(col); err != nil {
			return err
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	var dns []string
	for _, a := range []string{m.AdvertiseAddress, c.Address} {
		if h, _, err := net.SplitHostPort(a); err == nil {
			a = h
		}
		if ip := net.ParseIP(a); ip != nil && !ip.IsUnspecified() {
			ips = append(ips, ip)
		} else if a != "" && ip == nil {
			dns = append(dns, a)
		}
	}
	if h, err := os.Hostname(); err == nil {
		dns = append(dns, h)
	}
	cert, err := ca.IssueReplicaCert(&key.PublicKey, c.Identity, ips, dns, 365*24*time.Hour)
	if err != nil {
		return fmt.Errorf("forward: replica certificate: %w", err)
	}
	own := tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
	serverTLS := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{own},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool(), NextProtos: []string{"http/1.1"}}
	clientTLS := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{own}, RootCAs: ca.Pool(),
		NextProtos: []string{"http/1.1"},
		// The name in the forward address need not be in the peer's certificate (a pod IP that
		// changed): what matters is that the peer is a replica of this cluster's CA.
		InsecureSkipVerify: true, //nolint:gosec // verified below against the cluster CA
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("forward: the peer sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, ic := range cs.PeerCertificates[1:] {
				inter.AddCert(ic)
			}
			if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: ca.Pool(), Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return fmt.Errorf("forward: peer certificate: %w", err)
			}
			_, err := pki.ReplicaIdentity(cs.PeerCertificates[0])
			return err
		}}
	f.transport = &http.Transport{TLSClientConfig: clientTLS, ForceAttemptHTTP2: false,
		TLSNextProto:          map[string]func(string, *tls.Conn) http.RoundTripper{},
		DialContext:           (&net.Dialer{Timeout: c.DialTimeout}).DialContext,
		TLSHandshakeTimeout:   c.DialTimeout,
		ResponseHeaderTimeout: m.SessionTimeout + c.DialTimeout, IdleConnTimeout: time.Minute}
	if err := f.startLeases(m.life); err != nil {
		return err
	}
	errLog := pki.HandshakeErrorLog(m.host.Logger(), "forward", func(reason string) { f.refused.WithLabelValues(reason).Inc() })
	if err := m.listen(&c.Address, serverTLS, http.HandlerFunc(f.serve), errLog); err != nil {
		f.stopLeases()
		return err
	}
	m.Forward.Address = c.Address
	m.fwd = f
	m.host.Logger().Info("forwarding streams between replicas", "address", c.Address, "identity", c.Identity, "namespace", c.Namespace)
	return nil
}

// serve is the forward server: replicas only; /tunnels/<node> answers whether this replica holds the
// node's tunnel, anything else is a kubelet API request served from the local tunnel.
func (f *forwarder) serve(w http.ResponseWriter, r *http.Request) {
	var peer string
	var err error
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		err = errors.New("no client certificate")
	} else {
		peer, err = pki.ReplicaIdentity(r.TLS.PeerCertificates[0])
	}
	if err != nil {
		f.refused.WithLabelValues("not_a_replica").Inc()
		f.m.host.Logger().Warn("forward refused: the caller is not a cloudcore replica", "remote", r.RemoteAddr, "err", err)
		http.Error(w, "forward: "+err.Error(), http.StatusForbidden)
		return
	}
	if r.URL.Path == hubForwardPath {
		f.serveHub(w, r, peer)
		return
	}
	if res, ok := strings.CutPrefix(r.URL.Path, peerMetricsPath); ok {
		f.serveUsage(w, r, res)
		return
	}
	if node, ok := strings.CutPrefix(r.URL.Path, "/tunnels/"); ok {
		if f.m.hasTunnel(node) {
			w.WriteHeader(http.StatusOK)
			return
		}
		http.Error(w, "no tunnel of node "+node+" here", http.StatusNotFound)
		return
	}
	f.served.Inc()
	f.m.serveKubelet(w, r.WithContext(context.WithValue(r.Context(), forwardedKey{}, peer)))
}

func (m *Module) hasTunnel(node string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tunnels[node] != nil
}

type peer struct{ identity, address string }

// peers lists the other replicas with a forward address, from their Leases (informer cache).
func (f *forwarder) peers(context.Context) ([]peer, error) { return f.peersFromCache() }

// holder finds the replica holding node's tunnel: first the node's hub owner (cloudhub's ownership
// Lease), then every other replica at once; the first yes wins.
func (f *forwarder) holder(ctx context.Context, node string) (peer, bool) {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.DialTimeout)
	defer cancel()
	owner, hasOwner := f.hubOwner(node)
	if hasOwner && f.holds(ctx, owner, node) {
		f.lookups.WithLabelValues("lease").Inc()
		return owner, true
	}
	ps, err := f.peers(ctx)
	if err != nil {
		f.m.host.Logger().Warn("forward: listing the replicas failed", "err", err)
		return peer{}, false
	}
	found := make(chan peer, len(ps))
	asked := 0
	for _, p := range ps {
		if hasOwner && p.identity == owner.identity {
			continue // asked above
		}
		asked++
		go func() {
			if f.holds(ctx, p, node) {
				found <- p
				return
			}
			found <- peer{}
		}()
	}
	for range asked {
		if p := <-found; p.address != "" {
			f.lookups.WithLabelValues("all").Inc()
			return p, true
		}
	}
	f.lookups.WithLabelValues("none").Inc()
	return peer{}, false
}

// forward sends r, for node, to the replica holding its tunnel and relays the answer (streams
// included). false: no replica holds it (the caller answers as before).
func (f *forwarder) forward(w http.ResponseWriter, r *http.Request, node, kind string) bool {
	p, ok := f.holder(r.Context(), node)
	if !ok {
		f.forwards.WithLabelValues("no_owner").Inc()
		return false
	}
	target := &url.URL{Scheme: "https", Host: p.address}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = p.address
		},
		Transport:     f.transport,
		FlushInterval: -1, // logs -f: every chunk at once
		ModifyResponse: func(*http.Response) error {
			f.forwards.WithLabelValues("ok").Inc() // the holder answered; its body or stream follows
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			f.forwards.WithLabelValues("error").Inc()
			f.m.host.Logger().Warn("forward to the replica holding the node failed", "node", node, "replica", p.identity, "err", err)
			http.Error(w, fmt.Sprintf("node %s: forwarding to replica %s: %v", node, p.identity, err), http.StatusBadGateway)
		},
	}
	f.m.host.Logger().Debug("forwarding a kubelet API request", "node", node, "kind", kind, "replica", p.identity)
	proxy.ServeHTTP(w, r)
	return true
}
