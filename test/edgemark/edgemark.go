// Package edgemark runs many hollow edge nodes in one process against a real cloudcore, as
// Kubernetes' kubemark does for kubelets: each node has its own certificate from the cluster CA
// (issued through the join flow of the certificate server), its own mTLS websocket on the Kedge lane
// (subprotocol kedge.hub.v1), and speaks the protocol Kedge's edgecore speaks: an inventory on
// connect, node status reports at a period, an acknowledgement for every message from the cloud,
// pods it is given reported Running (no containers) through the pod status path, pods being deleted
// confirmed, ConfigMaps/Secrets/Services kept in memory, its own upstream messages resent until the
// cloud acknowledges them, and a redial with backoff and full jitter when the link breaks.
//
// cmd/kedge-edgemark is the command around it; the 200-node smoke test (smoke_test.go) runs it
// in-process against cloudhub and edgecontroller over a real kube-apiserver.
package edgemark

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/host/pki"
)

// Options say where the nodes connect and how they behave. The zero value of every duration and
// count is replaced by its default (see withDefaults).
type Options struct {
	// HubAddress is cloudhub's websocket address, host:port (cloudcore's :10000).
	HubAddress string
	// CertServer is cloudhub's certificate server, host:port (cloudcore's :10002).
	CertServer string
	// Tokens are join tokens ('cloudcore token create --uses N'); node i joins with
	// Tokens[i % len(Tokens)], so together they must allow Nodes joins. Only nodes without a
	// certificate in CertDir join; with every certificate there, no token is needed.
	Tokens []string
	// CertDir keeps each node's ca.crt, node.crt and node.key in CertDir/<node>/, so a second run
	// reuses them (a node holding a valid certificate cannot join again without --replace).
	CertDir string
	// Nodes is how many hollow nodes run; they are named Prefix-00000, Prefix-00001, ...
	Nodes  int
	Prefix string
	// Rate is how many new connections (and joins) start per second; Burst above it at once.
	Rate  float64
	Burst int
	// JoinParallel bounds the joins in flight (each is a TLS handshake and a CSR signed by the CA).
	JoinParallel int
	// StatusPeriod is how often each node sends its node status. A hollow node never changes, so
	// edgecore's nodestatus.unchangedInterval (1m) is the real edge's; KubeEdge's edgecore sends every 10s.
	StatusPeriod time.Duration
	// TwinPeriod, when positive, makes each node report a twin of its device every TwinPeriod (the
	// first at a random point of the first period), as edgecore's devicetwin sends a devicestatus
	// update when a mapper reports: property TwinProperty of device <TwinNamespace>/<node name>,
	// a new value each time. The Device (bound to the node, with that property) must exist for
	// devicecontroller to accept it; hack/benchscale creates them. 0: no device traffic.
	TwinPeriod    time.Duration
	TwinNamespace string
	// Heartbeat is the websocket ping period (edgehub.heartbeat); it must match the cloud's within
	// a factor of two, since each side drops a peer silent for two of its own periods.
	Heartbeat time.Duration
	// AckTimeout: an upstream message not acknowledged within this is sent again.
	AckTimeout time.Duration
	// BackoffMin and BackoffMax bound the redial wait (full jitter, doubling).
	BackoffMin, BackoffMax time.Duration
	// Capacity is what each node reports (cpu, memory, pods).
	Capacity map[string]string
	// Logger gets one line per notable event (not per message); nil: slog.Default().
	Logger *slog.Logger
	// Registerer receives edgemark's metrics (kedge_edgemark_*); nil: none.
	Registerer prometheus.Registerer
}

func (o Options) withDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = "hollow"
	}
	if o.Rate <= 0 {
		o.Rate = 200
	}
	if o.Burst <= 0 {
		o.Burst = max(1, int(o.Rate/10))
	}
	if o.JoinParallel <= 0 {
		o.JoinParallel = 16
	}
	if o.StatusPeriod <= 0 {
		o.StatusPeriod = 10 * time.Second
	}
	if o.TwinNamespace == "" {
		o.TwinNamespace = "default"
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = hub.DefaultHeartbeat
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 15 * time.Second
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = time.Second
	}
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = max(30*time.Second, o.BackoffMin)
	}
	if o.Capacity == nil {
		o.Capacity = map[string]string{"cpu": "4", "memory": "8Gi", "pods": "110"}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// FDReserve is the file descriptors edgemark keeps for itself beyond one per node (listeners, the
// certificate files being read, the metrics server, standard streams).
const FDReserve = 64

// CheckFDs says whether this process may open a socket per node (plus FDReserve, plus perNode-1 more
// per node when the cloud runs in the same process and holds the other end). Go raises the soft
// limit to the hard one at start, so the soft limit here is what is left to raise by hand.
func CheckFDs(nodes, perNode int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("read the file-descriptor limit: %w", err)
	}
	need := uint64(nodes*perNode + FDReserve)
	if need > lim.Cur {
		return fmt.Errorf("%d nodes need about %d file descriptors (%d per node + %d), but this process may open %d (hard limit %d): raise it first (ulimit -n %d, or LimitNOFILE= in a systemd unit) or run fewer nodes per process",
			nodes, need, perNode, FDReserve, lim.Cur, lim.Max, need)
	}
	return nil
}

