package hub

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/kedge-io/kedge/host/message"
)

// A Link carries a Conn's frames over a transport other than the websocket. The QUIC lane (package
// host/hub/quichub) is one; it lives in its own package so that only builds that serve or dial QUIC
// link quic-go (an edgecore class without the quic feature does not, see cmd/modules.yaml).
//
// The Conn encodes and decodes messages, applies the options (payload limit, compression, write
// timeout), counts them and closes itself; the Link moves frames (the 10-byte header and the payload,
// back to back) and reports to the Conn through its LinkEnd what it read and how it ended.
type Link interface {
	// RemoteAddr is the peer's network address.
	RemoteAddr() net.Addr
	// WriteFrame writes one frame before deadline. The Conn calls it from one Send at a time; an
	// error closes the Conn. ctx is the Send's (it may end the write sooner).
	WriteFrame(ctx context.Context, frame []byte, deadline time.Time) error
	// Close ends the transport with a close code (the websocket codes: 1000 normal, 1001 going away,
	// 1002 protocol, 1007 bad payload, 1009 too big) and a reason; the Conn calls it once.
	Close(code int, text string)
}

// LinkEnd is how a Link hands its Conn what it reads and how the transport ended.
type LinkEnd struct{ c *Conn }

// received is one frame a Link read (or the frame error that stopped it).
type received struct {
	m   message.Message
	n   int
	err error
}

// NewLinkConn makes a Conn over l for node (the peer's identity, or the one this edge speaks for). The
// Link starts reading after this returns and reports through the LinkEnd.
func NewLinkConn(l Link, lane Lane, node, project string, certs []*x509.Certificate, opts Options) (*Conn, LinkEnd) {
	c := &Conn{opts: opts.withDefaults(), node: node, project: project, certs: certs,
		sendLock: make(chan struct{}, 1), done: make(chan struct{}), lane: lane, link: l, in: make(chan received, 16)}
	if lane == LaneKubeEdge {
		c.opts.CompressMin = 0 // KubeEdge's lane has no compression
	}
	c.opts.Metrics.connOpened(1)
	return c, LinkEnd{c}
}

// Options are the Conn's options with defaults applied (MaxPayload, Logger, Heartbeat).
func (e LinkEnd) Options() Options { return e.c.opts }

// Done is closed when the Conn is closed.
func (e LinkEnd) Done() <-chan struct{} { return e.c.done }

// Deliver queues m (n bytes on the wire) for Receive; false when the Conn closed first.
func (e LinkEnd) Deliver(m message.Message, n int) bool {
	select {
	case e.c.in <- received{m: m, n: n}:
		return true
	case <-e.c.done:
		return false
	}
}

// Refuse hands Receive a frame that broke the format: Receive counts it, logs it, closes the Conn
// and returns it, as for a bad websocket frame.
func (e LinkEnd) Refuse(fe *FrameError) {
	select {
	case e.c.in <- received{err: fe}:
	case <-e.c.done:
	}
}

// Silent closes the Conn because the peer sent nothing for two heartbeats (the transport's idle
// timeout); Receive's error wraps ErrHeartbeat.
func (e LinkEnd) Silent() {
	c := e.c
	select {
	case <-c.done:
		return
	default:
	}
	c.opts.Metrics.heartbeatTimeout()
	c.opts.Logger.Warn("hub: peer silent for two heartbeats, closing", "node", c.node,
		"remote", c.RemoteAddr().String(), "heartbeat", c.opts.Heartbeat)
	c.shutdown(fmt.Errorf("%w: %w (nothing received for %s)", ErrClosed, ErrHeartbeat, 2*c.opts.Heartbeat), 1001, "heartbeat")
}

// ClosedByPeer closes the Conn because the peer closed the transport with code and text.
func (e LinkEnd) ClosedByPeer(code int, text string) {
	e.c.shutdown(fmt.Errorf("%w by the peer: code %d %s", ErrClosed, code, text), code, "")
}

// Failed closes the Conn because the transport ended for cause.
func (e LinkEnd) Failed(cause error) {
	e.c.shutdown(fmt.Errorf("%w: %v", ErrClosed, cause), 1001, "")
}

// sendLink writes m as one frame on the Link.
func (c *Conn) sendLink(ctx context.Context, m message.Message) error {
	bp := encodeBuffers.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= coalesceMax {
			encodeBuffers.Put(bp)
		}
	}()
	frame, err := MarshalMessage(append((*bp)[:0], make([]byte, HeaderSize)...), m)
	*bp = frame[:0]
	if err != nil {
		return fmt.Errorf("send to node %s: %w", c.node, err)
	}
	payload := frame[HeaderSize:]
	var flags byte
	if c.opts.CompressMin > 0 && len(payload) >= c.opts.CompressMin {
		if payload, err = gzipBytes(payload); err != nil {
			return fmt.Errorf("send %s to node %s: %w", m, c.node, err)
		}
		flags = FlagCompressed
		frame = append(frame[:HeaderSize], payload...)
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
	stop := context.AfterFunc(ctx, func() {
		c.shutdown(fmt.Errorf("%w: a send's context ended mid-write: %w", ErrClosed, ctx.Err()), 1001, "")
	})
	defer stop()
	if err := c.link.WriteFrame(ctx, frame, deadline); err != nil {
		return c.sendFailed(m, err)
	}
	c.opts.Metrics.message(out, len(frame))
	return nil
}

// receiveLink returns the next message the Link delivered.
func (c *Conn) receiveLink(ctx context.Context) (message.Message, error) {
	select {
	case r := <-c.in:
		if r.err != nil {
			return message.Message{}, c.reject(asFrameError(r.err))
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
	m, _, err := ReadQUICFrame(r, maxPayload)
	return m, err
}

// ReadQUICFrame is ReadQUICMessage that also returns the frame's size on the wire.
func ReadQUICFrame(r io.Reader, maxPayload int) (message.Message, int, error) {
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

// WithDefaults is o with the defaults of the zero values applied (Heartbeat, WriteTimeout,
// MaxPayload, Logger), as a Conn uses them.
func (o Options) WithDefaults() Options { return o.withDefaults() }

// CheckNodeName accepts a DNS-1123 subdomain, what Kubernetes requires of a node name.
func CheckNodeName(name string) error { return checkNodeName(name) }

// CountRejected counts a refused connection attempt under reason, one of kedge_hub_rejected_total's
// reasons ("no_cert", "cert", "identity", "header", "gquic", ...); an unknown reason counts as "header".
func (m *Metrics) CountRejected(reason string) {
	for i, r := range rejectReasons {
		if r == reason {
			m.reject(i)
			return
		}
	}
	m.reject(rejectHeader)
}
