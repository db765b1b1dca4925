package mbrtu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/kedge-io/kedge/plugins/mappers/modbus/mbtcp"
)

// ErrClosed is returned by a Client used after Close.
var ErrClosed = errors.New("mbrtu: client closed")

// Options configure a Client.
type Options struct {
	// Timeout bounds each request from the first byte sent to the last byte of the answer. A
	// slave that does not answer costs the bus this long, no more. Default 1s.
	Timeout time.Duration
	// Retries is how many times a request whose answer arrived damaged (CRC error, a frame that
	// does not fit the request) is sent again. A timeout is not retried: a silent slave must not
	// hold the bus for the others. Default 2; negative means none.
	Retries int
}

// Stats count what happened on the line since the client was made.
type Stats struct {
	Requests  uint64 // frames sent, retries included
	CRCErrors uint64 // answers whose CRC did not match
	BadFrames uint64 // answers with a valid CRC that do not fit the request (wrong unit, function, length)
	Retries   uint64 // requests sent again after a damaged answer
	Timeouts  uint64 // requests no slave answered in time
	Opens     uint64 // times the device was opened
}

// Client is the master on one serial line. Requests are serialised (one frame on the bus at a
// time) with the line silent for t3.5 between frames; the device is opened on first use and reopened
// after an I/O error. A Client is safe for concurrent use.
type Client struct {
	line Line
	opts Options
	sem  chan struct{} // holds the right to use the line

	f      *os.File
	last   time.Time // end of the last frame sent or received
	closed bool
	stats  counters
}

type counters struct {
	requests, crcErrors, badFrames, retries, timeouts, opens atomic.Uint64
}

// NewClient checks the line settings and returns a client; it does not open the device yet.
func NewClient(line Line, opts Options) (*Client, error) {
	l, err := line.Normalize()
	if err != nil {
		return nil, err
	}
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	if opts.Retries == 0 {
		opts.Retries = 2
	}
	return &Client{line: l, opts: opts, sem: make(chan struct{}, 1)}, nil
}

// Line is the client's line settings, defaults filled.
func (c *Client) Line() Line { return c.line }

// Stats returns the counters; it does not wait for a request in flight.
func (c *Client) Stats() Stats {
	s := &c.stats
	return Stats{Requests: s.requests.Load(), CRCErrors: s.crcErrors.Load(), BadFrames: s.badFrames.Load(),
		Retries: s.retries.Load(), Timeouts: s.timeouts.Load(), Opens: s.opens.Load()}
}

// Close closes the device; later requests fail with ErrClosed.
func (c *Client) Close() error {
	c.sem <- struct{}{}
	defer func() { <-c.sem }()
	c.closed = true
	return c.drop()
}

func (c *Client) drop() error {
	if c.f == nil {
		return nil
	}
	err := c.f.Close()
	c.f = nil
	return err
}

// Do sends req to unit and returns its validated response. An exception response is an
// *mbtcp.ExceptionError. A damaged answer is retried (Options.Retries) and counted; a timeout is
// not. Unit 0 is a broadcast: nothing answers it, Do returns once the frame is sent.
func (c *Client) Do(ctx context.Context, unit byte, req mbtcp.Request) (mbtcp.Response, error) {
	pdu, err := req.Encode()
	if err != nil {
		return mbtcp.Response{}, err
	}
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return mbtcp.Response{}, fmt.Errorf("mbrtu: %s to %s unit %d: waiting for the line: %w", req.Function, c.line.Port, unit, ctx.Err())
	}
	defer func() { <-c.sem }()
	if c.closed {
		return mbtcp.Response{}, ErrClosed
	}
	adu := EncodeADU(unit, pdu)
	for attempt := 0; ; attempt++ {
		resp, err := c.roundTrip(ctx, unit, req, adu)
		if err == nil {
			return resp, nil
		}
		var exc *mbtcp.ExceptionError
		if errors.As(err, &exc) {
			return mbtcp.Response{}, err
		}
		var crc *CRCError
		damaged := errors.As(err, &crc) || errors.Is(err, errBadFrame)
		if damaged && attempt < c.opts.Retries && ctx.Err() == nil {
			c.stats.retries.Add(1)
			continue
		}
		return mbtcp.Response{}, fmt.Errorf("mbrtu: %s to %s unit %d: %w", req.Function, c.line.Port, unit, err)
	}
}