// Stats are counters of a running simulation.
type Stats struct {
	Nodes     int   // configured
	Joined    int64 // nodes holding a certificate
	Connected int64 // nodes with an open link now
	Reported  int64 // nodes whose first node status the cloud acknowledged (on any link)
	// ReportedOnLink counts the nodes whose node status the cloud acknowledged on their current link:
	// after a cloudcore restart, the nodes it has taken back.
	ReportedOnLink int64
	Connects       int64 // links opened (first connections and redials)
	Disconnects    int64 // links lost
	DialErrors     int64 // failed dials
	MsgsIn         int64 // messages from the cloud
	MsgsOut        int64 // messages sent (including resends)
	Resent         int64 // upstream messages sent again for want of an acknowledgement
	Refused        int64 // upstream messages the cloud answered with an error
	PodsHeld       int64 // pods the nodes hold now
	PodsRunning    int64 // pods whose Running status the cloud acknowledged
	PodsDeleted    int64 // graceful deletions confirmed to the cloud
	PodsReported   int64 // Running reports sent (first tries)
	TwinsSent      int64 // twin reports queued (see Options.TwinPeriod)
	TwinsAcked     int64 // twin reports the cloud acknowledged without an error
}

// Sim is a running set of hollow nodes.
type Sim struct {
	o       Options
	nodes   []*node
	poolMu  sync.Mutex
	pools   map[string]*x509.CertPool
	limiter *rate.Limiter
	joinSem chan struct{}
	m       *simMetrics
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	stats   struct {
		joined, connected, reported, reportedOnLink, connects, disconnects, dialErrors, msgsIn, msgsOut, resent, refused,
		podsHeld, podsRunning, podsDeleted, podsReported, twinsSent, twinsAcked atomic.Int64
	}
}

// Start checks the options, then starts every node in the background: each joins (if it has no
// certificate yet), connects at Rate, and keeps its link up until Stop. Progress is in Stats.
func Start(ctx context.Context, o Options) (*Sim, error) {
	o = o.withDefaults()
	switch {
	case o.Nodes <= 0:
		return nil, fmt.Errorf("nodes %d: want at least 1", o.Nodes)
	case o.HubAddress == "":
		return nil, errors.New("no hub address (cloudcore's :10000, host:port)")
	case o.CertDir == "":
		return nil, errors.New("no certificate folder (where each node's certificate is kept)")
	case o.Nodes > 1 && o.Heartbeat < 100*time.Millisecond:
		return nil, fmt.Errorf("heartbeat %s: want at least 100ms", o.Heartbeat)
	}
	if err := pki.CheckNodeName(o.Prefix + "-00000"); err != nil {
		return nil, fmt.Errorf("prefix %q: %w", o.Prefix, err)
	}
	if err := os.MkdirAll(o.CertDir, 0o700); err != nil {
		return nil, fmt.Errorf("certificate folder: %w", err)
	}
	m, err := newSimMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &Sim{o: o, limiter: rate.NewLimiter(rate.Limit(o.Rate), o.Burst), joinSem: make(chan struct{}, o.JoinParallel), m: m, cancel: cancel}
	s.nodes = make([]*node, o.Nodes)
	for i := range s.nodes {
		s.nodes[i] = newNode(s, i, NodeName(o.Prefix, i))
	}
	m.bind(s)
	for _, n := range s.nodes {
		s.wg.Go(func() { n.run(ctx) })
	}
	return s, nil
}

// NodeName is the name of hollow node i.
func NodeName(prefix string, i int) string { return fmt.Sprintf("%s-%05d", prefix, i) }

