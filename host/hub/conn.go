package hub

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/kedge-io/kedge/host/message"
)

// DefaultHeartbeat is KubeEdge edgehub's default heartbeat period.
const DefaultHeartbeat = 15 * time.Second

// ErrClosed is wrapped by every error from a Conn that is closed, by either side or by a failure;
// the error's text says which.
var ErrClosed = errors.New("hub connection closed")

// ErrHeartbeat is wrapped by Receive's error when the peer sent nothing, not even a pong, for two
// heartbeat intervals: the link is presumed half-open and the connection is closed.
var ErrHeartbeat = errors.New("peer silent for two heartbeat intervals")

// Options tune a Conn; the zero value is usable.
type Options struct {
	// Heartbeat is the ping period, default 15s. A peer that sends nothing (no frame, no pong) for
	// twice this long is declared dead, so a half-open link is found within two heartbeats.
	Heartbeat time.Duration
	// WriteTimeout bounds one Send (both frames) or one ping; default Heartbeat.
	WriteTimeout time.Duration
	// MaxPayload bounds a received payload (before and after decompression) and a sent one; default
	// and ceiling MaxPayload (32 MiB). Larger frames are refused before they are read.
	MaxPayload int
	// CompressMin gzips payloads of at least this many bytes; 0 never compresses. Only for Kedge
	// peers: KubeEdge's viaduct ignores the flag and cannot decode a compressed payload.
	CompressMin int
	// Metrics counts traffic and errors; nil counts nothing.
	Metrics *Metrics
	// Logger receives one line per rejected frame or dead connection; nil means slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = o.Heartbeat
	}
	if o.MaxPayload <= 0 || o.MaxPayload > MaxPayload {
		o.MaxPayload = MaxPayload
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Buffer sizes. The read buffer is held for the connection's whole life, so it is small: gorilla
// peeks frame headers (≤ 14 bytes) through it and reads a payload larger than it straight from TLS,
// which keeps its own record buffer, so 256 bytes cost no extra system call (2 KiB before: 1.8 KiB
// more per idle connection at each end, BenchmarkIdleConnMemory; throughput within noise). The write
// buffer comes from a shared pool only while a message is being written, so idle connections hold
// none and it can be large enough that a typical message is one TLS write per frame.
const (
	readBufferSize  = 256
	writeBufferSize = 16 << 10
)

var writeBufferPool = &sync.Pool{}

// encodeBuffers are reused by Send for the header and protobuf payload.
var encodeBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// Conn is one hub connection. Send may be called from many goroutines; Receive from one at a time.
type Conn struct {
	ws       *websocket.Conn
	out      *coalescingConn // under ws; nil if ws writes straight to the network
	opts     Options
	node     string
	project  string
	certs    []*x509.Certificate
	sendLock chan struct{} // one slot: a lock that a Send can stop waiting for when its ctx ends
	pinger   atomic.Pointer[time.Timer]
	// quietPing is how long this side waits without hearing from its peer before it pings: a
	// heartbeat, but one and a half on the accepting side of the Kedge lane, so the edge, which pings
	// after one, is always first and a quiet link costs the cloud one ping read and one pong written
	// per heartbeat, not a ping of its own too (both sides' timers start together, at the handshake).
	quietPing time.Duration
	heard     atomic.Int64 // unix nanoseconds of the last frame from the peer (data, ping or pong)
	done      chan struct{}
	once      sync.Once
	cause     error // why the connection closed; set before done is closed
	header    [HeaderSize + 1]byte
	lane      Lane
	link      Link          // set for a transport other than the websocket (link.go), where ws, out and pinger are nil
	in        chan received // what link delivered, for Receive
}

func newConn(ws *websocket.Conn, out *coalescingConn, lane Lane, accepted bool, node, project string, certs []*x509.Certificate, opts Options) *Conn {
	c := &Conn{ws: ws, out: out, opts: opts.withDefaults(), node: node, project: project, certs: certs,
		sendLock: make(chan struct{}, 1), done: make(chan struct{}), lane: lane}
	c.quietPing = c.opts.Heartbeat
	if accepted && lane != LaneKubeEdge {
		c.quietPing = c.opts.Heartbeat * 3 / 2 // still inside the read deadline of two heartbeats
	}
	if lane == LaneKubeEdge {
		c.opts.CompressMin = 0 // KubeEdge's JSON lane has no compression
	}
	ws.SetReadLimit(int64(c.opts.MaxPayload))
	ws.SetPongHandler(func(string) error { c.extendRead(); return nil })
	ws.SetPingHandler(func(data string) error {
		c.extendRead()
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(c.opts.WriteTimeout))
		if err != nil && !errors.Is(err, websocket.ErrCloseSent) && !isTimeout(err) {
			return err
		}
		return nil
	})
	c.opts.Metrics.connOpened(1)
	c.heard.Store(time.Now().UnixNano())
	// A timer, not a goroutine, so an idle connection costs no stack for its heartbeat.
	// Stored before it can fire: a heartbeat shorter than this function's tail must not find it nil.
	t := time.AfterFunc(time.Hour, c.ping)
	c.pinger.Store(t)
	t.Reset(c.opts.Heartbeat)
	return c
}

