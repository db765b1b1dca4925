package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// echoServer echoes every connection on 127.0.0.1 until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads it back, failing after a generous bound.
func roundTrip(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read back: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("echo differs from what was sent")
	}
	_ = c.SetDeadline(time.Time{})
}

func TestProxyForwardsBothWaysAndCountsBytes(t *testing.T) {
	p := newProxy(t, echoServer(t))
	c := dial(t, p)
	msg := bytes.Repeat([]byte("kedge"), 20_000) // 100 kB, several chunks
	roundTrip(t, c, msg)
	// The proxy counts a chunk after writing it, so the last count may land just after the reader
	// has the bytes: wait for it (bounded) instead of reading once.
	s := p.Stats()
	for deadline := time.Now().Add(5 * time.Second); (s.BytesDn < int64(len(msg)) || s.BytesUp < int64(len(msg))) && time.Now().Before(deadline); s = p.Stats() {
		time.Sleep(time.Millisecond)
	}
	if s.Accepted != 1 || s.Active != 1 || s.BytesUp != int64(len(msg)) || s.BytesDn != int64(len(msg)) {
		t.Fatalf("stats = %+v, want 1 accepted, 1 active, %d bytes each way", s, len(msg))
	}
}

func TestDelayHoldsEachDirectionAtLeastTheDelay(t *testing.T) {
	p := newProxy(t, echoServer(t))
	c := dial(t, p)
	roundTrip(t, c, []byte("warm-up")) // the target dial is not part of the measurement
	const d = 150 * time.Millisecond
	p.SetDelay(d)
	start := time.Now()
	roundTrip(t, c, []byte("hello"))
	if rtt := time.Since(start); rtt < 2*d {
		t.Fatalf("round trip took %v with %v delay each way, want at least %v", rtt, d, 2*d)
	}
	p.SetDelay(0)
	roundTrip(t, c, []byte("after"))
}

func TestBandwidthCapPacesTheTransfer(t *testing.T) {
	p := newProxy(t, echoServer(t))
	c := dial(t, p)
	roundTrip(t, c, []byte("warm-up"))
	const bps, n = 100_000, 50_000
	p.SetBandwidth(bps)
	start := time.Now()
	roundTrip(t, c, bytes.Repeat([]byte{'x'}, n))
	// Each direction is paced separately, but the echo overlaps them, so the lower bound is one
	// direction's worth.
	if took, want := time.Since(start), time.Duration(n)*time.Second/bps; took < want*9/10 {
		t.Fatalf("%d bytes under a %d B/s cap took %v, want at least %v", n, bps, took, want)
	}
}

func TestCutResetsEveryOpenConnectionAndNewOnesStillWork(t *testing.T) {
	p := newProxy(t, echoServer(t))
	conns := []net.Conn{dial(t, p), dial(t, p), dial(t, p)}
	for _, c := range conns {
		roundTrip(t, c, []byte("up"))
	}
	if n := p.Cut(); n != 3 {
		t.Fatalf("Cut closed %d connections, want 3", n)
	}
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Read(make([]byte, 1))
		if err == nil || isTimeout(err) {
			t.Fatalf("conn %d: read after Cut = %v, want EOF or reset", i, err)
		}
	}
	if s := p.Stats(); s.Cuts != 3 {
		t.Fatalf("Stats.Cuts = %d, want 3", s.Cuts)
	}
	roundTrip(t, dial(t, p), []byte("again"))
}

func TestRefuseDropsNewConnectionsOnly(t *testing.T) {
	p := newProxy(t, echoServer(t))
	old := dial(t, p)
	roundTrip(t, old, []byte("before"))
	p.Refuse(true)
	// The kernel completes the TCP handshake and the proxy resets it: the reset shows either on the
	// first read or, when it wins the race on loopback, already in connect.
	if c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second); err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("dial a refusing proxy = %v, want success then reset, or a reset", err)
		}
	} else {
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("read on a refused connection = %v, want EOF or reset", err)
		}
	}
	roundTrip(t, old, []byte("still up"))
	p.Refuse(false)
	roundTrip(t, dial(t, p), []byte("accepted again"))
	if s := p.Stats(); s.Refused != 1 || s.Accepted != 2 {
		t.Fatalf("stats = %+v, want 1 refused, 2 accepted", s)
	}
}

func TestHalfOpenBlackHolesBothWaysWithoutClosingThenHeals(t *testing.T) {
	p := newProxy(t, echoServer(t))
	c := dial(t, p)
	roundTrip(t, c, []byte("before"))

	p.HalfOpen(true)
	if _, err := c.Write([]byte("lost?")); err != nil {
		t.Fatalf("write into the black hole failed: %v (the socket must stay open)", err)
	}
	late := dial(t, p) // a connection made during the outage hangs too
	if _, err := late.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	for name, conn := range map[string]net.Conn{"open": c, "new": late} {
		_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := conn.Read(make([]byte, 16))
		if n != 0 || !isTimeout(err) {
			t.Fatalf("%s connection: read during half-open = %d bytes, %v; want nothing and a timeout", name, n, err)
		}
	}
	if s := p.Stats(); s.Active != 2 {
		t.Fatalf("active connections during half-open = %d, want 2", s.Active)
	}

	p.HalfOpen(false) // the partition heals: what was held arrives
	for name, tc := range map[string]struct {
		conn net.Conn
		want string
	}{"open": {c, "lost?"}, "new": {late, "late"}} {
		_ = tc.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		got := make([]byte, len(tc.want))
		if _, err := io.ReadFull(tc.conn, got); err != nil || string(got) != tc.want {
			t.Fatalf("%s connection after heal: %q, %v; want %q", name, got, err, tc.want)
		}
	}
}

func TestCloseEndsConnectionsAndListener(t *testing.T) {
	p := newProxy(t, echoServer(t))
	c := dial(t, p)
	roundTrip(t, c, []byte("x"))
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read after Close = %v, want EOF or reset", err)
	}
	if c2, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		c2.Close()
		t.Fatal("dial after Close succeeded, want refused")
	}
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
