// Package quichub is the hub's QUIC lane: viaduct's stream layout over IETF QUIC (RFC 9000,
// quic-go) under a hub.Conn. It is apart from host/hub so that only the builds that serve or dial QUIC
// link quic-go: cloudcore's cloudhub, and edgehub in an edgecore built with the quic feature (see
// cmd/modules.yaml; the minimal and gateway classes leave it out).
package quichub

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/host/message"
)

// The QUIC lane (see README "QUIC"): viaduct's stream layout over IETF QUIC (RFC 9000, quic-go).
//
//   - The client opens the first bidirectional stream, the control stream (no prefix), and writes a
//     "header" message on it whose content is the JSON of its handshake headers (node_id,
//     project_id); the server answers with a "response" message, content "ack".
//   - Messages travel on other bidirectional streams. Whoever opens one first writes its 3-byte use,
//     "msg", then frames: the 10-byte header and the protobuf payload, back to back. Each side reads
//     every stream the peer opens and the one it opened itself.
//
// The lane (Kedge's acknowledged protocol or KubeEdge's semantics) is chosen by ALPN.
const (
	// DefaultQUICPort is KubeEdge's QUIC port (cloudHub.quic.port).
	DefaultQUICPort = 10001

	// ALPNKedge is the TLS application protocol a Kedge edge offers on QUIC to get the Kedge lane.
	ALPNKedge = hub.Subprotocol
	// ALPNViaduct is the application protocol of KubeEdge's lane semantics over IETF QUIC. KubeEdge
	// v1.23.1 itself speaks Google QUIC (see ErrGoogleQUIC) and so never offers it; it is Kedge's name.
	ALPNViaduct = "kubeedge.viaduct"

	quicUseMessage = "msg" // viaduct's stream use types are 3 bytes: msg, str (stream), shr (shared)
	quicUseLen     = len(quicUseMessage)

	controlHeader   = "header"   // viaduct's control message resource and operation
	controlResponse = "response" // the operation of its answer
	controlAck      = "ack"      // the answer's content
)

// QUIC application error codes sent with CONNECTION_CLOSE: the websocket close code of the same
// meaning (1000 normal, 1001 going away, 1002 protocol, 1007 bad payload, 1009 too big), 4003 for a
// refused identity.
const (
	quicCodeRefused quic.ApplicationErrorCode = 4003
)

// ErrGoogleQUIC is wrapped by the error for a peer that speaks Google QUIC (gQUIC, versions
// Q039/Q043/Q044/Q046), which KubeEdge v1.23.1 does: it links lucas-clemente/quic-go v0.10.1, whose
// handshake is QUIC crypto (a plaintext CHLO), not TLS 1.3. IETF QUIC cannot talk to it.
var ErrGoogleQUIC = errors.New("peer speaks Google QUIC (gQUIC), not IETF QUIC: KubeEdge's QUIC lane (quic-go v0.10.1) cannot be served over QUIC v1; use its websocket lane")

// GoogleQUICVersion reports whether datagram is a Google QUIC client packet carrying a version, and
// which ("Q044"): gQUIC Q046 and later put the version after a 0xff-style long-header byte, Q043
// and earlier after a public-flags byte with the version bit (0x01) and an 8-byte connection ID.
func GoogleQUICVersion(datagram []byte) (string, bool) {
	isQ := func(v []byte) bool {
		return len(v) == 4 && v[0] == 'Q' && v[1] >= '0' && v[1] <= '9' && v[2] >= '0' && v[2] <= '9' && v[3] >= '0' && v[3] <= '9'
	}
	if len(datagram) >= 5 && datagram[0]&0x80 != 0 && isQ(datagram[1:5]) { // long header, version "Qxyz"
		return string(datagram[1:5]), true
	}
	if len(datagram) >= 13 && datagram[0]&0x80 == 0 && datagram[0]&0x09 == 0x09 && isQ(datagram[9:13]) { // public header: version + 8-byte CID
		return string(datagram[9:13]), true
	}
	return "", false
}

// quicConfig is the QUIC transport config of both ends: keep-alive every heartbeat and an idle
// timeout of two, so a half-open link is noticed within two heartbeats as on websockets.
func quicConfig(o hub.Options, handshake time.Duration) *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout: handshake,
		MaxIdleTimeout:       2 * o.Heartbeat,
		KeepAlivePeriod:      o.Heartbeat,
		MaxIncomingStreams:   100, // viaduct opens up to 99
	}
}