// Node is the node at the other end (cloud side: from its verified certificate) or, on the edge side,
// the node this connection speaks for.
func (c *Conn) Node() string { return c.node }

// Lane is how messages travel on this connection, chosen at the handshake: LaneKedge when both ends
// are Kedge, LaneKubeEdge (JSON text frames) when the peer is KubeEdge's.
func (c *Conn) Lane() Lane { return c.lane }

// ProjectID is the project named in the connection's path.
func (c *Conn) ProjectID() string { return c.project }

// PeerCertificates are the certificates the peer presented in the TLS handshake, leaf first.
func (c *Conn) PeerCertificates() []*x509.Certificate { return c.certs }

// RemoteAddr is the peer's network address.
func (c *Conn) RemoteAddr() net.Addr {
	if c.link != nil {
		return c.link.RemoteAddr()
	}
	return c.ws.RemoteAddr()
}

// Done is closed when the connection is closed; Err then says why.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err is nil while the connection is open, then the reason it closed (wrapping ErrClosed).
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.cause
	default:
		return nil
	}
}

// Close sends a normal close frame (best effort) and closes the connection. It is safe to call more
// than once and concurrently with Send and Receive, which then return errors wrapping ErrClosed.
func (c *Conn) Close() error {
	c.shutdown(fmt.Errorf("%w by this side", ErrClosed), websocket.CloseNormalClosure, "")
	return nil
}

func (c *Conn) shutdown(cause error, code int, text string) {
	c.once.Do(func() {
		c.cause = cause
		if c.link != nil {
			// Uncounted before done is closed: whoever sees the Conn closed sees the gauge without it
			// (the QUIC test of a peer close read 1 here now and then).
			c.opts.Metrics.connOpened(-1)
			close(c.done)
			c.link.Close(code, text)
			return
		}
		close(c.done)
		if t := c.pinger.Load(); t != nil {
			t.Stop()
		}
		// The close frame is best effort and bounded: if a Send is stuck writing to a peer that stopped
		// reading, closing the socket under it is what frees both.
		wait := min(c.opts.WriteTimeout, time.Second)
		force := time.AfterFunc(wait, func() { _ = c.ws.Close() })
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(wait))
		force.Stop()
		_ = c.ws.Close()
		c.opts.Metrics.connOpened(-1)
	})
}

// closedErr is the error for an operation that failed because the connection is closed.
func (c *Conn) closedErr(op string) error {
	<-c.done
	return fmt.Errorf("%s (node %s): %w", op, c.node, c.cause)
}

