package probe

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// timing is a probe's numbers with the API defaults applied.
type timing struct {
	initialDelay, period, timeout int32 // seconds
	success, failure              int32
}

func newTiming(kind Kind, p *corev1.Probe) (timing, error) {
	t := timing{initialDelay: p.InitialDelaySeconds, period: p.PeriodSeconds, timeout: p.TimeoutSeconds,
		success: p.SuccessThreshold, failure: p.FailureThreshold}
	if t.period == 0 {
		t.period = 10
	}
	if t.timeout == 0 {
		t.timeout = 1
	}
	if t.success == 0 {
		t.success = 1
	}
	if t.failure == 0 {
		t.failure = 3
	}
	switch {
	case t.initialDelay < 0:
		return t, fmt.Errorf("initialDelaySeconds %d is negative", t.initialDelay)
	case t.period < 0:
		return t, fmt.Errorf("periodSeconds %d is negative", t.period)
	case t.timeout < 0:
		return t, fmt.Errorf("timeoutSeconds %d is negative", t.timeout)
	case t.success < 0:
		return t, fmt.Errorf("successThreshold %d is negative", t.success)
	case t.failure < 0:
		return t, fmt.Errorf("failureThreshold %d is negative", t.failure)
	case kind != Readiness && t.success != 1:
		return t, fmt.Errorf("successThreshold must be 1 for a %s probe, not %d", kind, t.success)
	}
	return t, nil
}

type outcome int

const (
	unknown outcome = iota // the probe could not be run; thrown away
	success
	failure
)

// worker runs one probe of one container.
type worker struct {
	m       *Manager
	c       *container
	kind    Kind
	h       handler
	t       timing
	trigger chan struct{}

	last    outcome
	count   int32 // consecutive results equal to last
	known   bool  // a result was sent
	healthy bool  // the last result sent
	onHold  bool
}

func (w *worker) d(seconds int32) time.Duration { return time.Duration(seconds) * w.m.unit }

func (w *worker) run() {
	defer w.c.wg.Done()
	if w.t.initialDelay > 0 {
		t := time.NewTimer(w.d(w.t.initialDelay))
		select {
		case <-w.c.stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
	tick := time.NewTicker(w.d(w.t.period))
	defer tick.Stop()
	for {
		w.probeOnce()
		select {
		case <-w.c.stop:
			return
		case <-tick.C:
		case <-w.trigger:
		}
	}
}

func (w *worker) probeOnce() {
	if w.onHold {
		return
	}
	started := w.c.isStarted()
	if w.kind == Startup && started {
		return // done
	}
	if w.kind != Startup && !started {
		return // gated by the startup probe
	}
	timeout := w.d(w.t.timeout)
	limit := timeout
	if _, ok := w.h.(execHandler); ok {
		limit += w.m.execGrace // the runtime bounds the command by timeout; this bounds the call
	}
	ctx, cancel := context.WithTimeout(w.c.ctx, limit)
	res, msg := w.h.probe(ctx, w, timeout)
	cancel()
	select {
	case <-w.c.stop:
		return // stopped while probing: the result means nothing
	default:
	}
	if res == unknown {
		w.m.log.Warn("probe could not run; result discarded", "pod", w.c.pod, "container", w.c.name,
			"probe", w.kind, "error", msg)
		return
	}
	if res == w.last {
		w.count++
	} else {
		w.last, w.count = res, 1
	}
	if (res == failure && w.count < w.t.failure) || (res == success && w.count < w.t.success) {
		return
	}
	healthy := res == success
	w.apply(healthy)
	if !w.known || w.healthy != healthy {
		w.known, w.healthy = true, healthy
		w.emit(healthy, msg)
	}
	if !healthy && (w.kind == Liveness || w.kind == Startup) {
		w.onHold, w.count = true, 0 // wait for the restarted container (a new Start)
	}
}

// apply records the result in the container's state and wakes the gated probes when it started.
func (w *worker) apply(healthy bool) {
	c := w.c
	c.mu.Lock()
	wake := false
	switch w.kind {
	case Startup:
		if healthy && !c.started {
			c.started, wake = true, true
			c.ready = !c.hasReadiness
		}
	case Readiness:
		c.ready = healthy && c.started
	}
	c.mu.Unlock()
	if wake {
		for _, o := range c.workers {
			if o != w {
				select {
				case o.trigger <- struct{}{}:
				default:
				}
			}
		}
	}
}

func (w *worker) emit(healthy bool, msg string) {
	r := Result{PodUID: w.c.pod, Container: w.c.name, ContainerID: w.c.id, Kind: w.kind,
		Healthy: healthy, Message: msg, Time: time.Now()}
	w.m.log.Debug("probe result", "pod", r.PodUID, "container", r.Container, "probe", r.Kind,
		"healthy", healthy, "message", msg)
	select {
	case w.m.results <- r:
	case <-w.c.stop:
	}
}
