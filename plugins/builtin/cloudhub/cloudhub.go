// Package cloudhub is the cloud end of the edge link: an mTLS websocket server (:10000) that takes
// each node's identity from its certificate, and the certificate server (:10002) that issues those
// certificates. Downstream it keeps one queue per node, coalesced by object so a node that reconnects
// gets the latest version of each object once, sends a window of messages and resends what is not
// acknowledged; upstream it hands each message to the cloud module that owns its group and
// acknowledges it with that module's answer.
package cloudhub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/kedge-io/kedge/sdk/kube"
	"log"
	"net"
	"net/http"
	"path"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/host/hub/quichub"
	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/host/pki/kubestore"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// Name is the module's routing address; its group is "hub".
const Name = "cloudhub"

func init() {
	sdk.Register(sdk.Info{
		Name:    Name,
		Group:   "hub",
		Doc:     "Serves edge nodes: mTLS websocket hub (:10000) in KubeEdge's wire format, certificate server (:10002), reliable delivery.",
		Enabled: true,
		New:     func() sdk.Module { return New() },
	})
}

// Module is cloudhub; its exported fields are its settings.
type Module struct {
	Address            string        `yaml:"address" doc:"Hub listen address (edge nodes dial wss://<host>:10000)." cfg:"min"`
	CertServerAddress  string        `yaml:"certServerAddress" doc:"Certificate server listen address (join and renewal, https://<host>:10002)." cfg:"min"`
	PKIDir             string        `yaml:"pkiDir" doc:"Folder of the CA, its token secret, the join-token and node-certificate records (tokens/, nodes/) and the serving certificate (created on first start, mode 0700); with caSecret enabled, of the serving certificate only."`
	CASecret           CASecret      `yaml:"caSecret" doc:"Keep the CA and the join-token secret in a Kubernetes Secret, and the join-token and node-certificate records in Secrets beside it, shared by every cloudcore replica."`
	AdvertiseAddresses []string      `yaml:"advertiseAddresses" doc:"IPs and DNS names edge nodes use to reach this cloudcore (the serving certificate covers them, plus 127.0.0.1 and localhost)." cfg:"min"`
	NodeCertValidity   time.Duration `yaml:"nodeCertValidity" doc:"Lifetime of issued node certificates (nodes renew at 70-90% of it)."`
	Heartbeat          time.Duration `yaml:"heartbeat" doc:"Ping period both ways; a node silent for two periods is disconnected."`
	Window             int           `yaml:"window" doc:"Messages sent to a node but not yet acknowledged, at most."`
	AckTimeout         time.Duration `yaml:"ackTimeout" doc:"A message not acknowledged within this is sent again (its latest version); each further resend on the same connection waits twice as long, up to 16 times this. A reconnect resends at once."`
	HandleTimeout      time.Duration `yaml:"handleTimeout" doc:"How long a message from the edge may wait for the cloud module handling it before the node's next message is taken (it stays queued for that module)."`
	QPS                float64       `yaml:"qps" doc:"Messages per second sent to one node, sustained."`
	Burst              int           `yaml:"burst" doc:"Messages that may be sent to one node at once above qps."`
	// Dispatch maps a message group from the edge to the cloud module that handles it.
	Dispatch    map[string]string `yaml:"dispatch" doc:"Message group from the edge -> cloud module that handles and acknowledges it."`
	EventsGroup string            `yaml:"eventsGroup" doc:"Group told when a node connects or disconnects, and given each node's inventory (nobody in it is fine)."`
	ForgetAfter time.Duration     `yaml:"forgetAfter" doc:"A node that has been disconnected, with nothing queued for it, for this long is forgotten (its queue state and its record of recent upstream message IDs), so churned node names do not hold memory forever."`
	// KubeEdgeNodes forces KubeEdge's delivery on nodes; KubeEdge's edgecore is recognised at the
	// handshake without it.
	KubeEdgeNodes []string `yaml:"kubeedgeNodes" doc:"Not needed: a KubeEdge edgecore is recognised at the handshake (it offers no kedge.hub.v1 subprotocol) and served on KubeEdge's JSON lane with KubeEdge's delivery: the edge controller's objects resent until the edge answers them, everything else sent once. Nodes listed here (names or path.Match patterns like ke-*) get that delivery even on the Kedge lane."`
	// QUIC is the QUIC lane (quic.go), off by default as in KubeEdge's cloudcore.
	QUIC QUIC `yaml:"quic" doc:"The hub on QUIC (UDP, KubeEdge's port 10001): same CA, node certificates and authorization as the websocket hub."`
	// RegistryDir is a plugin registry folder served to edge nodes on the certificate server.
	// Ownership records which replica holds which node (several cloudcore replicas; ownership.go).
	DrainPeriod   time.Duration `yaml:"drain" doc:"On stop (SIGTERM), close the connected nodes' sessions one at a time spread over this long, so they reconnect to the other replicas without a stampede (keep it below shutdownTimeout); 0: all at once."`
	Ownership     Ownership     `yaml:"ownership" doc:"Several cloudcore replicas: which replica holds which node, in Leases of the Kubernetes API (see the README, Running several replicas)."`
	MaxHandshakes int           `yaml:"maxHandshakes" doc:"Hub connections being admitted at once (TLS handshake, websocket upgrade, record check); more wait in the kernel's accept queue (listen backlog) and are accepted in arrival order as slots free (kedge_cloudhub_admission_full_total, kedge_cloudhub_admitting_connections). Bounds the CPU and memory a reconnect storm takes without turning edges away; connected nodes do not count."`
	// RecordCacheTTL bounds how long a node's join record is trusted from memory.
	RecordCacheTTL time.Duration `yaml:"recordCacheTTL" doc:"How long a node's join record (which certificates a replacing join revoked) is kept in memory for the connection check; a replacing join on this cloudcore drops it at once, one made through another replica is seen within this."`
	RegistryDir    string        `yaml:"registryDir" doc:"Plugin registry folder (plugin-registry: index.json, artifacts/) served on the certificate server under /registry/ to edge nodes with a node certificate of the cluster CA; empty: no registry."`

	host    sdk.Host
	ca      *pki.CA
	recs    pki.Records
	records *recordCache
	hubTLS  *tls.Config
	servers []*http.Server
	quicLn  *quichub.Listener
	wg      sync.WaitGroup
	life    context.Context
	metrics *metrics
	hubM    *hub.Metrics

	owners *owners       // nil unless ownership is enabled
	hubFwd *hubForwarder // sync requests for nodes held by another replica (forward.go); nil without ownership

	mu    sync.Mutex
	nodes map[string]*node
	// laneTargets are the dispatch targets in name order: a session's lanes 1.. (node.go, laneOf).
	laneTargets []string
	admit       *admitListener
	stopping    bool // set by Stop: no new sessions (their WaitGroup is being waited on)

	events eventGate
}

