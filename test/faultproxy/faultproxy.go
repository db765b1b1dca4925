// Package faultproxy is a TCP proxy for tests that injects network faults on demand: latency, a
// bandwidth cap, cutting every connection, refusing new ones, and a half-open black hole. It listens
// on 127.0.0.1 and forwards each accepted connection to one target; faults are switched at run time
// from the test while traffic flows.
package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards connections from Addr to a target, with faults switched on and off at run time.
type Proxy struct {
	target string
	ln     net.Listener

	delay     atomic.Int64 // time.Duration added to each chunk's delivery
	bandwidth atomic.Int64 // bytes per second per direction per connection; 0 = unlimited
	refuse    atomic.Bool

	mu     sync.Mutex
	links  map[*link]struct{}
	flow   chan struct{} // closed while traffic flows; open (blocking) while half-open
	closed bool
	wg     sync.WaitGroup

	accepted, refused, cuts atomic.Int64
	up, down                atomic.Int64
}

// Stats are the proxy's counters since New.
type Stats struct {
	Accepted int64 // connections accepted and forwarded
	Refused  int64 // connections dropped by Refuse
	Active   int   // connections open now
	Cuts     int64 // connections closed by Cut
	BytesUp  int64 // client to target
	BytesDn  int64 // target to client
}

// New starts a proxy on 127.0.0.1 (a free port) forwarding to target (host:port).
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{target: target, ln: ln, links: map[*link]struct{}{}, flow: make(chan struct{})}
	close(p.flow)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listening address (host:port); clients dial it instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetDelay adds d of latency to every chunk read from then on, each direction; throughput is
// unchanged. 0 removes it.
func (p *Proxy) SetDelay(d time.Duration) { p.delay.Store(int64(max(d, 0))) }

// SetBandwidth caps each direction of each connection at bytesPerSec; 0 removes the cap.
func (p *Proxy) SetBandwidth(bytesPerSec int) { p.bandwidth.Store(int64(max(bytesPerSec, 0))) }

// Refuse makes the proxy drop new connections (accept, then reset) while on. Open ones are untouched.
func (p *Proxy) Refuse(on bool) { p.refuse.Store(on) }

// HalfOpen turns the link into a black hole while on: every connection, and any new one, stays open
// but nothing is forwarded either way, as when a NAT or a cable drops a live path without telling
// either end. Bytes already in flight wait inside the proxy; turning it off delivers them and resumes,
// like a partition that heals before TCP gives up.
func (p *Proxy) HalfOpen(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.flow: // flowing
		if on {
			p.flow = make(chan struct{})
		}
	default: // held
		if !on {
			close(p.flow)
		}
	}
}

// Cut closes every current connection now, with a reset on both sides, and returns how many. New
// connections are accepted as usual.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		l.close(true)
	}
	p.cuts.Add(int64(len(links)))
	return len(links)
}

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	active := len(p.links)
	p.mu.Unlock()
	return Stats{Accepted: p.accepted.Load(), Refused: p.refused.Load(), Active: active,
		Cuts: p.cuts.Load(), BytesUp: p.up.Load(), BytesDn: p.down.Load()}
}

// Close stops listening, closes every connection and waits for the proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	err := p.ln.Close()
	for _, l := range links {
		l.close(false)
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // listener closed
		}
		if p.refuse.Load() {
			p.refused.Add(1)
			reset(c)
			continue
		}
		p.accepted.Add(1)
		l := &link{client: c, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			reset(c)
			return
		}
		p.links[l] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(l)
	}
}

// reset closes c with an RST rather than a FIN, as a cut link or a refusing host does.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func (p *Proxy) serve(l *link) {
	defer p.wg.Done()
	defer func() {
		l.close(false)
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	}()
	// A black hole also swallows connection attempts: do not reach the target until traffic flows.
	if !p.waitFlow(l) {
		return
	}
	target, err := net.DialTimeout("tcp", p.target, 10*time.Second)
	if err != nil {
		return
	}
	if !l.setTarget(target) {
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(l, l.client, target, &p.up) }()
	go func() { defer wg.Done(); p.pipe(l, target, l.client, &p.down) }()
	wg.Wait()
}

