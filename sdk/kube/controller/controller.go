// Package controller is the skeleton of a cloud module that watches the Kubernetes API and serves
// edge nodes (Kedge's edgecontroller, devicecontroller and rolloutcontroller are three): a rate-limited
// workqueue of API keys worked by N goroutines, the informers' stop channel and first-list wait, the
// per-node fan-in of what the edge sends (one node's messages in order, nodes in parallel), the sorting
// of failed edge requests (forbidden, invalid, error) and the answer to the edge, the inventory an
// edge node sends on connect and the wait for it, and the REST client of a custom resource group.
//
// A controller keeps only its own reconcile (Options.Sync) and upstream logic (Options.Upstream):
//
//	r := controller.New(controller.Options[key]{Name: Name, Workers: m.Workers, SyncTimeout: m.SyncTimeout,
//		Logger: h.Logger(), Sync: m.sync, Upstream: m.handleUp})
//	inf.AddEventHandler(r.Handler(func(ns, name string) key { return key{ns, name} }))
//	r.Run(inf)
//	if err := r.WaitForSync(ctx, "widgets", inf.HasSynced); err != nil { return err }
//	r.Start(ctx)
//	// Handle: return r.Dispatch(ctx, msg); Stop: r.Stop()
package controller

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// upstreamBuffer is how many messages from the edge wait for one upstream worker before Dispatch
// blocks (and with it cloudhub's hand-over, which is the back pressure the edge sees).
const upstreamBuffer = 64

// Options configure a Runner.
type Options[K comparable] struct {
	// Name is the module's name: the workqueue's name (its client-go metrics) and the controller's
	// name in errors.
	Name string
	// Workers is the number of goroutines working the queue, and as many handling the edge's messages.
	Workers int
	// SyncTimeout bounds WaitForSync (the module's syncTimeout setting).
	SyncTimeout time.Duration
	// SyncHint is added to WaitForSync's error, after "is it reachable with this kubeconfig", e.g.
	// ", and are the CRDs of build/crds installed".
	SyncHint string
	Logger   *slog.Logger
	// Sync reconciles one key; an error retries it with the queue's backoff.
	Sync func(ctx context.Context, key K) error
	// SyncFailed, if set, is told of each failed Sync (count it) before the retry is logged.
	SyncFailed func(key K, err error)
	// Upstream handles one message from an edge node: a node's messages (and the hub events about
	// it) are handled one at a time, in the order they came.
	Upstream func(ctx context.Context, node string, msg sdk.Message)
	// Connected, Disconnected and Inventory, if set, handle the hub's events about a node (cloudhub
	// sends them to the group hubevents): kubeedge says the node runs KubeEdge's edgecore (which
	// sends no inventory; see AwaitInventory); inv is the node's inventory (an unreadable one is
	// logged, told to Refused and handled as empty). An event without its handler is dropped.
	Connected    func(ctx context.Context, node string, kubeedge bool)
	Disconnected func(ctx context.Context, node string)
	Inventory    func(ctx context.Context, node string, inv []InventoryItem)
	// Refused, if set, is told of each message refused before a handler saw it (count it): what is
	// "invalid" for a message whose resource names no node (Dispatch answers with err), "inventory"
	// for an inventory that is not a list of InventoryItem.
	Refused func(what string, err error)
}

// Runner runs a controller's queue workers, informers and upstream workers.
type Runner[K comparable] struct {
	// Queue holds the keys waiting for Sync.
	Queue workqueue.TypedRateLimitingInterface[K]

	opts     Options[K]
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	up       []chan upJob
}

// upJob is one message from the edge waiting for its node's worker.
type upJob struct {
	msg  sdk.Message
	node string
}

// New returns a Runner with its queue; nothing runs until Run and Start.
func New[K comparable](o Options[K]) *Runner[K] {
	if o.Workers <= 0 {
		o.Workers = 1
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Runner[K]{
		Queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[K](),
			workqueue.TypedRateLimitingQueueConfig[K]{Name: o.Name}),
		opts: o,
		stop: make(chan struct{}),
	}
}

// Done is closed when the runner closes (Close, Stop, or a failed WaitForSync): informers and
// informer factories run until it is.
func (r *Runner[K]) Done() <-chan struct{} { return r.stop }

// Run runs informers until the runner closes.
func (r *Runner[K]) Run(infs ...cache.SharedIndexInformer) {
	for _, inf := range infs {
		go inf.Run(r.stop)
	}
}

// Handler returns informer handlers that queue key(namespace, name) of every object added, updated
// or deleted (a tombstone's last known object included).
func (r *Runner[K]) Handler(key func(namespace, name string) K) cache.ResourceEventHandlerFuncs {
	enqueue := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if o, ok := obj.(interface {
			GetNamespace() string
			GetName() string
		}); ok {
			r.Queue.Add(key(o.GetNamespace(), o.GetName()))
		}
	}
	return cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, n any) { enqueue(n) }, DeleteFunc: enqueue}
}