// eventGate holds node events while cloudcore is still starting its modules: cloudhub starts first
// and edges connect at once, and an event sent before the events group's members have started
// reaches nobody (a controller that never hears of a connection or an inventory sends the node
// nothing until it reconnects). Held events go out in the order they happened once every module has
// started; after that, events are sent as they happen.
type eventGate struct {
	mu   sync.Mutex
	open bool
	held []sdk.Message
}

var _ sdk.Module = (*Module)(nil)

// CASecret says where in Kubernetes the CA lives when it is not in pkiDir.
type CASecret struct {
	Enable     bool   `yaml:"enable" doc:"Keep the CA (ca.crt, ca.key) and the token secret (token.secret) in the Secret below, created on first start (type Opaque); the serving certificate stays in pkiDir."`
	Kubeconfig string `yaml:"kubeconfig" doc:"Path of the kubeconfig for the API server; empty: $KUBECONFIG, else the in-cluster service account."`
	Namespace  string `yaml:"namespace" doc:"Namespace of the Secret (must exist)."`
	Name       string `yaml:"name" doc:"Name of the Secret."`
	// QPS and Burst bound this client's requests: a join writes its records, and a node connecting
	// to a replica that has not seen it for recordCacheTTL reads its record, so a failover of
	// thousands of nodes is as many reads at once (client-go's default, 5/s, made it minutes).
	QPS   float32 `yaml:"qps" doc:"Requests per second to the API server for the CA, token and node records, sustained (a failover reads one record per node that moved); 0: 100."`
	Burst int     `yaml:"burst" doc:"Requests above qps at once; 0: 200."`
}