// ping sends a heartbeat ping, due a heartbeat interval after the last one. On the Kedge lane it is
// sent only when the peer has not been heard from for a heartbeat interval: any frame from the peer
// proves the link alive and moved the read deadline, and the peer pings on its own when it hears
// nothing from this side, so a link that carries messages (an edge reporting every 10 s) needs no
// pings at all — at 10,000 nodes with a 15 s heartbeat that was 1,300 ping and pong writes a second on
// the cloud. On a quiet link the edge pings first (quietPing) and the cloud only answers. KubeEdge's
// lane keeps a ping every interval (its edgecore's reading of silence is its own).
func (c *Conn) ping() {
	select {
	case <-c.done:
		return
	default:
	}
	if c.lane != LaneKubeEdge {
		if quiet := time.Duration(time.Now().UnixNano() - c.heard.Load()); quiet < c.quietPing {
			c.pinger.Load().Reset(c.quietPing - quiet)
			return
		}
	}
	c.opts.Metrics.ping()
	err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.opts.WriteTimeout))
	// A timeout waiting for the write lock means a Send is busy writing, which bounds itself; only a
	// failed or timed-out socket write means the link is broken.
	if err != nil && (!isTimeout(err) || errors.Is(err, os.ErrDeadlineExceeded)) {
		c.opts.Logger.Warn("hub: heartbeat ping failed, closing", "node", c.node, "remote", c.RemoteAddr().String(), "err", err)
		c.shutdown(fmt.Errorf("%w: heartbeat ping failed: %v", ErrClosed, err), websocket.CloseGoingAway, "")
		return
	}
	c.pinger.Load().Reset(c.quietPing)
}

func (c *Conn) extendRead() {
	now := time.Now()
	c.heard.Store(now.UnixNano())
	_ = c.ws.SetReadDeadline(now.Add(2 * c.opts.Heartbeat))
}

// Send writes m as a header frame and a payload frame (Kedge lane) or as one JSON text frame
// (KubeEdge's lane, see Lane). Concurrent Sends are serialized; waiting for
// the turn ends with ctx. The write is bounded by WriteTimeout (or ctx's deadline if sooner); a write
// that fails or times out, or whose ctx ends mid-write, closes the connection, since half a message
// cannot be taken back. An invalid or oversized message is refused without harming the connection.
func (c *Conn) Send(ctx context.Context, m message.Message) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("send %s to node %s: %w", m, c.node, err)
	}
	if c.link != nil {
		return c.sendLink(ctx, m)
	}
	if c.lane == LaneKubeEdge {
		return c.sendJSON(ctx, m)
	}
	bp := encodeBuffers.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= coalesceMax { // a rare huge message's buffer is left to the GC
			encodeBuffers.Put(bp)
		}
	}()
	// Room for the header first, so header and payload share one buffer; the length is patched below.
	buf, err := MarshalMessage(append((*bp)[:0], make([]byte, HeaderSize)...), m)
	*bp = buf[:0]
	if err != nil {
		return fmt.Errorf("send to node %s: %w", c.node, err)
	}
	payload := buf[HeaderSize:]
	var flags byte
	if c.opts.CompressMin > 0 && len(payload) >= c.opts.CompressMin {
		if payload, err = gzipBytes(payload); err != nil {
			return fmt.Errorf("send %s to node %s: %w", m, c.node, err)
		}
		flags = FlagCompressed
	}
	if len(payload) > c.opts.MaxPayload {
		return fmt.Errorf("send %s to node %s: payload is %d bytes, limit is %d: split the content",
			m, c.node, len(payload), c.opts.MaxPayload)
	}
	header := AppendHeader(buf[:0], Header{Version: Version, Type: TypeMessage, Flags: flags, Length: uint32(len(payload))})

	select {
	case c.sendLock <- struct{}{}:
	case <-c.done:
		return c.closedErr("send " + m.String())
	case <-ctx.Done():
		return fmt.Errorf("send %s to node %s: waiting for the connection: %w", m, c.node, ctx.Err())
	}
	defer func() { <-c.sendLock }()
	defer c.writing(ctx)()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("send %s to node %s: %w", m, c.node, err)
	}
	if c.out != nil && len(payload) <= coalesceMax {
		c.out.hold()
		err = c.writeFrame(header)
		if err == nil {
			err = c.writeFrame(payload)
		}
		if rerr := c.out.release(); err == nil {
			err = rerr
		}
	} else if err = c.writeFrame(header); err == nil {
		err = c.writeFrame(payload)
	}
	if err != nil {
		return c.sendFailed(m, err)
	}
	c.opts.Metrics.message(out, len(header)+len(payload))
	return nil
}

// writing arms a write: it closes the connection if ctx ends mid-write and sets the write deadline
// (WriteTimeout, or ctx's deadline if sooner). The caller holds sendLock and calls the returned func
// when the write is over.
func (c *Conn) writing(ctx context.Context) func() {
	stop := func() bool { return true }
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() {
			c.shutdown(fmt.Errorf("%w: a send's context ended mid-write: %w", ErrClosed, ctx.Err()), websocket.CloseGoingAway, "")
		})
	}
	deadline := time.Now().Add(c.opts.WriteTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.ws.SetWriteDeadline(deadline)
	return func() { stop() }
}