var errBadFrame = errors.New("answer does not fit the request")

func (c *Client) roundTrip(ctx context.Context, unit byte, req mbtcp.Request, adu []byte) (mbtcp.Response, error) {
	if c.f == nil {
		f, err := c.line.open()
		if err != nil {
			return mbtcp.Response{}, err
		}
		c.f, c.last = f, time.Time{}
		c.stats.opens.Add(1)
	}
	f := c.f
	// The line must be silent for t3.5 before a frame starts.
	if wait := time.Until(c.last.Add(c.line.Silence())); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return mbtcp.Response{}, ctx.Err()
		}
	}
	flushInput(f) // nothing received before our request can be its answer
	deadline := time.Now().Add(c.opts.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := f.SetDeadline(deadline); err != nil {
		return mbtcp.Response{}, err
	}
	stop := context.AfterFunc(ctx, func() { f.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	c.stats.requests.Add(1)
	if _, err := f.Write(adu); err != nil {
		c.drop()
		return mbtcp.Response{}, c.ioErr(ctx, "send", err)
	}
	c.last = time.Now()
	if unit == 0 {
		return mbtcp.Response{}, nil
	}
	buf := make([]byte, MaxADU)
	n := 0
	total, need := 0, 2
	for total == 0 {
		if _, err := io.ReadFull(f, buf[n:n+need]); err != nil {
			return mbtcp.Response{}, c.readErr(ctx, f, err)
		}
		n += need
		var err error
		if total, need, err = ResponseLen(req, buf[:n]); err != nil {
			c.stats.badFrames.Add(1)
			c.resync(f)
			return mbtcp.Response{}, fmt.Errorf("%w: %v", errBadFrame, err)
		}
	}
	if total > MaxADU {
		c.stats.badFrames.Add(1)
		c.resync(f)
		return mbtcp.Response{}, fmt.Errorf("%w: a %d-byte frame", errBadFrame, total)
	}
	if _, err := io.ReadFull(f, buf[n:total]); err != nil {
		return mbtcp.Response{}, c.readErr(ctx, f, err)
	}
	c.last = time.Now()
	resp, err := DecodeResponseADU(req, unit, buf[:total])
	var crc *CRCError
	var exc *mbtcp.ExceptionError
	switch {
	case err == nil, errors.As(err, &exc):
		return resp, err
	case errors.As(err, &crc):
		c.stats.crcErrors.Add(1)
		c.resync(f)
		return resp, err
	default:
		c.stats.badFrames.Add(1)
		c.resync(f)
		return resp, fmt.Errorf("%w: %v", errBadFrame, err)
	}
}

// resync waits until the line has been quiet for a while and drops what arrived, so the rest of a
// damaged or unexpected frame is not taken for the next answer.
func (c *Client) resync(f *os.File) {
	quiet := max(c.line.Silence(), 20*time.Millisecond)
	buf := make([]byte, MaxADU)
	for end := time.Now().Add(c.opts.Timeout); time.Now().Before(end); {
		f.SetReadDeadline(time.Now().Add(quiet))
		if _, err := f.Read(buf); err != nil {
			break
		}
	}
	flushInput(f)
	c.last = time.Now()
}

func (c *Client) readErr(ctx context.Context, f *os.File, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil {
		c.stats.timeouts.Add(1)
		c.resync(f)
		return fmt.Errorf("no answer within %s", c.opts.Timeout)
	}
	if ctx.Err() != nil {
		c.resync(f)
		return fmt.Errorf("receive: %w", ctx.Err())
	}
	c.drop()
	return c.ioErr(ctx, "receive", err)
}

func (c *Client) ioErr(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", what, ctx.Err())
	}
	return fmt.Errorf("%s: %w", what, err)
}
