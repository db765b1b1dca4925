package cloudhub

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// Messages for a node held by another replica. Cloud modules send a node's messages to their own
// replica's cloudhub. Two kinds reach a replica that does not hold the node:
//
//   - Messages about API objects (the edge controller's pods, ConfigMaps, Secrets, Services, Nodes;
//     devicecontroller's devices, models and membership; rollouts): every replica derives them from
//     its own informers, so the replica holding the node sends its own copy. Here they stay queued as
//     for any node not connected (coalesced to the latest version), and are dropped when the node's
//     ownership Lease shows another replica took it (ownership.go). They are not forwarded: each
//     object change would otherwise reach the holder once per replica.
//   - Sync requests (a cloud module waits for the edge's answer, e.g. cloudbus's servicebus calls
//     made on this replica): only this replica has it. It is forwarded, one hop, to the replica the
//     node's ownership Lease names, when that replica is alive: POST HubForwardPath on its forward
//     server (cloudstream's, the same mTLS server with replica certificates of the cluster CA that
//     carries kubectl streams), which hands it to its cloudhub and answers with the edge's reply;
//     the reply is delivered here to the module waiting for it. A request relayed that way is never
//     forwarded again (its source is the relay module). A sync request for a node that nobody holds
//     is answered at once with an error (reason node_offline) instead of waiting in a queue.

// HubForwardPath is the path of the forward server that takes a message for a node the replica holds.
const HubForwardPath = "/hub/messages"

// ForwardTimeoutHeader carries, in milliseconds, how long the forwarding replica waits for the answer.
const ForwardTimeoutHeader = "X-Kedge-Forward-Timeout-Ms"

// RelayModule is the module that serves HubForwardPath and hands forwarded messages to cloudhub;
// a message from it was forwarded once already.
const RelayModule = "cloudstream"

// ReasonNodeOffline is the reason of the error answer to a sync request for a node no replica holds.
const ReasonNodeOffline = "node_offline"

// ReasonForwardFailed is the reason of the error answer when the replica holding the node could not be asked.
const ReasonForwardFailed = "forward_failed"

type hubForwarder struct {
	client   *http.Client
	identity string
	results  *prometheus.CounterVec
}

// startHubForward makes this replica's client for forwarding: a replica certificate of the cluster
// CA (the forward servers accept only those) and the peer check that the server is a replica too.
func (m *Module) startHubForward(ca *pki.CA) error {
	if m.owners == nil {
		return nil
	}
	id := m.owners.cfg.Identity
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	cert, err := ca.IssueReplicaCert(&key.PublicKey, id, []net.IP{net.IPv4(127, 0, 0, 1)}, nil, 365*24*time.Hour)
	if err != nil {
		return fmt.Errorf("ownership: replica certificate for forwarding: %w", err)
	}
	own := tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{own}, RootCAs: ca.Pool(),
		NextProtos: []string{"http/1.1"},
		// The forward address need not be a name in the peer's certificate (a pod IP that changed):
		// what matters is that the peer is a replica of this cluster's CA, checked here.
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
	f := &hubForwarder{identity: id,
		client: &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: false,
			TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSHandshakeTimeout: 5 * time.Second, IdleConnTimeout: time.Minute, MaxIdleConnsPerHost: 16}},
		results: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_cloudhub_forwards_total",
			Help: "Sync requests for a node this replica does not hold, by result: ok (forwarded to the replica holding it, which answered), error (that replica could not be asked), offline (no live replica holds the node: answered at once with node_offline)."}, []string{"result"}),
	}
	if err := m.host.Metrics().Register(f.results); err != nil {
		return err
	}
	m.hubFwd = f
	return nil
}

// holds says whether this replica has a session for node now.
func (m *Module) holds(node string) bool {
	m.mu.Lock()
	n, ok := m.nodes[node]
	m.mu.Unlock()
	if !ok {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sess != nil
}

// routeElsewhere takes a sync request (msg, in the cloud's resource form) for node, which this
// replica does not hold: it is forwarded to the live replica holding it, or answered with
// node_offline (also when it was relayed here from another replica: one hop only).
func (m *Module) routeElsewhere(node string, msg message.Message) {
	if m.hubFwd != nil && msg.Route.Source != RelayModule {
		if ow, ok := m.OwnerOf(node); ok && ow.Alive && ow.Identity != m.hubFwd.identity && ow.ForwardAddress != "" {
			m.wg.Go(func() { m.forwardSync(node, ow, msg) })
			return
		}
	}
	if m.hubFwd != nil {
		m.hubFwd.results.WithLabelValues("offline").Inc()
	}
	where := "this cloudcore"
	if m.owners != nil {
		where = "any live cloudcore replica"
	}
	m.answer(msg, ReasonNodeOffline, fmt.Sprintf("is not connected to %s (the request is not queued)", where))
}

// answer replies to the sync request msg with an error of reason.
func (m *Module) answer(msg message.Message, reason, text string) {
	r, _ := msg.Reply(Name, map[string]string{"error": text, "reason": reason})
	r.Route.Operation = message.OpError
	if err := m.host.Reply(m.life, r); err != nil && !errors.Is(err, sdk.ErrNoWaiter) && !errors.Is(err, sdk.ErrUnknownModule) {
		m.host.Logger().Warn("answer to a cloud module not delivered", "msg", msg.String(), "err", err)
	}
}

// forwardSync sends msg to the replica ow and delivers its answer to the module waiting here.
func (m *Module) forwardSync(node string, ow Owner, msg message.Message) {
	f := m.hubFwd
	fail := func(err error) {
		f.results.WithLabelValues("error").Inc()
		m.host.Logger().Warn("sync request not forwarded to the replica holding the node", "node", node, "replica", ow.Identity, "err", err)
		m.answer(msg, ReasonForwardFailed, fmt.Sprintf("is held by replica %s, which could not be asked: %v", ow.Identity, err))
	}
	body, err := message.Encode(msg)
	if err != nil {
		fail(err)
		return
	}
	ctx, cancel := context.WithTimeout(m.life, m.owners.cfg.ForwardTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+ow.ForwardAddress+HubForwardPath, bytes.NewReader(body))
	if err != nil {
		fail(err)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(ForwardTimeoutHeader, strconv.FormatInt(m.owners.cfg.ForwardTimeout.Milliseconds(), 10))
	resp, err := f.client.Do(req)
	if err != nil {
		fail(err)
		return
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, message.MaxSize+1))
	if err != nil {
		fail(err)
		return
	}
	if resp.StatusCode != http.StatusOK {
		fail(fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(data)))
		return
	}
	reply, err := message.Decode(data)
	if err != nil {
		fail(err)
		return
	}
	if reply.Header.ParentID != msg.Header.ID {
		fail(fmt.Errorf("its answer %s answers %q, not %s", reply.Header.ID, reply.Header.ParentID, msg.Header.ID))
		return
	}
	f.results.WithLabelValues("ok").Inc()
	reply.Route.Destination = msg.Route.Source
	if err := m.host.Reply(m.life, reply); err != nil && !errors.Is(err, sdk.ErrNoWaiter) && !errors.Is(err, sdk.ErrUnknownModule) {
		m.host.Logger().Warn("forwarded answer not delivered", "node", node, "err", err)
	}
}