// sendJSON writes m as one JSON text frame, KubeEdge's websocket lane.
func (c *Conn) sendJSON(ctx context.Context, m message.Message) error {
	b, err := MarshalJSONLane(m)
	if err != nil {
		return fmt.Errorf("send to node %s: %w", c.node, err)
	}
	if len(b) > c.opts.MaxPayload {
		return fmt.Errorf("send %s to node %s: JSON frame is %d bytes, limit is %d: split the content", m, c.node, len(b), c.opts.MaxPayload)
	}
	select {
	case c.sendLock <- struct{}{}:
	case <-c.done:
		return c.closedErr("send " + m.String())
	case <-ctx.Done():
		return fmt.Errorf("send %s to node %s: waiting for the connection: %w", m, c.node, ctx.Err())
	}
	defer func() { <-c.sendLock }()
	defer c.writing(ctx)()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("send %s to node %s: %w", m, c.node, err)
	}
	if c.out != nil {
		c.out.hold()
	}
	err = c.writeMessage(websocket.TextMessage, b)
	if c.out != nil {
		if rerr := c.out.release(); err == nil {
			err = rerr
		}
	}
	if err != nil {
		return c.sendFailed(m, err)
	}
	c.opts.Metrics.messageFrames(out, 1, len(b))
	return nil
}

// writeFrame writes b as one binary message through the pooled write buffer, so a message that fits
// the buffer is one socket write (WriteMessage would write the frame header and the data separately).
func (c *Conn) writeFrame(b []byte) error { return c.writeMessage(websocket.BinaryMessage, b) }

func (c *Conn) writeMessage(typ int, b []byte) error {
	w, err := c.ws.NextWriter(typ)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		_ = w.Close()
		return err
	}
	return w.Close()
}

func (c *Conn) sendFailed(m message.Message, err error) error {
	select {
	case <-c.done:
		return c.closedErr("send " + m.String())
	default:
	}
	c.shutdown(fmt.Errorf("%w: write failed: %v", ErrClosed, err), websocket.CloseGoingAway, "")
	return fmt.Errorf("send %s to node %s: %w", m, c.node, c.cause)
}

// Receive returns the next message. A frame that breaks the format (see FrameError) is logged,
// counted, answered with a close frame and returned as an error: the connection is closed, because
// after a bad frame the stream cannot be trusted. If ctx ends first, the connection is closed too,
// since a half-read message cannot be resumed; use a ctx that lives as long as the connection.
func (c *Conn) Receive(ctx context.Context) (message.Message, error) {
	select {
	case <-c.done:
		return message.Message{}, c.closedErr("receive")
	default:
	}
	if err := ctx.Err(); err != nil {
		return message.Message{}, fmt.Errorf("receive from node %s: %w", c.node, err)
	}
	if c.link != nil {
		return c.receiveLink(ctx)
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() {
			c.shutdown(fmt.Errorf("%w: the receiver's context ended: %w", ErrClosed, ctx.Err()), websocket.CloseGoingAway, "")
		})
		defer stop()
	}
	c.extendRead()

	typ, r, err := c.ws.NextReader()
	if err != nil {
		return message.Message{}, c.readFailed(err)
	}
	if c.lane == LaneKubeEdge {
		return c.receiveJSON(typ, r)
	}
	if typ != websocket.BinaryMessage {
		return message.Message{}, c.reject(frameErr(ErrHeader, "header arrived as a text frame, want binary (a KubeEdge peer's JSON? it did not negotiate that lane: the Kedge lane was chosen at the handshake)"))
	}
	n, err := io.ReadFull(r, c.header[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return message.Message{}, c.readFailed(err)
	}
	h, err := ParseHeader(c.header[:n], c.opts.MaxPayload)
	if err != nil {
		return message.Message{}, c.reject(asFrameError(err))
	}
	c.extendRead()

	typ, r, err = c.ws.NextReader()
	if err != nil {
		return message.Message{}, c.readFailed(err)
	}
	if typ != websocket.BinaryMessage {
		return message.Message{}, c.reject(frameErr(ErrLength, "payload arrived as a text frame, want binary"))
	}
	payload := make([]byte, h.Length)
	if n, err := io.ReadFull(r, payload); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return message.Message{}, c.reject(frameErr(ErrLength, "header announces %d payload bytes, payload frame has %d", h.Length, n))
		}
		return message.Message{}, c.readFailed(err)
	}
	var extra [1]byte
	if _, err := io.ReadFull(r, extra[:]); err == nil {
		return message.Message{}, c.reject(frameErr(ErrLength, "header announces %d payload bytes, payload frame has more", h.Length))
	} else if !errors.Is(err, io.EOF) {
		return message.Message{}, c.readFailed(err)
	}
	m, err := decodePayload(h, payload, c.opts.MaxPayload)
	if err != nil {
		return message.Message{}, c.reject(asFrameError(err))
	}
	c.opts.Metrics.message(in, HeaderSize+len(payload))
	return m, nil
}