// New returns cloudhub with its defaults.
func New() *Module {
	return &Module{
		Address:           "0.0.0.0:10000",
		CertServerAddress: "0.0.0.0:10002",
		PKIDir:            "/var/lib/kedge/pki",
		NodeCertValidity:  pki.DefaultNodeCertValidity,
		Heartbeat:         15 * time.Second,
		Window:            64,
		AckTimeout:        15 * time.Second,
		HandleTimeout:     time.Minute,
		QPS:               200,
		Burst:             400,
		Dispatch: map[string]string{
			"resource": "edgecontroller", "meta": "edgecontroller", "twin": "devicecontroller",
			"plugin": "rolloutcontroller",
		},
		EventsGroup:    "hubevents",
		ForgetAfter:    10 * time.Minute,
		RecordCacheTTL: time.Minute,
		MaxHandshakes:  512,
		CASecret:       CASecret{Namespace: kubestore.DefaultCASecretNamespace, Name: kubestore.DefaultCASecretName, QPS: 100, Burst: 200},
		Ownership:      DefaultOwnership(),
		QUIC:           QUIC{Address: "0.0.0.0:10001"},
		nodes:          map[string]*node{},
	}
}

func (m *Module) Start(ctx context.Context, h sdk.Host) error {
	m.host, m.life = h, ctx
	if m.Window <= 0 || m.Heartbeat <= 0 || m.AckTimeout <= 0 || m.HandleTimeout <= 0 || m.QPS <= 0 || m.Burst <= 0 || m.ForgetAfter <= 0 || m.RecordCacheTTL <= 0 || m.MaxHandshakes <= 0 {
		return errors.New("window, heartbeat, ackTimeout, handleTimeout, qps, burst, forgetAfter, recordCacheTTL and maxHandshakes must be positive")
	}
	if m.nodes == nil {
		m.nodes = map[string]*node{}
	}
	m.setLanes()
	m.events.mu.Lock()
	m.events.open, m.events.held = false, nil
	m.events.mu.Unlock()
	for _, p := range m.KubeEdgeNodes {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("kubeedgeNodes: %q is not a valid name pattern: %w", p, err)
		}
	}
	var err error
	if m.metrics, err = newMetrics(h.Metrics(), m); err != nil {
		return err
	}
	if m.hubM, err = hub.NewMetrics(h.Metrics()); err != nil {
		return err
	}
	st := pki.FileStorage{Dir: m.PKIDir}
	caSt, recs, err := m.Stores()
	if err != nil {
		return err
	}
	ca, created, err := pki.LoadOrCreateCA(ctx, caSt)
	if err != nil {
		return err
	}
	m.records = newRecordCache(recs, m.RecordCacheTTL, m.metrics.recordLookups)
	recs = invalidatingRecords{Records: recs, cache: m.records}
	m.ca, m.recs = ca, recs
	if created {
		h.Logger().Info("created the cluster CA for edge nodes", "in", caSt.String(), "hash", ca.Hash())
	} else {
		h.Logger().Info("loaded the cluster CA", "from", caSt.String(), "hash", ca.Hash())
	}
	var ips []net.IP
	var names []string
	for _, a := range m.AdvertiseAddresses {
		if ip := net.ParseIP(a); ip != nil {
			ips = append(ips, ip)
		} else {
			names = append(names, a)
		}
	}
	serving, err := pki.NewServerCert(ctx, ca, st, pki.ServerCertOptions{IPs: ips, DNSNames: names, Logger: h.Logger()})
	if err != nil {
		return err
	}
	certs, err := pki.NewCertServer(pki.CertServerOptions{CA: ca, Records: recs, Validity: m.NodeCertValidity, Logger: h.Logger(), Registerer: h.Metrics()})
	if err != nil {
		return err
	}
	certHandler, err := m.certServerHandler(certs) // before listening: a bad registryDir fails the start cleanly
	if err != nil {
		return err
	}
	if err := m.startOwnership(ctx); err != nil {
		return err
	}
	if err := m.startHubForward(ca); err != nil {
		return err
	}
	m.hubTLS = pki.ServerTLSConfig(ca, serving)
	// A refused client certificate ends in the TLS handshake, before accept: counted from the server's error log.
	hubLog := pki.HandshakeErrorLog(h.Logger(), "hub", func(reason string) { m.metrics.rejectedBy.WithLabelValues(reason).Inc() })
	admit := func(ln net.Listener) net.Listener {
		l := newAdmitListener(ln, m.MaxHandshakes, m.metrics.admissionFull.Inc)
		m.mu.Lock()
		m.admit = l
		m.mu.Unlock()
		return l
	}
	if err := m.listen(&m.Address, m.hubTLS, http.HandlerFunc(m.accept), hubLog, admit); err != nil {
		return err
	}
	if err := m.listen(&m.CertServerAddress, pki.CertServerTLSConfig(serving), certHandler, nil, nil); err != nil {
		return err
	}
	if err := m.listenQUIC(pki.ServerTLSConfig(ca, serving)); err != nil { // its own copy: http.Server edits hubTLS
		return err
	}
	h.Logger().Info("serving edge nodes", "hub", m.Address, "certs", m.CertServerAddress, "joinRecords", recs.String())
	m.wg.Go(m.sweep)
	m.wg.Go(m.releaseEvents)
	return nil
}

