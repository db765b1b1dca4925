package pluginmanager

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/kedge-io/kedge/sdk"
)

// queue is the work waiting for one target module. Rollouts of the same module run one at a time,
// in arrival order; at most one generation of each rollout waits (the newest).
type queue struct {
	pending []Rollout
	running *Rollout
	// cancelFetch cancels the running rollout's download (not its swap or health check).
	cancelFetch context.CancelCauseFunc
	// runningDeleted: the running rollout was deleted meanwhile; its result is forgotten when it ends.
	runningDeleted bool
}

// errStopping is Handle's answer once Stop began.
var errStopping = errors.New("pluginmanager: stopping; the rollout is handed again at the next start")

// enqueue queues r for its target module's worker, starting the worker if none runs:
//   - a queued older generation of the same rollout is replaced by r (it never runs);
//   - a running older generation of the same rollout still fetching is cancelled (it reports
//     Failed "superseded"; one already swapping finishes first);
//   - an older generation than one queued is dropped.
func (m *Module) enqueue(r Rollout) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped || m.life.Err() != nil {
		return errStopping
	}
	q := m.queues[r.Module]
	if q == nil { // a queue in the map has its worker; the worker removes it when it runs dry
		q = &queue{}
		m.queues[r.Module] = q
		m.wg.Add(1)
		go m.work(r.Module, q)
	}
	if q.running != nil && q.running.Rollout == r.Rollout && q.running.Generation < r.Generation {
		q.cancelFetch(fmt.Errorf("superseded by generation %d (%s) before it was swapped in", r.Generation, r.Version))
		m.superseded.Inc()
	}
	queued := false
	for i, p := range q.pending {
		if p.Rollout != r.Rollout {
			continue
		}
		queued = true
		if r.Generation >= p.Generation {
			if r.Generation > p.Generation {
				m.superseded.Inc()
			}
			q.pending[i] = r
		} else {
			m.superseded.Inc()
		}
	}
	if !queued {
		q.pending = append(q.pending, r)
	}
	return nil
}

// work runs q's rollouts until it is empty (then the worker ends; the next message starts another).
func (m *Module) work(module string, q *queue) {
	defer m.wg.Done()
	select {
	case <-m.ready: // the start-up check of the last good versions is done
	case <-m.life.Done():
	}
	for {
		m.mu.Lock()
		if len(q.pending) == 0 || m.life.Err() != nil {
			q.running, q.cancelFetch = nil, nil
			delete(m.queues, module)
			m.mu.Unlock()
			return
		}
		r := q.pending[0]
		q.pending = q.pending[1:]
		fetchCtx, cancel := context.WithCancelCause(m.life)
		q.running, q.cancelFetch = &r, cancel
		m.mu.Unlock()

		if err := m.rollout(m.life, fetchCtx, r); err != nil {
			m.host.Logger().Error("rollout", "rollout", r.Rollout, "generation", r.Generation, "target", module, "err", err)
		}
		cancel(nil)
		m.mu.Lock()
		deleted := q.runningDeleted
		q.running, q.cancelFetch, q.runningDeleted = nil, nil, false
		m.mu.Unlock()
		if deleted {
			if err := m.dropResult(m.life, r.Rollout); err != nil {
				m.host.Logger().Error("forget the result of a deleted rollout", "rollout", r.Rollout, "err", err)
			}
		}
	}
}

// forget drops a deleted rollout: its queued generations never run, a running one still fetching is
// cancelled (one already swapping finishes: what it installed stays, like everything a deleted
// rollout installed), and its recorded result is removed, so a rollout created again under the same
// name starts from generation 1 instead of being taken for an old repeat.
func (m *Module) forget(ctx context.Context, rollout string) error {
	m.mu.Lock()
	for _, q := range m.queues {
		q.pending = slices.DeleteFunc(q.pending, func(p Rollout) bool { return p.Rollout == rollout })
		if q.running != nil && q.running.Rollout == rollout {
			q.runningDeleted = true
			q.cancelFetch(errors.New("the rollout was deleted"))
		}
	}
	m.mu.Unlock()
	return m.dropResult(ctx, rollout)
}

func (m *Module) dropResult(ctx context.Context, rollout string) error {
	ns, name, _ := strings.Cut(rollout, "/")
	if _, err := m.host.Store().Delete(ctx, sdk.Key{Type: typeResult, Namespace: ns, Name: name}); err != nil {
		return fmt.Errorf("pluginmanager: forget rollout %s: %w", rollout, err)
	}
	return nil
}
