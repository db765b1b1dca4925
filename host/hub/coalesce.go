package hub

import (
	"bufio"
	"net"
	"net/http"
	"sync"
)

// coalesceMax is the largest message whose two frames Send collects into one write. Bigger ones are
// written frame by frame: the saving no longer matters and the copy would.
const coalesceMax = 64 << 10

// coalescingConn sits between gorilla and the TLS connection so that Send can put a message's two
// frames into one TLS record and one system call: gorilla writes each frame out as soon as it is
// complete, so between hold and release the writes collect here. That halves the per-message cost
// of the syscall and the record encryption, which dominate for small messages.
type coalescingConn struct {
	net.Conn
	mu   sync.Mutex
	held bool
	buf  *[]byte // from heldBuffers while held, so an idle connection keeps none
}

var heldBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held {
		*c.buf = append(*c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *coalescingConn) hold() {
	c.mu.Lock()
	c.held = true
	c.buf = heldBuffers.Get().(*[]byte)
	c.mu.Unlock()
}

// release writes what was collected since hold, in one write, under the write deadline last set.
func (c *coalescingConn) release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = false
	_, err := c.Conn.Write(*c.buf)
	*c.buf = (*c.buf)[:0]
	if cap(*c.buf) <= 2*coalesceMax {
		heldBuffers.Put(c.buf)
	}
	c.buf = nil
	return err
}

// hijacker hands gorilla's Upgrader a coalescingConn around the hijacked connection.
type hijacker struct {
	http.ResponseWriter
	conn *coalescingConn
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.conn = &coalescingConn{Conn: nc}
	return h.conn, brw, nil
}