// Stop closes every link and waits for the nodes to end.
func (s *Sim) Stop() {
	s.cancel()
	s.wg.Wait()
}

// Nodes are the names of the hollow nodes, in order.
func (s *Sim) Nodes() []string {
	out := make([]string, len(s.nodes))
	for i, n := range s.nodes {
		out[i] = n.name
	}
	return out
}

// Pending is how many upstream messages of all nodes wait for the cloud's acknowledgement now
// (0: the cloud is handling nothing these nodes sent).
func (s *Sim) Pending() int {
	total := 0
	for _, n := range s.nodes {
		n.mu.Lock()
		total += len(n.pending)
		n.mu.Unlock()
	}
	return total
}

// Stats returns the counters now.
func (s *Sim) Stats() Stats {
	st := &s.stats
	return Stats{Nodes: len(s.nodes), Joined: st.joined.Load(), Connected: st.connected.Load(), Reported: st.reported.Load(), ReportedOnLink: st.reportedOnLink.Load(),
		Connects: st.connects.Load(), Disconnects: st.disconnects.Load(), DialErrors: st.dialErrors.Load(),
		MsgsIn: st.msgsIn.Load(), MsgsOut: st.msgsOut.Load(), Resent: st.resent.Load(), Refused: st.refused.Load(),
		PodsHeld: st.podsHeld.Load(), PodsRunning: st.podsRunning.Load(), PodsDeleted: st.podsDeleted.Load(), PodsReported: st.podsReported.Load(),
		TwinsSent: st.twinsSent.Load(), TwinsAcked: st.twinsAcked.Load()}
}

func (st Stats) String() string {
	out := fmt.Sprintf("joined %d/%d connected %d reported %d (on this link %d) | links +%d -%d dialErr %d | msgs in %d out %d resent %d refused %d | pods held %d running %d deleted %d",
		st.Joined, st.Nodes, st.Connected, st.Reported, st.ReportedOnLink, st.Connects, st.Disconnects, st.DialErrors,
		st.MsgsIn, st.MsgsOut, st.Resent, st.Refused, st.PodsHeld, st.PodsRunning, st.PodsDeleted)
	if st.TwinsSent > 0 {
		out += fmt.Sprintf(" | twins sent %d acked %d", st.TwinsSent, st.TwinsAcked)
	}
	return out
}

// credentials returns node n's TLS config: from CertDir, or joined now.
func (s *Sim) credentials(ctx context.Context, n *node) (*tls.Config, error) {
	dir := filepath.Join(s.o.CertDir, n.name)
	certFile, keyFile, caFile := filepath.Join(dir, pki.NodeCertFile), filepath.Join(dir, pki.NodeKeyFile), filepath.Join(dir, pki.NodeCAFile)
	if _, err := os.Stat(certFile); err != nil {
		if len(s.o.Tokens) == 0 {
			return nil, fmt.Errorf("node %s has no certificate in %s and no join token was given (--token, from 'cloudcore token create --uses N')", n.name, dir)
		}
		if s.o.CertServer == "" {
			return nil, errors.New("no certificate server address (cloudcore's :10002) to join at")
		}
		select {
		case s.joinSem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		_, err := pki.Join(ctx, pki.JoinOptions{CertServer: s.o.CertServer, Token: s.o.Tokens[n.index%len(s.o.Tokens)], NodeName: n.name, Dir: dir})
		<-s.joinSem
		if err != nil {
			return nil, fmt.Errorf("join %s: %w", n.name, err)
		}
	}
	kp, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", n.name, err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", n.name, err)
	}
	pool, err := s.caPool(caPEM)
	if err != nil {
		return nil, fmt.Errorf("node %s: %s: %w", n.name, caFile, err)
	}
	kp.Leaf = nil // parsed again on demand; saves a copy per node
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{kp}, RootCAs: pool}, nil
}

// caPool parses the cluster CA once for every node that holds the same one.
func (s *Sim) caPool(caPEM []byte) (*x509.CertPool, error) {
	s.poolMu.Lock()
	defer s.poolMu.Unlock()
	if p, ok := s.pools[string(caPEM)]; ok {
		return p, nil
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("holds no PEM certificate")
	}
	if s.pools == nil {
		s.pools = map[string]*x509.CertPool{}
	}
	s.pools[string(caPEM)] = p
	return p, nil
}

// jitter returns a random wait in (0, bound], full jitter.
func jitter(bound time.Duration) time.Duration {
	return time.Duration(rand.Int64N(int64(bound))) + 1
}