// sweep forgets idle nodes until the module stops, checking a few times per forgetAfter (at least
// once a minute).
func (m *Module) sweep() {
	tick := time.NewTicker(min(max(m.ForgetAfter/4, 10*time.Millisecond), time.Minute))
	defer tick.Stop()
	for {
		select {
		case <-m.life.Done():
			return
		case now := <-tick.C:
			m.forget(now)
		}
	}
}

// forget removes the nodes that have been disconnected with an empty queue for forgetAfter as of now.
func (m *Module) forget(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.records.sweep(now)
	for name, n := range m.nodes {
		if n.forgettable(now, m.ForgetAfter) {
			delete(m.nodes, name)
			m.metrics.forgotten.Inc()
		}
	}
}

// isKubeEdge says whether node runs KubeEdge's edgecore (kubeedgeNodes).
func (m *Module) isKubeEdge(node string) bool {
	for _, p := range m.KubeEdgeNodes {
		if ok, _ := path.Match(p, node); ok {
			return true
		}
	}
	return false
}

// CreateToken makes a join token recorded where this started cloudhub's certificate server checks
// it (what 'cloudcore token create' does; for tests and embedders).
func (m *Module) CreateToken(ctx context.Context, opts pki.TokenOptions) (pki.Token, error) {
	if m.ca == nil {
		return pki.Token{}, errors.New("cloudhub is not started")
	}
	tok, _, err := pki.CreateToken(ctx, m.ca, m.recs, opts)
	return tok, err
}

// CAStorage returns where the CA and the token secret live: the Secret of caSecret when it is
// enabled, else pkiDir. The serving certificate always stays in pkiDir.
func (m *Module) CAStorage() (pki.Storage, error) {
	st, _, err := m.Stores()
	return st, err
}

// Stores returns where the CA lives (CAStorage) and, beside it, where the join tokens and the
// certificates issued per node are recorded: Secrets in caSecret's namespace when caSecret is
// enabled (shared by every replica), else files in pkiDir (tokens/, nodes/).
func (m *Module) Stores() (pki.Storage, pki.Records, error) {
	if !m.CASecret.Enable {
		return pki.FileStorage{Dir: m.PKIDir}, pki.FileRecords{Dir: m.PKIDir}, nil
	}
	if m.CASecret.Namespace == "" || m.CASecret.Name == "" {
		return nil, nil, errors.New("caSecret: namespace and name must be set when it is enabled")
	}
	cfg, err := kube.RestConfig(m.CASecret.Kubeconfig, "modules.cloudhub.caSecret.kubeconfig")
	if err != nil {
		return nil, nil, fmt.Errorf("caSecret: %w", err)
	}
	cfg.QPS, cfg.Burst = m.CASecret.QPS, m.CASecret.Burst
	if cfg.QPS <= 0 {
		cfg.QPS = 100
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 200
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("caSecret: %w", err)
	}
	secrets := client.CoreV1().Secrets(m.CASecret.Namespace)
	return kubestore.SecretStorage{Secrets: secrets, Namespace: m.CASecret.Namespace, Name: m.CASecret.Name},
		kubestore.SecretRecords{Secrets: secrets, Namespace: m.CASecret.Namespace}, nil
}

// listen binds addr before returning (a taken port fails Start) and serves TLS on it.
func (m *Module) listen(addr *string, cfg *tls.Config, h http.Handler, errLog *log.Logger, admit func(net.Listener) net.Listener) error {
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *addr, err)
	}
	*addr = ln.Addr().String() // the bound address, when the config asked for port 0
	srv := &http.Server{Handler: h, TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	if admit != nil {
		ln = admit(ln)
		srv.ConnState = admissionDone
	}
	m.servers = append(m.servers, srv)
	m.wg.Go(func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.host.Logger().Error("server stopped", "address", *addr, "err", err)
		}
	})
	return nil
}

func (m *Module) Stop(ctx context.Context) error {
	m.stopQUIC()
	for _, s := range m.servers {
		_ = s.Shutdown(ctx) // hijacked websocket connections are closed by their sessions
	}
	m.mu.Lock()
	m.stopping = true
	for _, n := range m.nodes {
		n.detach(nil)
	}
	m.mu.Unlock()
	m.wg.Wait()
	if m.owners != nil {
		m.owners.stop(ctx)
	}
	return nil
}

