package mapper

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"

	dmiv1beta1 "github.com/kedge-io/kedge/sdk/dmi/v1beta1"
)

// Handover: how a hot swap moves a mapper's devices from the running instance to a new one without
// a reading read and not delivered, or delivered twice.
//
// The host starts the new instance beside the old one (host/modules Swap). A mapper's work does not
// come through its mailbox, it polls its devices itself, so holding the mailbox does not stop it;
// and both cannot serve the one DMI socket. So each instance also listens on Socket+".handover",
// and a new instance that finds Socket in use asks the old one there, one line at a time:
//
//	new → old  release    old: stop taking DMI calls, let every device goroutine finish the read in
//	                      hand and report what it read, close the socket
//	old → new  released   new: listen on the socket, register with edgecore (getting the devices)
//	new → old  taken      old: close the handover socket; it is now idle until the host stops it
//	old → new  done       new: listen on the handover socket for the next swap
//
// If the new instance goes away or fails before "taken" (it could not listen or register), the old
// one takes the socket back and registers again: its devices are polled again, as a rolled-back
// swap promises.
const (
	handoverRelease  = "release"
	handoverReleased = "released"
	handoverTaken    = "taken"
	handoverDone     = "done"
)

var errSocketInUse = errors.New("in use by another process")

func handoverPath(socket string) string { return socket + ".handover" }

func (m *Module) isReleased() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.released
}

// takeover is the new instance's side of a handover in progress.
type takeover struct {
	conn net.Conn
	r    *bufio.Reader
	path string
}

// takeOver asks the instance serving Socket to release its devices and the socket, and waits until
// it did (bounded by a few call timeouts: the old instance finishes one read and report per device).
func (m *Module) takeOver(ctx context.Context) (*takeover, error) {
	path := handoverPath(m.Socket)
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, m.CallTimeout)
	c, err := d.DialContext(dctx, "unix", path)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("%s is in use and no instance of mapper %s answers on %s to hand it over: %w", m.Socket, m.name, path, err)
	}
	begin := time.Now()
	_ = c.SetDeadline(time.Now().Add(4 * m.CallTimeout))
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	t := &takeover{conn: c, r: bufio.NewReader(c), path: path}
	if _, err := fmt.Fprintln(c, handoverRelease); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("asking the instance on %s to hand over: %w", path, err)
	}
	line, err := t.r.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != handoverReleased {
		_ = c.Close()
		return nil, fmt.Errorf("the instance on %s did not hand over (answer %q): %v", path, strings.TrimSpace(line), err)
	}
	_ = c.SetDeadline(time.Time{})
	m.log.Info("the running instance released its devices", "socket", m.Socket, "waited", time.Since(begin))
	return t, nil
}

// abort gives the devices back: the old instance takes its socket again.
func (t *takeover) abort() {
	if t != nil {
		_ = t.conn.Close()
	}
}

// done tells the old instance the devices are taken and waits for it to free the handover socket.
func (t *takeover) done(log *slog.Logger) {
	defer t.conn.Close()
	_ = t.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintln(t.conn, handoverTaken); err != nil {
		log.Warn("telling the old instance its devices are taken failed", "err", err)
		return
	}
	if line, err := t.r.ReadString('\n'); err != nil || strings.TrimSpace(line) != handoverDone {
		log.Warn("the old instance did not confirm the handover", "answer", strings.TrimSpace(line), "err", err)
	}
}

// listenHandover serves the handover socket, for the next swap. A mapper that cannot is still
// served; a later swap of it then fails (the socket in use) and is rolled back.
func (m *Module) listenHandover() {
	path := handoverPath(m.Socket)
	var lis net.Listener
	var err error
	for range 20 { // the old instance removes it right after "done"
		if lis, err = listenUnix(path); !errors.Is(err, errSocketInUse) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		m.log.Warn("handover socket not served: a hot swap of this mapper will be refused", "socket", path, "err", err)
		return
	}
	m.mu.Lock()
	m.hlis = lis
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			if m.handOver(c) {
				return
			}
		}
	}()
}

// closeHandover stops serving the handover socket (Stop).
func (m *Module) closeHandover() {
	m.mu.Lock()
	lis := m.hlis
	m.hlis = nil
	m.mu.Unlock()
	if lis != nil {
		_ = lis.Close()
	}
}

// handOver is the old instance's side: it reports whether the devices went to the new instance.
func (m *Module) handOver(c net.Conn) bool {
	defer c.Close()
	stop := context.AfterFunc(m.ctx, func() { _ = c.Close() })
	defer stop()
	r := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(m.CallTimeout))
	line, err := r.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != handoverRelease {
		m.log.Warn("handover socket: unexpected request", "line", strings.TrimSpace(line), "err", err)
		return false
	}
	begin := time.Now()
	m.mu.Lock()
	m.released = true
	srv := m.srv
	m.mu.Unlock()
	srv.Stop() // no more DMI calls; closes (and removes) the socket
	m.stopRunners(true)
	m.log.Info("devices released to a new instance", "waited", time.Since(begin))
	_ = c.SetDeadline(time.Now().Add(4 * m.CallTimeout))
	if _, err := fmt.Fprintln(c, handoverReleased); err == nil {
		if line, err = r.ReadString('\n'); err == nil && strings.TrimSpace(line) == handoverTaken {
			m.mu.Lock()
			m.handedOver = true
			m.mu.Unlock()
			m.closeHandover()
			_, _ = fmt.Fprintln(c, handoverDone)
			m.log.Info("devices taken over by the new instance; this one is idle until stopped")
			return true
		}
	}
	m.log.Warn("the new instance did not take the devices over; serving them again", "err", err)
	m.resume()
	return false
}

// resume takes the socket back and registers again after a handover the new instance gave up.
func (m *Module) resume() {
	if m.ctx.Err() != nil {
		return
	}
	lis, err := listenUnix(m.Socket)
	if err != nil {
		m.log.Error("cannot serve the devices again after a failed handover", "socket", m.Socket, "err", err)
		return
	}
	srv := grpc.NewServer()
	dmiv1beta1.RegisterDeviceMapperServiceServer(srv, &server{m: m})
	m.mu.Lock()
	m.released, m.srv = false, srv
	m.mu.Unlock()
	m.wg.Add(1)
	go func() { defer m.wg.Done(); _ = srv.Serve(lis) }()
	select {
	case m.reregister <- struct{}{}:
	default:
	}
}
