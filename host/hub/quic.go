package hub

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
	ALPNKedge = Subprotocol
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
func quicConfig(o Options, handshake time.Duration) *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout: handshake,
		MaxIdleTimeout:       2 * o.Heartbeat,
		KeepAlivePeriod:      o.Heartbeat,
		MaxIncomingStreams:   100, // viaduct opens up to 99
	}
}

// QUICListener serves the QUIC lane on a UDP port.
type QUICListener struct {
	pc     *gquicSniffer
	tr     *quic.Transport
	ln     *quic.Listener
	opts   AcceptOptions
	out    chan acceptResult
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	cancel context.CancelFunc
}

type acceptResult struct {
	conn *Conn
	err  error
}

// ListenQUIC binds addr (UDP) and serves the QUIC lane with tlsConf, which must require and verify
// client certificates (ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: the node CA), as for
// Accept. The node's identity is its certificate's; the control stream's node_id header must agree.
func ListenQUIC(addr string, tlsConf *tls.Config, o AcceptOptions) (*QUICListener, error) {
	if tlsConf == nil || tlsConf.ClientAuth != tls.RequireAndVerifyClientCert {
		return nil, errors.New("listen quic: the TLS config must require and verify client certificates (tls.RequireAndVerifyClientCert)")
	}
	o.Options = o.Options.withDefaults()
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
	l := &QUICListener{opts: o, out: make(chan acceptResult), done: make(chan struct{})}
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
func (l *QUICListener) Addr() net.Addr { return l.pc.LocalAddr() }

// Accept returns the next edge connection that completed the handshake, or an error wrapping
// ErrRejected for one that was turned away (log it and call Accept again); any other error means
// the listener is closed.
func (l *QUICListener) Accept(ctx context.Context) (*Conn, error) {
	select {
	case r := <-l.out:
		return r.conn, r.err
	case <-l.done:
		return nil, fmt.Errorf("accept quic: %w: listener closed", ErrClosed)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close stops listening; connections already accepted stay open.
func (l *QUICListener) Close() error {
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

func (l *QUICListener) acceptLoop(ctx context.Context) {
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
func (l *QUICListener) handshake(ctx context.Context, qc *quic.Conn) (*Conn, error) {
	m := l.opts.Metrics
	remote := qc.RemoteAddr().String()
	refuse := func(reason int, format string, args ...any) (*Conn, error) {
		m.reject(reason)
		msg := fmt.Sprintf(format, args...)
		_ = qc.CloseWithError(quicCodeRefused, truncate(msg, 200))
		return nil, fmt.Errorf("accept quic connection from %s: %w: %s", remote, ErrRejected, msg)
	}
	st := qc.ConnectionState().TLS
	if len(st.VerifiedChains) == 0 {
		return refuse(rejectNoCert, "a client certificate signed by the hub's CA is required")
	}
	node, err := NodeFromCert(st.VerifiedChains[0][0])
	if err != nil {
		return refuse(rejectCert, "%v", err)
	}
	hctx, cancel := context.WithTimeout(ctx, l.opts.HandshakeTimeout)
	defer cancel()
	ctrl, err := qc.AcceptStream(hctx)
	if err != nil {
		return refuse(rejectHeader, "node %s opened no control stream within %s: %v", node, l.opts.HandshakeTimeout, err)
	}
	_ = ctrl.SetDeadline(time.Now().Add(l.opts.HandshakeTimeout))
	hm, err := ReadQUICMessage(ctrl, l.opts.MaxPayload)
	if err != nil {
		return refuse(rejectHeader, "node %s: control stream: %v", node, err)
	}
	if hm.Route.Operation != controlHeader {
		return refuse(rejectHeader, "node %s: first control message has operation %q, want %q", node, hm.Route.Operation, controlHeader)
	}
	var hdr http.Header
	if len(hm.Content) > 0 {
		if err := json.Unmarshal(hm.Content, &hdr); err != nil {
			return refuse(rejectHeader, "node %s: control header content is not a JSON header map: %v", node, err)
		}
	}
	if id := hdr.Get(HeaderNodeID); id != "" && id != node {
		return refuse(rejectIdentity, "certificate is for node %q but the node_id header says %q", node, id)
	}
	project := hdr.Get(HeaderProjectID)
	if project == "" {
		project = DefaultProjectID
	}
	resp := message.Message{
		Header:  message.Header{ID: message.NewID(), ParentID: hm.Header.ID, Timestamp: time.Now().UnixMilli()},
		Route:   message.Route{Source: hm.Route.Source, Group: hm.Route.Group, Operation: controlResponse, Resource: hm.Route.Resource},
		Content: json.RawMessage(`"` + controlAck + `"`),
	}
	b, err := AppendQUICFrame(nil, resp)
	if err == nil {
		_, err = ctrl.Write(b)
	}
	if err != nil {
		_ = qc.CloseWithError(1001, "")
		return nil, fmt.Errorf("accept quic connection from %s (node %s): %w: answering the control header: %v", remote, node, ErrRejected, err)
	}
	_ = ctrl.SetDeadline(time.Time{})
	lane := LaneKubeEdge
	if st.NegotiatedProtocol == ALPNKedge {
		lane = LaneKedge
	}
	return newQUICConn(qc, ctrl, lane, node, project, st.PeerCertificates, l.opts.Options), nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// DialQUIC connects an edge to a hub's QUIC lane at o.URL ("quic://host:10001" or "host:10001"):
// mTLS with o.TLS, then viaduct's control header carrying node_id and project_id. It offers ALPN
// kedge.hub.v1 (the Kedge lane) unless o.KubeEdgeLane is set.
func DialQUIC(ctx context.Context, o DialOptions) (*Conn, error) {
	if o.ProjectID == "" {
		o.ProjectID = DefaultProjectID
	}
	if err := checkNodeName(o.NodeID); err != nil {
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
	o.Options = o.Options.withDefaults()
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
	fail := func(format string, args ...any) (*Conn, error) {
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
	hdr.Set(HeaderNodeID, o.NodeID)
	hdr.Set(HeaderProjectID, o.ProjectID)
	content, _ := json.Marshal(hdr)
	hm := message.Message{
		Header:  message.Header{ID: message.NewID(), Timestamp: time.Now().UnixMilli()},
		Route:   message.Route{Operation: controlHeader, Resource: controlHeader},
		Content: content,
	}
	b, err := AppendQUICFrame(nil, hm)
	if err != nil {
		return fail("control header: %w", err)
	}
	deadline, _ := hctx.Deadline()
	_ = ctrl.SetDeadline(deadline)
	if _, err := ctrl.Write(b); err != nil {
		return fail("writing the control header: %w", err)
	}
	resp, err := ReadQUICMessage(ctrl, o.MaxPayload)
	if err != nil {
		var ae *quic.ApplicationError
		if errors.As(err, &ae) && ae.Remote {
			return nil, fmt.Errorf("dial quic hub %s: %w: the hub refused us: %s", addr, ErrRejected, ae.ErrorMessage)
		}
		return fail("reading the answer to the control header: %w", err)
	}
	if resp.Route.Operation != controlResponse || resp.Header.ParentID != hm.Header.ID || string(resp.Content) != `"`+controlAck+`"` {
		return fail("the hub answered the control header with %s (parent %q, content %s), want a %q for %q with content %q",
			resp, resp.Header.ParentID, resp.Content, controlResponse, hm.Header.ID, controlAck)
	}
	_ = ctrl.SetDeadline(time.Time{})
	st := qc.ConnectionState().TLS
	lane := LaneKubeEdge
	if st.NegotiatedProtocol == ALPNKedge {
		lane = LaneKedge
	}
	return newQUICConn(qc, ctrl, lane, o.NodeID, o.ProjectID, st.PeerCertificates, o.Options), nil
}

// AppendQUICFrame appends m as one frame of viaduct's QUIC streams: the 10-byte header and the
// protobuf payload, back to back.
func AppendQUICFrame(dst []byte, m message.Message) ([]byte, error) {
	start := len(dst)
	dst, err := MarshalMessage(append(dst, make([]byte, HeaderSize)...), m)
	if err != nil {
		return dst[:start], err
	}
	n := len(dst) - start - HeaderSize
	if n > MaxPayload {
		return dst[:start], fmt.Errorf("encode %s: payload is %d bytes, limit is %d: split the content", m, n, MaxPayload)
	}
	AppendHeader(dst[start:start], Header{Version: Version, Type: TypeMessage, Length: uint32(n)})
	return dst, nil
}

// ReadQUICMessage reads one frame (header, then the payload it announces) from a QUIC stream and
// decodes it. It returns io.EOF when the stream ends cleanly before a frame, a *FrameError (ErrLength)
// when it ends inside one, the checks of DecodeFrame otherwise, and the stream's own error if reading
// fails. maxPayload (MaxPayload if not positive) is checked from the header before the payload is read.
func ReadQUICMessage(r io.Reader, maxPayload int) (message.Message, error) {
	m, _, err := readQUICFrame(r, maxPayload)
	return m, err
}

func readQUICFrame(r io.Reader, maxPayload int) (message.Message, int, error) {
	if maxPayload <= 0 || maxPayload > MaxPayload {
		maxPayload = MaxPayload
	}
	var hb [HeaderSize]byte
	if n, err := io.ReadFull(r, hb[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return message.Message{}, 0, frameErr(ErrHeader, "stream ended %d bytes into a %d-byte frame header", n, HeaderSize)
		}
		return message.Message{}, 0, err
	}
	h, err := ParseHeader(hb[:], maxPayload)
	if err != nil {
		return message.Message{}, 0, err
	}
	payload := make([]byte, h.Length)
	if n, err := io.ReadFull(r, payload); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return message.Message{}, 0, frameErr(ErrLength, "header announces %d payload bytes, the stream ended after %d", h.Length, n)
		}
		return message.Message{}, 0, err
	}
	m, err := decodePayload(h, payload, maxPayload)
	return m, HeaderSize + len(payload), err
}

// quicLink is a Conn's QUIC state.
type quicLink struct {
	qc     *quic.Conn
	ctrl   *quic.Stream
	send   *quic.Stream // the message stream this side opened, lazily
	in     chan received
	closed chan struct{}
}

type received struct {
	m   message.Message
	n   int
	err error
}

func newQUICConn(qc *quic.Conn, ctrl *quic.Stream, lane Lane, node, project string, certs []*x509.Certificate, opts Options) *Conn {
	c := &Conn{opts: opts.withDefaults(), node: node, project: project, certs: certs,
		sendLock: make(chan struct{}, 1), done: make(chan struct{}), lane: lane}
	if lane == LaneKubeEdge {
		c.opts.CompressMin = 0
	}
	c.q = &quicLink{qc: qc, ctrl: ctrl, in: make(chan received, 16), closed: make(chan struct{})}
	c.opts.Metrics.connOpened(1)
	go c.quicControl()
	go c.quicAccept()
	go func() { // the QUIC connection ending (idle timeout, peer close) ends ours
		<-qc.Context().Done()
		c.quicGone(context.Cause(qc.Context()))
	}()
	return c
}

// quicControl answers control messages (viaduct's ping/pong/config) with an ack, as viaduct does.
func (c *Conn) quicControl() {
	for {
		m, err := ReadQUICMessage(c.q.ctrl, c.opts.MaxPayload)
		if err != nil {
			var fe *FrameError
			if errors.As(err, &fe) {
				c.quicReject(fe)
			}
			return
		}
		resp := message.Message{
			Header:  message.Header{ID: message.NewID(), ParentID: m.Header.ID, Timestamp: time.Now().UnixMilli()},
			Route:   message.Route{Source: m.Route.Source, Group: m.Route.Group, Operation: controlResponse, Resource: m.Route.Resource},
			Content: json.RawMessage(`"` + controlAck + `"`),
		}
		b, err := AppendQUICFrame(nil, resp)
		if err != nil {
			return
		}
		if _, err := c.q.ctrl.Write(b); err != nil {
			return
		}
	}
}

// quicAccept reads every message stream the peer opens.
func (c *Conn) quicAccept() {
	for {
		s, err := c.q.qc.AcceptStream(context.Background())
		if err != nil {
			return
		}
		go c.quicReadStream(s, true)
	}
}

// quicReadStream reads messages from s until it ends; prefixed says s was opened by the peer and so
// starts with its use type.
func (c *Conn) quicReadStream(s *quic.Stream, prefixed bool) {
	r := bufio.NewReaderSize(s, 4096)
	if prefixed {
		var use [quicUseLen]byte
		if _, err := io.ReadFull(r, use[:]); err != nil {
			return
		}
		if string(use[:]) != quicUseMessage {
			c.opts.Logger.Warn("hub: quic stream of a use this hub does not serve, refused", "node", c.node,
				"remote", c.RemoteAddr().String(), "use", fmt.Sprintf("%q", use[:]), "want", quicUseMessage)
			s.CancelRead(1)
			s.CancelWrite(1)
			return
		}
	}
	for {
		m, n, err := readQUICFrame(r, c.opts.MaxPayload)
		if err != nil {
			var fe *FrameError
			if errors.As(err, &fe) {
				c.quicReject(fe)
			}
			return // io.EOF: the peer closed this stream; others carry on
		}
		select {
		case c.q.in <- received{m: m, n: n}:
		case <-c.done:
			return
		}
	}
}

func (c *Conn) quicReject(fe *FrameError) {
	select {
	case c.q.in <- received{err: fe}:
	case <-c.done:
	}
}

// quicGone records that the QUIC connection ended under us.
func (c *Conn) quicGone(cause error) {
	var idle *quic.IdleTimeoutError
	var ae *quic.ApplicationError
	switch {
	case errors.As(cause, &idle):
		select {
		case <-c.done:
			return
		default:
		}
		c.opts.Metrics.heartbeatTimeout()
		c.opts.Logger.Warn("hub: peer silent for two heartbeats, closing", "node", c.node,
			"remote", c.RemoteAddr().String(), "heartbeat", c.opts.Heartbeat)
		c.shutdown(fmt.Errorf("%w: %w (nothing received for %s)", ErrClosed, ErrHeartbeat, 2*c.opts.Heartbeat), 1001, "heartbeat")
	case errors.As(cause, &ae) && ae.Remote:
		c.shutdown(fmt.Errorf("%w by the peer: code %d %s", ErrClosed, ae.ErrorCode, ae.ErrorMessage), int(ae.ErrorCode), "")
	default:
		c.shutdown(fmt.Errorf("%w: %v", ErrClosed, cause), 1001, "")
	}
}

func (c *Conn) quicClose(code int, text string) {
	_ = c.q.qc.CloseWithError(quic.ApplicationErrorCode(code), text)
}

// sendQUIC writes m as one frame on this side's message stream, opening it (and writing its use
// type) on the first send.
func (c *Conn) sendQUIC(ctx context.Context, m message.Message) error {
	bp := encodeBuffers.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= coalesceMax {
			encodeBuffers.Put(bp)
		}
	}()
	buf := append((*bp)[:0], quicUseMessage...)
	buf, err := MarshalMessage(append(buf, make([]byte, HeaderSize)...), m)
	*bp = buf[:0]
	if err != nil {
		return fmt.Errorf("send to node %s: %w", c.node, err)
	}
	frame := buf[quicUseLen:]
	payload := frame[HeaderSize:]
	var flags byte
	if c.opts.CompressMin > 0 && len(payload) >= c.opts.CompressMin {
		if payload, err = gzipBytes(payload); err != nil {
			return fmt.Errorf("send %s to node %s: %w", m, c.node, err)
		}
		flags = FlagCompressed
		frame = append(AppendHeader(frame[:0], Header{Version: Version, Type: TypeMessage, Flags: flags, Length: uint32(len(payload))}), payload...)
	}
	if len(payload) > c.opts.MaxPayload {
		return fmt.Errorf("send %s to node %s: payload is %d bytes, limit is %d: split the content", m, c.node, len(payload), c.opts.MaxPayload)
	}
	AppendHeader(frame[:0], Header{Version: Version, Type: TypeMessage, Flags: flags, Length: uint32(len(payload))})

	select {
	case c.sendLock <- struct{}{}:
	case <-c.done:
		return c.closedErr("send " + m.String())
	case <-ctx.Done():
		return fmt.Errorf("send %s to node %s: waiting for the connection: %w", m, c.node, ctx.Err())
	}
	defer func() { <-c.sendLock }()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("send %s to node %s: %w", m, c.node, err)
	}
	deadline := time.Now().Add(c.opts.WriteTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	wire := frame
	if c.q.send == nil {
		s, err := c.q.qc.OpenStreamSync(ctx)
		if err != nil {
			return c.sendFailed(m, err)
		}
		c.q.send = s
		go c.quicReadStream(s, false) // viaduct answers on whichever stream it has at hand
		wire = buf[:quicUseLen+len(frame)]
		if flags != 0 {
			wire = append([]byte(quicUseMessage), frame...)
		}
	}
	stop := context.AfterFunc(ctx, func() {
		c.shutdown(fmt.Errorf("%w: a send's context ended mid-write: %w", ErrClosed, ctx.Err()), 1001, "")
	})
	defer stop()
	_ = c.q.send.SetWriteDeadline(deadline)
	if _, err := c.q.send.Write(wire); err != nil {
		return c.sendFailed(m, err)
	}
	c.opts.Metrics.message(out, len(frame))
	return nil
}

// receiveQUIC returns the next message from any of the peer's streams.
func (c *Conn) receiveQUIC(ctx context.Context) (message.Message, error) {
	select {
	case r := <-c.q.in:
		if r.err != nil {
			return message.Message{}, c.rejectQUIC(r.err.(*FrameError))
		}
		c.opts.Metrics.message(in, r.n)
		return r.m, nil
	case <-c.done:
		return message.Message{}, c.closedErr("receive")
	case <-ctx.Done():
		c.shutdown(fmt.Errorf("%w: the receiver's context ended: %w", ErrClosed, ctx.Err()), 1001, "")
		return message.Message{}, fmt.Errorf("receive from node %s: %w", c.node, ctx.Err())
	}
}

func (c *Conn) rejectQUIC(fe *FrameError) error {
	return c.reject(fe)
}

// gquicSniffer sits under the QUIC listener and recognises Google QUIC clients (KubeEdge v1.23.1's
// edgecore), which IETF QUIC would otherwise drop without a word: it logs one line per client address
// a minute and counts kedge_hub_rejected_total{reason="gquic"}. Packets still go to quic-go.
type gquicSniffer struct {
	net.PacketConn
	logger  *slog.Logger
	metrics *Metrics
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
	s.metrics.reject(rejectGQUIC)
	s.logger.Warn("hub: quic client refused: it speaks Google QUIC "+version+" (KubeEdge's edgecore links quic-go v0.10.1); this hub serves IETF QUIC v1 only — set that edge's edgeHub to websocket",
		"remote", key, "version", version, "err", ErrGoogleQUIC)
}
