package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/kedge-io/kedge/sdk"
	modulepb "github.com/kedge-io/kedge/sdk/proto"
)

// stableAfter is how long a plugin must run before its next crash counts as a first one again
// (restarted after BackoffMin rather than after a longer backoff).
const stableAfter = time.Minute

// pingMisses failed health pings in a row count as a crash.
const pingMisses = 3

// module is the host-side proxy of one plugin module. The manager drives it like a builtin module.
type module struct {
	name, group, path string
	sum               []byte
	config            []byte // the module's own settings, JSON
	loader            *Loader
	opts              Options

	h       sdk.Host     // set by Start
	log     *slog.Logger // the module's logger, with the plugin's path
	metrics *metrics

	ctx    context.Context // ends when Stop begins: no more restarts or pings
	cancel context.CancelFunc
	wg     sync.WaitGroup // supervise and ping

	mu      sync.Mutex
	cur     *instance     // nil while the plugin is being restarted
	changed chan struct{} // closed and replaced whenever cur changes or Stop begins
	lastErr error         // why cur is nil
	stopped bool
	version string // the release version the last started plugin reported
}

var (
	_ sdk.Module        = (*module)(nil)
	_ sdk.HealthChecker = (*module)(nil)
)

// Start launches the plugin and starts the module in it. Its supervision (restart on crash, health
// pings) runs until Stop.
func (m *module) Start(ctx context.Context, h sdk.Host) error {
	m.h = h
	m.log = h.Logger().With("plugin", m.path)
	m.changed = make(chan struct{})
	m.metrics = newMetrics(m)
	m.metrics.register(h.Metrics())
	launchCtx, cancel := context.WithTimeout(ctx, m.opts.StartTimeout)
	defer cancel()
	in, err := m.launch(launchCtx)
	if err != nil {
		return err
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.mu.Lock()
	m.setCurrent(in, nil)
	m.mu.Unlock()
	m.wg.Add(2)
	go m.supervise(in)
	go m.ping()
	m.log.Debug("plugin started", "pid", in.pid())
	return nil
}

// setCurrent installs in (nil while restarting, with why) and wakes everyone waiting; m.mu is held.
func (m *module) setCurrent(in *instance, why error) {
	m.cur, m.lastErr = in, why
	if in != nil {
		m.version = in.version
	}
	close(m.changed)
	m.changed = make(chan struct{})
}

// current returns the running instance, waiting while the plugin is being restarted.
func (m *module) current(ctx context.Context) (*instance, error) {
	for {
		m.mu.Lock()
		in, changed, stopped, why := m.cur, m.changed, m.stopped, m.lastErr
		m.mu.Unlock()
		if stopped {
			return nil, fmt.Errorf("plugin %s is stopped", m.path)
		}
		if in != nil && !in.dead() {
			return in, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("plugin %s is being restarted (%v): %w", m.path, why, ctx.Err())
		}
	}
}

// Handle forwards msg to the plugin and routes what the module sent while handling it. If the
// plugin dies meanwhile, Handle waits for the restart and tries msg again (at-least-once for this
// message), up to Options.MaxAttempts times. Later messages wait in the mailbox meanwhile.
func (m *module) Handle(ctx context.Context, msg sdk.Message) error {
	req := &modulepb.HandleRequest{Message: modulepb.FromMessage(msg)}
	for attempt := 1; ; attempt++ {
		in, err := m.current(ctx)
		if err != nil {
			return err
		}
		resp, err := in.handle(ctx, req)
		if err == nil {
			m.route(ctx, resp.GetOut())
			if e := resp.GetError(); e != "" {
				return errors.New(e)
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("plugin %s: message abandoned: %w", m.path, ctx.Err())
		}
		m.metrics.handleErrors.Inc()
		in.kill(fmt.Errorf("handling a message failed: %s", rpcMessage(err)))
		if attempt >= m.opts.MaxAttempts {
			return fmt.Errorf("plugin %s failed %d times while handling this message, last: %s; giving up on it (the plugin is restarted for the next one)",
				m.path, attempt, rpcMessage(err))
		}
		m.log.Warn("plugin failed while handling a message; retrying it once the plugin is restarted",
			"msg", msg.String(), "attempt", attempt, "err", rpcMessage(err))
	}
}

// route delivers the sends and replies the module made while handling a message, in order. The
// module has already been told they succeeded, so a failure is logged and counted here.
func (m *module) route(ctx context.Context, outs []*modulepb.Outgoing) {
	for _, o := range outs {
		msg := o.GetMessage().ToMessage()
		err := msg.Validate()
		if err == nil {
			switch o.GetKind() {
			case modulepb.Outgoing_KIND_SEND:
				err = m.h.Send(ctx, o.GetTarget(), msg)
			case modulepb.Outgoing_KIND_GROUP:
				err = m.h.SendToGroup(ctx, o.GetTarget(), msg)
			case modulepb.Outgoing_KIND_REPLY:
				err = m.h.Reply(ctx, msg)
			default:
				err = fmt.Errorf("unknown kind %d", o.GetKind())
			}
		}
		if err != nil {
			m.metrics.sendErrors.Inc()
			m.log.Warn("a send the module made while handling a message failed", "kind", o.GetKind().String(),
				"target", o.GetTarget(), "msg", msg.String(), "err", err)
		}
	}
}

// supervise restarts the plugin whenever its process ends before Stop.
func (m *module) supervise(in *instance) {
	defer m.wg.Done()
	fails := 0
	for {
		select {
		case <-in.exited:
		case <-m.ctx.Done():
			return
		}
		if m.ctx.Err() != nil {
			return
		}
		lived := time.Since(in.started)
		cause := in.exitCause()
		m.log.Error("plugin exited unexpectedly; restarting it", "cause", cause, "ran", lived.Round(time.Millisecond),
			"pid", in.pid(), "stderr", in.stderr.tail())
		in.cleanup()
		m.mu.Lock()
		m.setCurrent(nil, errors.New(cause))
		m.mu.Unlock()
		if lived >= stableAfter {
			fails = 0
		}
		for {
			delay := backoff(m.opts.BackoffMin, m.opts.BackoffMax, fails, rand.Float64())
			fails++
			select {
			case <-time.After(delay):
			case <-m.ctx.Done():
				return
			}
			ctx, cancel := context.WithTimeout(m.ctx, m.opts.StartTimeout)
			next, err := m.launch(ctx)
			cancel()
			if err != nil {
				if m.ctx.Err() != nil {
					return
				}
				m.mu.Lock()
				m.setCurrent(nil, err)
				m.mu.Unlock()
				m.log.Error("plugin restart failed; trying again", "err", err, "attempt", fails)
				continue
			}
			m.mu.Lock()
			if m.stopped {
				m.mu.Unlock()
				next.kill(errors.New("the module is stopping"))
				return
			}
			m.setCurrent(next, nil)
			m.mu.Unlock()
			m.metrics.restarts.Inc()
			m.log.Info("plugin restarted", "pid", next.pid(), "attempt", fails)
			in = next
			break
		}
	}
}

// backoff is the wait before restart number fails+1: lo doubled per earlier failure, ±20% jitter
// (jitter in [0,1)), never above hi.
func backoff(lo, hi time.Duration, fails int, jitter float64) time.Duration {
	d := lo
	for i := 0; i < fails && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return min(time.Duration(float64(d)*(0.8+0.4*jitter)), hi)
}

// ping checks the plugin answers on an interval; a plugin that stops answering is killed, which
// supervise sees as a crash.
func (m *module) ping() {
	defer m.wg.Done()
	t := time.NewTicker(m.opts.HealthInterval)
	defer t.Stop()
	misses := 0
	for {
		select {
		case <-t.C:
		case <-m.ctx.Done():
			return
		}
		m.mu.Lock()
		in := m.cur
		m.mu.Unlock()
		if in == nil {
			misses = 0
			continue
		}
		ctx, cancel := context.WithTimeout(m.ctx, m.opts.HealthTimeout)
		_, err := in.mod.Health(ctx, &modulepb.HealthRequest{})
		cancel()
		if err == nil || m.ctx.Err() != nil || in.dead() {
			misses = 0
			continue
		}
		misses++
		m.log.Warn("plugin did not answer a health ping", "err", rpcMessage(err), "misses", misses)
		if misses >= pingMisses {
			in.kill(fmt.Errorf("%d health pings in a row failed, last: %s", misses, rpcMessage(err)))
			misses = 0
		}
	}
}

// Version is the release version the plugin reported when it started (plugin.WithVersion; kedge-module
// -X main.version), or "" if it reports none. `module ls` shows it.
func (m *module) Version() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.version
}

// Healthy asks the module whether it works (sdk.HealthChecker in the plugin; a module without it is
// healthy while it answers).
func (m *module) Healthy(ctx context.Context) error {
	m.mu.Lock()
	in, why, stopped := m.cur, m.lastErr, m.stopped
	m.mu.Unlock()
	switch {
	case stopped:
		return fmt.Errorf("plugin %s is stopped", m.path)
	case in == nil:
		return fmt.Errorf("plugin %s is being restarted: %v", m.path, why)
	}
	ctx, cancel := context.WithTimeout(ctx, m.opts.HealthTimeout)
	defer cancel()
	resp, err := in.mod.Health(ctx, &modulepb.HealthRequest{})
	if err != nil {
		return fmt.Errorf("plugin %s does not answer: %s", m.path, rpcMessage(err))
	}
	if e := resp.GetError(); e != "" {
		return errors.New(e)
	}
	return nil
}

// Stop stops the module in the plugin, then the process. No restart happens once Stop began.
func (m *module) Stop(ctx context.Context) error {
	m.mu.Lock()
	if m.stopped || m.cancel == nil {
		m.mu.Unlock()
		return nil
	}
	m.stopped = true
	m.cancel()
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done(): // a restart in progress; it kills what it launched once it sees stopped
	}
	m.mu.Lock()
	in := m.cur
	m.cur = nil
	m.mu.Unlock()
	if in == nil {
		return nil
	}
	if err := in.stop(ctx); err != nil {
		return fmt.Errorf("plugin %s: stop: %w", m.path, err)
	}
	return nil
}