// WaitForSync waits up to SyncTimeout for the informers' first list. When they do not all answer,
// the runner closes and the error names what (e.g. "devices and devicemodels (devices.kubeedge.io/v1beta1)")
// and the syncTimeout setting.
func (r *Runner[K]) WaitForSync(ctx context.Context, what string, synced ...cache.InformerSynced) error {
	syncCtx, cancel := context.WithTimeout(ctx, r.opts.SyncTimeout)
	defer cancel()
	if cache.WaitForCacheSync(syncCtx.Done(), synced...) {
		return nil
	}
	r.Close()
	return fmt.Errorf("the API server did not answer the first list of %s within %s (syncTimeout): is it reachable with this kubeconfig%s?", what, r.opts.SyncTimeout, r.opts.SyncHint)
}

// Start starts the queue workers and the upstream workers; they end when ctx ends or the runner
// closes.
func (r *Runner[K]) Start(ctx context.Context) {
	for range r.opts.Workers {
		r.wg.Go(func() {
			for r.processNext(ctx) {
			}
		})
	}
	r.up = make([]chan upJob, r.opts.Workers)
	for i := range r.up {
		ch := make(chan upJob, upstreamBuffer)
		r.up[i] = ch
		r.wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-r.stop:
					return
				case j := <-ch:
					r.upstream(ctx, j.node, j.msg)
				}
			}
		})
	}
}

// upstream routes one message of a node: the hub's events to their handlers, the rest to Upstream.
func (r *Runner[K]) upstream(ctx context.Context, node string, msg sdk.Message) {
	switch op := msg.Route.Operation; {
	case op == message.OpConnected && r.opts.Connected != nil:
		r.opts.Connected(ctx, node, ConnectedKubeEdge(msg.Content))
	case op == message.OpDisconnected && r.opts.Disconnected != nil:
		r.opts.Disconnected(ctx, node)
	case op == message.OpInventory && r.opts.Inventory != nil:
		inv, err := DecodeInventory(msg.Content)
		if err != nil {
			r.opts.Logger.Warn("inventory from an edge node is not a list of {resource, resourceVersion}; handled as empty", "node", node, "err", err)
			if r.opts.Refused != nil {
				r.opts.Refused("inventory", err)
			}
		}
		r.opts.Inventory(ctx, node, inv)
	case op == message.OpConnected || op == message.OpDisconnected || op == message.OpInventory:
		// a hub event this controller does not follow
	default:
		r.opts.Upstream(ctx, node, msg)
	}
}

func (r *Runner[K]) processNext(ctx context.Context) bool {
	key, quit := r.Queue.Get()
	if quit {
		return false
	}
	defer r.Queue.Done(key)
	if err := r.opts.Sync(ctx, key); err != nil {
		if r.opts.SyncFailed != nil {
			r.opts.SyncFailed(key, err)
		}
		r.opts.Logger.Warn("sync failed; retrying", "object", fmt.Sprint(key), "err", err)
		r.Queue.AddRateLimited(key)
		return true
	}
	r.Queue.Forget(key)
	return true
}

// ErrNoNode marks a message Dispatch could not take: its resource names no edge node.
var ErrNoNode = errors.New("names no edge node")

// Dispatch hands a message from cloudhub (from an edge node, or a hub event about one) to the
// upstream worker of its node: the node's hash picks the worker, so one node's messages stay in order
// while nodes proceed in parallel. A resource that names no node is an error wrapping ErrNoNode
// (the host answers a sync request with it), told to Refused. Call it only after Start; a module's
// Handle is Dispatch.
func (r *Runner[K]) Dispatch(ctx context.Context, msg sdk.Message) error {
	node, _, err := message.ToEdge(msg.Route.Resource)
	if err != nil {
		err = fmt.Errorf("message from %s: %w: %w", msg.Route.Source, ErrNoNode, err)
		if r.opts.Refused != nil {
			r.opts.Refused("invalid", err)
		}
		return err
	}
	hash := fnv.New32a()
	_, _ = hash.Write([]byte(node))
	select {
	case r.up[hash.Sum32()%uint32(len(r.up))] <- upJob{msg: msg, node: node}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close shuts the queue down and stops the informers; Wait then waits for the workers.
func (r *Runner[K]) Close() {
	r.Queue.ShutDown()
	r.stopOnce.Do(func() { close(r.stop) })
}

// Wait waits for the workers Start started.
func (r *Runner[K]) Wait() { r.wg.Wait() }

// Stop is Close and Wait; a nil Runner (a module whose Start failed early) is stopped already.
func (r *Runner[K]) Stop() {
	if r == nil {
		return
	}
	r.Close()
	r.Wait()
}