// waitFlow blocks while the proxy is half-open; false if the link closed meanwhile.
func (p *Proxy) waitFlow(l *link) bool {
	for {
		p.mu.Lock()
		flow := p.flow
		p.mu.Unlock()
		select {
		case <-flow:
			p.mu.Lock()
			still := p.flow == flow // not half-open again since
			p.mu.Unlock()
			if still {
				return true
			}
		case <-l.done:
			return false
		}
	}
}

type chunk struct {
	data []byte
	due  time.Time
}

// pipe copies src to dst through a queue, so delay adds latency without cutting throughput: the
// reader stamps each chunk with its due time, the writer holds it until then, paces it to the
// bandwidth cap and waits while the proxy is half-open. A clean end (EOF) is passed on as a
// half-close; any other end closes the whole link.
func (p *Proxy) pipe(l *link, src, dst net.Conn, count *atomic.Int64) {
	queue := make(chan chunk, 64)
	var eof bool // written before queue is closed, read after
	go func() {
		defer close(queue)
		for {
			if !p.waitFlow(l) {
				return
			}
			buf := make([]byte, p.chunkSize())
			n, err := src.Read(buf)
			if n > 0 {
				select {
				case queue <- chunk{data: buf[:n], due: time.Now().Add(time.Duration(p.delay.Load()))}:
				case <-l.done:
					return
				}
			}
			if err != nil {
				eof = errors.Is(err, io.EOF)
				return
			}
		}
	}()
	var next time.Time // bandwidth pacing: when the next chunk may go
	for c := range queue {
		if !sleepUntil(c.due, l) || !p.waitFlow(l) {
			l.close(false)
			return
		}
		if bps := p.bandwidth.Load(); bps > 0 {
			if now := time.Now(); next.Before(now) {
				next = now
			}
			next = next.Add(time.Duration(int64(len(c.data)) * int64(time.Second) / bps))
			if !sleepUntil(next, l) {
				return
			}
		}
		if _, err := dst.Write(c.data); err != nil {
			l.close(false)
			return
		}
		count.Add(int64(len(c.data)))
	}
	if tc, ok := dst.(*net.TCPConn); ok && eof {
		_ = tc.CloseWrite()
		return
	}
	l.close(false)
}

// chunkSize keeps a capped link smooth: about 20 chunks a second at the cap, at most 32 KiB.
func (p *Proxy) chunkSize() int {
	const most = 32 << 10
	if bps := p.bandwidth.Load(); bps > 0 {
		return int(min(max(bps/20, 1), most))
	}
	return most
}

func sleepUntil(t time.Time, l *link) bool {
	d := time.Until(t)
	if d <= 0 {
		select {
		case <-l.done:
			return false
		default:
			return true
		}
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-l.done:
		return false
	}
}

// link is one proxied connection: the client's socket and, once dialed, the target's.
type link struct {
	mu     sync.Mutex
	client net.Conn
	target net.Conn
	done   chan struct{}
	once   sync.Once
}

// setTarget records the dialed target; false (and the target closed) if the link closed meanwhile.
func (l *link) setTarget(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.done:
		_ = c.Close()
		return false
	default:
		l.target = c
		return true
	}
}

// close closes both sockets once; rst sends resets instead of FINs.
func (l *link) close(rst bool) {
	l.once.Do(func() {
		l.mu.Lock()
		close(l.done)
		client, target := l.client, l.target
		l.mu.Unlock()
		for _, c := range []net.Conn{client, target} {
			if c == nil {
				continue
			}
			if rst {
				reset(c)
			} else {
				_ = c.Close()
			}
		}
	})
}
