package mbtcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// ErrClosed is returned by a Client used after Close.
var ErrClosed = errors.New("mbtcp: client closed")

// Options configure a Client.
type Options struct {
	// UnitID is the unit (slave) id the convenience methods address; Do takes it explicitly.
	UnitID byte
	// Timeout bounds each request: connecting, sending and receiving the response. Default 1s.
	Timeout time.Duration
}

// Client speaks Modbus TCP to one server over one TCP connection, opened on first use and reopened
// after any transport or framing error. Requests are serialised: one is on the wire at a time, each
// with a fresh transaction id. A Client is safe for concurrent use.
type Client struct {
	addr string
	opts Options
	sem  chan struct{} // holds the right to use conn

	conn   net.Conn
	txID   uint16
	closed bool
	dials  int
}

// NewClient returns a client for addr ("host:port"); it does not connect yet.
func NewClient(addr string, opts Options) *Client {
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	return &Client{addr: addr, opts: opts, sem: make(chan struct{}, 1)}
}

// Addr is the server address.
func (c *Client) Addr() string { return c.addr }

// Dials counts the TCP connections the client has opened (for tests and metrics).
func (c *Client) Dials() int {
	c.sem <- struct{}{}
	defer func() { <-c.sem }()
	return c.dials
}

// Close closes the connection; later requests fail with ErrClosed.
func (c *Client) Close() error {
	c.sem <- struct{}{}
	defer func() { <-c.sem }()
	c.closed = true
	return c.dropConn()
}

func (c *Client) dropConn() error {
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}

// Do sends req to unit and returns its validated response. An exception response is an
// *ExceptionError (the connection is kept); any other failure closes the connection so the next
// request reconnects. A request that fails because a reused connection was found dead (the server
// restarted or dropped it while idle) is retried once on a new connection.
func (c *Client) Do(ctx context.Context, unit byte, req Request) (Response, error) {
	pdu, err := req.Encode()
	if err != nil {
		return Response{}, err
	}
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return Response{}, fmt.Errorf("mbtcp: %s to %s: waiting for the connection: %w", req.Function, c.addr, ctx.Err())
	}
	defer func() { <-c.sem }()
	if c.closed {
		return Response{}, ErrClosed
	}
	for attempt := 0; ; attempt++ {
		reused := c.conn != nil
		resp, err := c.roundTrip(ctx, unit, req, pdu)
		if err == nil {
			return resp, nil
		}
		var exc *ExceptionError
		if errors.As(err, &exc) {
			return Response{}, err
		}
		c.dropConn()
		if reused && attempt == 0 && ctx.Err() == nil && isStaleConn(err) {
			continue
		}
		return Response{}, fmt.Errorf("mbtcp: %s to %s unit %d: %w", req.Function, c.addr, unit, err)
	}
}

// isStaleConn tells a connection the peer already closed from a slow or broken server.
func isStaleConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func (c *Client) roundTrip(ctx context.Context, unit byte, req Request, pdu []byte) (Response, error) {
	deadline := time.Now().Add(c.opts.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if c.conn == nil {
		d := net.Dialer{Deadline: deadline}
		conn, err := d.DialContext(ctx, "tcp", c.addr)
		if err != nil {
			return Response{}, fmt.Errorf("connect: %w", err)
		}
		c.conn = conn
		c.dials++
	}
	conn := c.conn
	if err := conn.SetDeadline(deadline); err != nil {
		return Response{}, err
	}
	// A cancelled ctx interrupts the blocked read/write at once.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	c.txID++
	tx := c.txID
	if _, err := conn.Write(EncodeFrame(tx, unit, pdu)); err != nil {
		return Response{}, c.ioErr(ctx, "send", err)
	}
	buf := make([]byte, HeaderLen+MaxPDU)
	if _, err := io.ReadFull(conn, buf[:HeaderLen]); err != nil {
		return Response{}, c.ioErr(ctx, "receive header", err)
	}
	h, err := DecodeHeader(buf[:HeaderLen])
	if err != nil {
		return Response{}, err
	}
	n := HeaderLen + int(h.Length) - 1
	if _, err := io.ReadFull(conn, buf[HeaderLen:n]); err != nil {
		return Response{}, c.ioErr(ctx, "receive PDU", err)
	}
	return DecodeResponseFrame(req, tx, unit, buf[:n])
}

func (c *Client) ioErr(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", what, ctx.Err())
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%s: no answer within %s: %w", what, c.opts.Timeout, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// ReadCoils reads qty coils (FC 1).
func (c *Client) ReadCoils(ctx context.Context, addr, qty uint16) ([]bool, error) {
	return c.readBits(ctx, ReadCoils, addr, qty)
}

// ReadDiscreteInputs reads qty discrete inputs (FC 2).
func (c *Client) ReadDiscreteInputs(ctx context.Context, addr, qty uint16) ([]bool, error) {
	return c.readBits(ctx, ReadDiscreteInputs, addr, qty)
}

// ReadHoldingRegisters reads qty holding registers (FC 3).
func (c *Client) ReadHoldingRegisters(ctx context.Context, addr, qty uint16) ([]uint16, error) {
	return c.readRegs(ctx, ReadHoldingRegisters, addr, qty)
}

// ReadInputRegisters reads qty input registers (FC 4).
func (c *Client) ReadInputRegisters(ctx context.Context, addr, qty uint16) ([]uint16, error) {
	return c.readRegs(ctx, ReadInputRegisters, addr, qty)
}

// WriteSingleCoil sets one coil (FC 5).
func (c *Client) WriteSingleCoil(ctx context.Context, addr uint16, on bool) error {
	_, err := c.Do(ctx, c.opts.UnitID, NewWriteSingleCoil(addr, on))
	return err
}

// WriteSingleRegister sets one holding register (FC 6).
func (c *Client) WriteSingleRegister(ctx context.Context, addr, value uint16) error {
	_, err := c.Do(ctx, c.opts.UnitID, NewWriteSingleRegister(addr, value))
	return err
}

// WriteMultipleCoils sets consecutive coils (FC 15).
func (c *Client) WriteMultipleCoils(ctx context.Context, addr uint16, values []bool) error {
	req, err := NewWriteMultipleCoils(addr, values)
	if err != nil {
		return err
	}
	_, err = c.Do(ctx, c.opts.UnitID, req)
	return err
}

// WriteMultipleRegisters sets consecutive holding registers (FC 16).
func (c *Client) WriteMultipleRegisters(ctx context.Context, addr uint16, values []uint16) error {
	req, err := NewWriteMultipleRegisters(addr, values)
	if err != nil {
		return err
	}
	_, err = c.Do(ctx, c.opts.UnitID, req)
	return err
}

func (c *Client) readBits(ctx context.Context, fc FunctionCode, addr, qty uint16) ([]bool, error) {
	req, err := NewReadRequest(fc, addr, qty)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(ctx, c.opts.UnitID, req)
	return resp.Bits, err
}

func (c *Client) readRegs(ctx context.Context, fc FunctionCode, addr, qty uint16) ([]uint16, error) {
	req, err := NewReadRequest(fc, addr, qty)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(ctx, c.opts.UnitID, req)
	return resp.Registers, err
}