// accept upgrades a node's connection; the node's identity is its certificate's.
func (m *Module) accept(w http.ResponseWriter, r *http.Request) {
	if m.refuseRevoked(w, r) {
		return
	}
	conn, err := hub.Accept(w, r, hub.AcceptOptions{Options: hub.Options{Heartbeat: m.Heartbeat, Metrics: m.hubM, Logger: m.host.Logger()}})
	if err != nil {
		m.metrics.rejected.Inc()
		m.host.Logger().Warn("edge connection refused", "err", err)
		return
	}
	m.serveConn(conn)
}

// serveConn runs an accepted connection (websocket or QUIC) as the node's session.
func (m *Module) serveConn(conn *hub.Conn) {
	m.mu.Lock()
	if m.stopping {
		m.mu.Unlock()
		_ = conn.Close()
		return
	}
	m.wg.Add(1)
	m.mu.Unlock()
	var n *node
	var s *session
	for s == nil { // a node forgotten meanwhile takes no session: make a new one
		n = m.node(conn.Node())
		s = n.attach(conn)
	}
	m.metrics.connects.Inc()
	m.host.Logger().Info("node connected", "node", n.name, "remote", conn.RemoteAddr())
	m.event(n.name, message.OpConnected, connectedContent(s))
	go func() {
		defer m.wg.Done()
		err := m.run(s)
		n.detach(s)
		m.host.Logger().Info("node disconnected", "node", n.name, "err", err)
		m.event(n.name, message.OpDisconnected, nil)
	}()
}

func (m *Module) node(name string) *node {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.nodes[name]
	if !ok {
		n = newNode(name, m)
		m.nodes[name] = n
	}
	return n
}

// Handle queues a message for the node its resource names (node/<node>/<ns>/<type>[/<name>]).
func (m *Module) Handle(_ context.Context, msg sdk.Message) error {
	node, edge, err := message.ToEdge(msg.Route.Resource)
	if n, e, ok := kubeEdgeDeviceDown(msg.Route.Resource); err != nil && ok {
		node, edge, err = n, e, nil
	}
	if err != nil {
		return fmt.Errorf("message for the edge from %s: %w", msg.Route.Source, err)
	}
	if msg.Header.Sync && !msg.IsReply() && !m.holds(node) {
		// Someone on this replica waits for the answer: the replica holding the node is asked, or
		// the request is refused now (forward.go).
		m.routeElsewhere(node, msg)
		return nil
	}
	msg.Route.Resource = edge        // the edge sees its own resource form
	for !m.node(node).enqueue(msg) { // a node forgotten meanwhile takes nothing: make a new one
	}
	return nil
}

// event tells the events group about a node; nobody listening is fine.
func (m *Module) event(node, op string, content []byte) {
	msg := message.New(Name, "hub", op, message.Resource{Node: node, Namespace: "-", Type: "connection", Name: node}.Cloud())
	msg.Content = content
	if op == message.OpConnected || op == message.OpDisconnected {
		m.owners.changed(node)
	}
	m.events.mu.Lock()
	if !m.events.open {
		m.events.held = append(m.events.held, msg)
		m.events.mu.Unlock()
		m.metrics.eventsHeld.Inc()
		return
	}
	m.events.mu.Unlock()
	m.sendEvent(msg)
}

func (m *Module) sendEvent(msg sdk.Message) {
	if err := m.host.SendToGroup(m.life, m.EventsGroup, msg); err != nil && !errors.Is(err, sdk.ErrUnknownModule) {
		m.host.Logger().Warn("node event not delivered", "node", msg.Route.Resource, "event", msg.Route.Operation, "err", err)
	}
}

// releaseEvents opens the event gate once the host has started every module (at once when the host
// cannot say), sending what was held in order; events arriving meanwhile queue behind them.
func (m *Module) releaseEvents() {
	if sw, ok := m.host.(sdk.StartWaiter); ok {
		select {
		case <-sw.Started():
		case <-m.life.Done():
			return
		}
	}
	for {
		m.events.mu.Lock()
		held := m.events.held
		m.events.held = nil
		if len(held) == 0 {
			m.events.open = true
			m.events.mu.Unlock()
			return
		}
		m.events.mu.Unlock()
		for _, msg := range held {
			m.sendEvent(msg)
		}
	}
}