// receiveJSON reads one message of KubeEdge's websocket lane: one JSON text frame.
func (c *Conn) receiveJSON(typ int, r io.Reader) (message.Message, error) {
	if typ != websocket.TextMessage {
		return message.Message{}, c.reject(frameErr(ErrHeader, "binary frame on KubeEdge's JSON lane, want one JSON text frame per message (a Kedge peer that did not offer subprotocol %s?)", Subprotocol))
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return message.Message{}, c.readFailed(err)
	}
	m, err := UnmarshalJSONLane(b)
	if err != nil {
		return message.Message{}, c.reject(asFrameError(err))
	}
	c.opts.Metrics.messageFrames(in, 1, len(b))
	return m, nil
}

// reject closes the connection over a bad frame and returns the error for Receive.
func (c *Conn) reject(fe *FrameError) error {
	c.opts.Metrics.decodeError(fe)
	c.opts.Logger.Warn("hub: rejected frame, closing connection", "node", c.node,
		"remote", c.RemoteAddr().String(), "reason", fe.Reason(), "err", fe.Error())
	code := websocket.CloseProtocolError
	switch fe.Err {
	case ErrTooLarge:
		code = websocket.CloseMessageTooBig
	case ErrTruncated, ErrWireType, ErrMalformed, ErrContent, ErrCompressed, ErrInvalid:
		code = websocket.CloseInvalidFramePayloadData
	}
	c.shutdown(fmt.Errorf("%w: %v", ErrClosed, fe), code, fe.Reason())
	return fmt.Errorf("receive from node %s: %w", c.node, fe)
}

// asFrameError returns the *FrameError in err; the decoders return nothing else, but a new error path
// must not become a panic.
func asFrameError(err error) *FrameError {
	var fe *FrameError
	if errors.As(err, &fe) {
		return fe
	}
	return &FrameError{Err: ErrMalformed, Detail: err.Error()}
}

// readFailed turns a websocket read error into Receive's error and closes the connection.
func (c *Conn) readFailed(err error) error {
	select {
	case <-c.done: // closed by this side (Close, ctx, a failed ping): say so rather than "use of closed connection"
		return c.closedErr("receive")
	default:
	}
	switch {
	case errors.Is(err, websocket.ErrReadLimit):
		return c.reject(frameErr(ErrTooLarge, "a frame from the peer exceeds the %d-byte limit", c.opts.MaxPayload))
	case isTimeout(err):
		c.opts.Metrics.heartbeatTimeout()
		c.opts.Logger.Warn("hub: peer silent for two heartbeats, closing", "node", c.node,
			"remote", c.RemoteAddr().String(), "heartbeat", c.opts.Heartbeat)
		c.shutdown(fmt.Errorf("%w: %w (nothing received for %s)", ErrClosed, ErrHeartbeat, 2*c.opts.Heartbeat), websocket.CloseGoingAway, "heartbeat")
	default:
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			c.shutdown(fmt.Errorf("%w by the peer: %v", ErrClosed, ce), ce.Code, "")
		} else {
			c.shutdown(fmt.Errorf("%w: read failed: %v", ErrClosed, err), websocket.CloseGoingAway, "")
		}
	}
	return c.closedErr("receive")
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