// Listener serves the QUIC lane on a UDP port.
type Listener struct {
	pc     *gquicSniffer
	tr     *quic.Transport
	ln     *quic.Listener
	opts   hub.AcceptOptions
	out    chan acceptResult
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	cancel context.CancelFunc
}

type acceptResult struct {
	conn *hub.Conn
	err  error
}

// Listen binds addr (UDP) and serves the QUIC lane with tlsConf, which must require and verify
// client certificates (ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: the node CA), as for
// Accept. The node's identity is its certificate's; the control stream's node_id header must agree.
func Listen(addr string, tlsConf *tls.Config, o hub.AcceptOptions) (*Listener, error) {
	if tlsConf == nil || tlsConf.ClientAuth != tls.RequireAndVerifyClientCert {
		return nil, errors.New("listen quic: the TLS config must require and verify client certificates (tls.RequireAndVerifyClientCert)")
	}
	o.Options = o.Options.WithDefaults()
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 30 * time.Second
	}
	udp, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen quic %s: %w", addr, err)
	}
	cfg := tlsConf.Clone()
	cfg.MinVersion = tls.VersionTLS13 // QUIC is TLS 1.3 only
	cfg.NextProtos = []string{ALPNKedge, ALPNViaduct}
	l := &Listener{opts: o, out: make(chan acceptResult), done: make(chan struct{})}
	l.pc = &gquicSniffer{PacketConn: udp, logger: o.Logger, metrics: o.Metrics, seen: map[string]time.Time{}}
	l.tr = &quic.Transport{Conn: l.pc}
	l.ln, err = l.tr.Listen(cfg, quicConfig(o.Options, o.HandshakeTimeout))
	if err != nil {
		_ = udp.Close()
		return nil, fmt.Errorf("listen quic %s: %w", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	l.wg.Go(func() { l.acceptLoop(ctx) })
	return l, nil
}

// Addr is the bound UDP address.
func (l *Listener) Addr() net.Addr { return l.pc.LocalAddr() }

// Accept returns the next edge connection that completed the handshake, or an error wrapping
// hub.ErrRejected for one that was turned away (log it and call Accept again); any other error means
// the listener is closed.
func (l *Listener) Accept(ctx context.Context) (*hub.Conn, error) {
	select {
	case r := <-l.out:
		return r.conn, r.err
	case <-l.done:
		return nil, fmt.Errorf("accept quic: %w: listener closed", hub.ErrClosed)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close stops listening; connections already accepted stay open.
func (l *Listener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.cancel()
		_ = l.ln.Close()
		_ = l.tr.Close()
		_ = l.pc.Close()
	})
	l.wg.Wait()
	return nil
}

func (l *Listener) acceptLoop(ctx context.Context) {
	for {
		qc, err := l.ln.Accept(ctx)
		if err != nil {
			return
		}
		l.wg.Go(func() {
			c, err := l.handshake(ctx, qc)
			select {
			case l.out <- acceptResult{c, err}:
			case <-l.done:
				if c != nil {
					_ = c.Close()
				}
			}
		})
	}
}

// handshake checks the client's certificate, reads its control header and answers it.
func (l *Listener) handshake(ctx context.Context, qc *quic.Conn) (*hub.Conn, error) {
	m := l.opts.Metrics
	remote := qc.RemoteAddr().String()
	refuse := func(reason string, format string, args ...any) (*hub.Conn, error) {
		m.CountRejected(reason)
		msg := fmt.Sprintf(format, args...)
		_ = qc.CloseWithError(quicCodeRefused, truncate(msg, 200))
		return nil, fmt.Errorf("accept quic connection from %s: %w: %s", remote, hub.ErrRejected, msg)
	}
	st := qc.ConnectionState().TLS
	if len(st.VerifiedChains) == 0 {
		return refuse("no_cert", "a client certificate signed by the hub's CA is required")
	}
	node, err := hub.NodeFromCert(st.VerifiedChains[0][0])
	if err != nil {
		return refuse("cert", "%v", err)
	}
	hctx, cancel := context.WithTimeout(ctx, l.opts.HandshakeTimeout)
	defer cancel()
	ctrl, err := qc.AcceptStream(hctx)
	if err != nil {
		return refuse("header", "node %s opened no control stream within %s: %v", node, l.opts.HandshakeTimeout, err)
	}
	_ = ctrl.SetDeadline(time.Now().Add(l.opts.HandshakeTimeout))
	hm, err := hub.ReadQUICMessage(ctrl, l.opts.MaxPayload)
	if err != nil {
		return refuse("header", "node %s: control stream: %v", node, err)
	}
	if hm.Route.Operation != controlHeader {
		return refuse("header", "node %s: first control message has operation %q, want %q", node, hm.Route.Operation, controlHeader)
	}
	var hdr http.Header
	if len(hm.Content) > 0 {
		if err := json.Unmarshal(hm.Content, &hdr); err != nil {
			return refuse("header", "node %s: control header content is not a JSON header map: %v", node, err)
		}
	}
	if id := hdr.Get(hub.HeaderNodeID); id != "" && id != node {
		return refuse("identity", "certificate is for node %q but the node_id header says %q", node, id)
	}
	project := hdr.Get(hub.HeaderProjectID)
	if project == "" {
		project = hub.DefaultProjectID
	}
	resp := message.Message{
		Header:  message.Header{ID: message.NewID(), ParentID: hm.Header.ID, Timestamp: time.Now().UnixMilli()},
		Route:   message.Route{Source: hm.Route.Source, Group: hm.Route.Group, Operation: controlResponse, Resource: hm.Route.Resource},
		Content: json.RawMessage(`"` + controlAck + `"`),
	}
	b, err := hub.AppendQUICFrame(nil, resp)
	if err == nil {
		_, err = ctrl.Write(b)
	}
	if err != nil {
		_ = qc.CloseWithError(1001, "")
		return nil, fmt.Errorf("accept quic connection from %s (node %s): %w: answering the control header: %v", remote, node, hub.ErrRejected, err)
	}
	_ = ctrl.SetDeadline(time.Time{})
	lane := hub.LaneKubeEdge
	if st.NegotiatedProtocol == ALPNKedge {
		lane = hub.LaneKedge
	}
	return newQUICConn(qc, ctrl, lane, node, project, st.PeerCertificates, l.opts.Options), nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Dial connects an edge to a hub's QUIC lane at o.URL ("quic://host:10001" or "host:10001"):
// mTLS with o.TLS, then viaduct's control header carrying node_id and project_id. It offers ALPN
// kedge.hub.v1 (the Kedge lane) unless o.KubeEdgeLane is set.
func Dial(ctx context.Context, o hub.DialOptions) (*hub.Conn, error) {
	if o.ProjectID == "" {
		o.ProjectID = hub.DefaultProjectID
	}
	if err := hub.CheckNodeName(o.NodeID); err != nil {
		return nil, fmt.Errorf("dial quic hub: NodeID: %w", err)
	}
	addr := o.URL
	if strings.Contains(addr, "://") {
		u, err := url.Parse(addr)
		if err != nil {
			return nil, fmt.Errorf("dial quic hub: URL %q: %w", o.URL, err)
		}
		if u.Scheme != "quic" {
			return nil, fmt.Errorf("dial quic hub: URL %q: scheme must be quic", o.URL)
		}
		addr = u.Host
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial quic hub: address %q: %w", o.URL, err)
	}
	o.Options = o.Options.WithDefaults()
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 30 * time.Second
	}
	cfg := o.TLS.Clone()
	if cfg == nil {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	cfg.MinVersion = tls.VersionTLS13
	cfg.NextProtos = []string{ALPNKedge, ALPNViaduct}
	if o.KubeEdgeLane {
		cfg.NextProtos = []string{ALPNViaduct}
	}
	hctx, cancel := context.WithTimeout(ctx, o.HandshakeTimeout)
	defer cancel()
	qc, err := quic.DialAddr(hctx, addr, cfg, quicConfig(o.Options, o.HandshakeTimeout))
	if err != nil {
		var vn *quic.VersionNegotiationError
		if errors.As(err, &vn) {
			for _, v := range vn.Theirs {
				if uint32(v)>>24 == 'Q' { // gQUIC versions are "Qxyz" in ASCII
					return nil, fmt.Errorf("dial quic hub %s: %w (it offers %v): %v", addr, ErrGoogleQUIC, vn.Theirs, err)
				}
			}
		}
		var hto *quic.HandshakeTimeoutError
		var ito *quic.IdleTimeoutError
		if ctx.Err() == nil && (hctx.Err() != nil || errors.As(err, &hto) || errors.As(err, &ito)) {
			// Observed: KubeEdge v1.23.1's cloudcore (gQUIC) sends no version negotiation to an IETF
			// QUIC Initial, it drops it; all a client sees is silence.
			return nil, fmt.Errorf("dial quic hub %s: no QUIC answer within %s (%w): if the cloud is KubeEdge's cloudcore, it speaks Google QUIC and drops IETF QUIC packets without a word — use its websocket lane", addr, o.HandshakeTimeout, err)
		}
		return nil, fmt.Errorf("dial quic hub %s: %w", addr, err)
	}
	fail := func(format string, args ...any) (*hub.Conn, error) {
		_ = qc.CloseWithError(1002, "")
		return nil, fmt.Errorf("dial quic hub %s: "+format, append([]any{addr}, args...)...)
	}
	ctrl, err := qc.OpenStreamSync(hctx)
	if err != nil {
		return fail("opening the control stream: %w", err)
	}
	hdr := http.Header{}
	for k, vs := range o.Header {
		hdr[k] = vs
	}
	hdr.Set(hub.HeaderNodeID, o.NodeID)
	hdr.Set(hub.HeaderProjectID, o.ProjectID)
	content, _ := json.Marshal(hdr)
	hm := message.Message{
		Header:  message.Header{ID: message.NewID(), Timestamp: time.Now().UnixMilli()},
		Route:   message.Route{Operation: controlHeader, Resource: controlHeader},
		Content: content,
	}
	b, err := hub.AppendQUICFrame(nil, hm)
	if err != nil {
		return fail("control header: %w", err)
	}
	deadline, _ := hctx.Deadline()
	_ = ctrl.SetDeadline(deadline)
	if _, err := ctrl.Write(b); err != nil {
		return fail("writing the control header: %w", err)
	}
	resp, err := hub.ReadQUICMessage(ctrl, o.MaxPayload)
	if err != nil {
		var ae *quic.ApplicationError
		if errors.As(err, &ae) && ae.Remote {
			return nil, fmt.Errorf("dial quic hub %s: %w: the hub refused us: %s", addr, hub.ErrRejected, ae.ErrorMessage)
		}
		return fail("reading the answer to the control header: %w", err)
	}
	if resp.Route.Operation != controlResponse || resp.Header.ParentID != hm.Header.ID || string(resp.Content) != `"`+controlAck+`"` {
		return fail("the hub answered the control header with %s (parent %q, content %s), want a %q for %q with content %q",
			resp, resp.Header.ParentID, resp.Content, controlResponse, hm.Header.ID, controlAck)
	}
	_ = ctrl.SetDeadline(time.Time{})
	st := qc.ConnectionState().TLS
	lane := hub.LaneKubeEdge
	if st.NegotiatedProtocol == ALPNKedge {
		lane = hub.LaneKedge
	}
	return newQUICConn(qc, ctrl, lane, o.NodeID, o.ProjectID, st.PeerCertificates, o.Options), nil
}

// link is a hub.Link over a QUIC connection: the control stream, the message streams the peer opens
// and the one this side opens on its first send.
type link struct {
	qc   *quic.Conn
	ctrl *quic.Stream
	send *quic.Stream // the message stream this side opened, lazily; guarded by the Conn's send lock
	end  hub.LinkEnd
	opts hub.Options // with defaults
	node string
}

func newQUICConn(qc *quic.Conn, ctrl *quic.Stream, lane hub.Lane, node, project string, certs []*x509.Certificate, opts hub.Options) *hub.Conn {
	l := &link{qc: qc, ctrl: ctrl, node: node}
	c, end := hub.NewLinkConn(l, lane, node, project, certs, opts)
	l.end, l.opts = end, end.Options()
	go l.control()
	go l.accept()
	go func() { // the QUIC connection ending (idle timeout, peer close) ends ours
		<-qc.Context().Done()
		l.gone(context.Cause(qc.Context()))
	}()
	return c
}

func (l *link) RemoteAddr() net.Addr { return l.qc.RemoteAddr() }

func (l *link) Close(code int, text string) {
	_ = l.qc.CloseWithError(quic.ApplicationErrorCode(code), text)
}

// WriteFrame writes frame on this side's message stream, opening it (and writing its use type first)
// on the first send.
func (l *link) WriteFrame(ctx context.Context, frame []byte, deadline time.Time) error {
	wire := frame
	if l.send == nil {
		s, err := l.qc.OpenStreamSync(ctx)
		if err != nil {
			return err
		}
		l.send = s
		go l.readStream(s, false) // viaduct answers on whichever stream it has at hand
		wire = append([]byte(quicUseMessage), frame...)
	}
	_ = l.send.SetWriteDeadline(deadline)
	_, err := l.send.Write(wire)
	return err
}

// control answers control messages (viaduct's ping/pong/config) with an ack, as viaduct does.
func (l *link) control() {
	for {
		m, err := hub.ReadQUICMessage(l.ctrl, l.opts.MaxPayload)
		if err != nil {
			var fe *hub.FrameError
			if errors.As(err, &fe) {
				l.end.Refuse(fe)
			}
			return
		}
		resp := message.Message{
			Header:  message.Header{ID: message.NewID(), ParentID: m.Header.ID, Timestamp: time.Now().UnixMilli()},
			Route:   message.Route{Source: m.Route.Source, Group: m.Route.Group, Operation: controlResponse, Resource: m.Route.Resource},
			Content: json.RawMessage(`"` + controlAck + `"`),
		}
		b, err := hub.AppendQUICFrame(nil, resp)
		if err != nil {
			return
		}
		if _, err := l.ctrl.Write(b); err != nil {
			return
		}
	}
}

// accept reads every message stream the peer opens.
func (l *link) accept() {
	for {
		s, err := l.qc.AcceptStream(context.Background())
		if err != nil {
			return
		}
		go l.readStream(s, true)
	}
}

// readStream reads messages from s until it ends; prefixed says s was opened by the peer and so
// starts with its use type.
func (l *link) readStream(s *quic.Stream, prefixed bool) {
	r := bufio.NewReaderSize(s, 4096)
	if prefixed {
		var use [quicUseLen]byte
		if _, err := io.ReadFull(r, use[:]); err != nil {
			return
		}
		if string(use[:]) != quicUseMessage {
			l.opts.Logger.Warn("hub: quic stream of a use this hub does not serve, refused", "node", l.node,
				"remote", l.RemoteAddr().String(), "use", fmt.Sprintf("%q", use[:]), "want", quicUseMessage)
			s.CancelRead(1)
			s.CancelWrite(1)
			return
		}
	}
	for {
		m, n, err := hub.ReadQUICFrame(r, l.opts.MaxPayload)
		if err != nil {
			var fe *hub.FrameError
			if errors.As(err, &fe) {
				l.end.Refuse(fe)
			}
			return // io.EOF: the peer closed this stream; others carry on
		}
		if !l.end.Deliver(m, n) {
			return
		}
	}
}

// gone reports that the QUIC connection ended under the Conn.
func (l *link) gone(cause error) {
	var idle *quic.IdleTimeoutError
	var ae *quic.ApplicationError
	switch {
	case errors.As(cause, &idle):
		l.end.Silent()
	case errors.As(cause, &ae) && ae.Remote:
		l.end.ClosedByPeer(int(ae.ErrorCode), ae.ErrorMessage)
	default:
		l.end.Failed(cause)
	}
}

// gquicSniffer sits under the QUIC listener and recognises Google QUIC clients (KubeEdge v1.23.1's
// edgecore), which IETF QUIC would otherwise drop without a word: it logs one line per client address
// a minute and counts kedge_hub_rejected_total{reason="gquic"}. Packets still go to quic-go.
type gquicSniffer struct {
	net.PacketConn
	logger  *slog.Logger
	metrics *hub.Metrics
	mu      sync.Mutex
	seen    map[string]time.Time
}

// SetReadBuffer, SetWriteBuffer and SyscallConn let quic-go size the socket's buffers as it does for
// a bare *net.UDPConn.
func (s *gquicSniffer) SetReadBuffer(n int) error  { return s.udp().SetReadBuffer(n) }
func (s *gquicSniffer) SetWriteBuffer(n int) error { return s.udp().SetWriteBuffer(n) }
func (s *gquicSniffer) SyscallConn() (syscall.RawConn, error) {
	return s.udp().SyscallConn()
}

func (s *gquicSniffer) udp() *net.UDPConn { return s.PacketConn.(*net.UDPConn) }

func (s *gquicSniffer) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := s.PacketConn.ReadFrom(p)
	if err == nil && n > 0 && p[0] != 0 {
		if v, ok := GoogleQUICVersion(p[:n]); ok {
			s.googleQUIC(addr, v)
		}
	}
	return n, addr, err
}

func (s *gquicSniffer) googleQUIC(addr net.Addr, version string) {
	s.mu.Lock()
	key := addr.String()
	last, ok := s.seen[key]
	now := time.Now()
	if ok && now.Sub(last) < time.Minute {
		s.mu.Unlock()
		return
	}
	if len(s.seen) > 4096 {
		clear(s.seen)
	}
	s.seen[key] = now
	s.mu.Unlock()
	s.metrics.CountRejected("gquic")
	s.logger.Warn("hub: quic client refused: it speaks Google QUIC "+version+" (KubeEdge's edgecore links quic-go v0.10.1); this hub serves IETF QUIC v1 only — set that edge's edgeHub to websocket",
		"remote", key, "version", version, "err", ErrGoogleQUIC)
}
