package plugin

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/kedge-io/kedge/sdk"
	modulepb "github.com/kedge-io/kedge/sdk/proto"
)

// host is the module's sdk.Host inside the plugin: every call goes to the Host service the real host
// serves over the go-plugin broker, except the sends and replies a module makes with Handle's
// context while Handle runs, which ride back in Handle's response (see batch).
type host struct {
	name, node string
	conn       *grpc.ClientConn
	client     modulepb.HostClient
	store      remoteStore
	logs       *shipper
	logger     *slog.Logger
	reg        *prometheus.Registry
}

var _ sdk.Host = (*host)(nil)

func newHost(name, node string, conn *grpc.ClientConn, minLevel slog.Level) *host {
	client := modulepb.NewHostClient(conn)
	logs := newShipper(client)
	return &host{
		name: name, node: node, conn: conn, client: client,
		store:  remoteStore{client},
		logs:   logs,
		logger: slog.New(&logHandler{ship: logs, min: minLevel}),
		reg:    prometheus.NewRegistry(),
	}
}

// close flushes the logs (bounded by ctx) and drops the connection to the host.
func (h *host) close(ctx context.Context) {
	h.logs.close(ctx)
	_ = h.conn.Close()
}

func (h *host) Name() string                   { return h.name }
func (h *host) NodeName() string               { return h.node }
func (h *host) Store() sdk.Store               { return h.store }
func (h *host) Logger() *slog.Logger           { return h.logger }
func (h *host) Metrics() prometheus.Registerer { return h.reg }

func (h *host) Send(ctx context.Context, to string, m sdk.Message) error {
	m.Route.Source = h.name
	pm := modulepb.FromMessage(m)
	if b := batchFrom(ctx); b != nil && b.add(&modulepb.Outgoing{Kind: modulepb.Outgoing_KIND_SEND, Target: to, Message: pm}) {
		return nil
	}
	_, err := h.client.Send(ctx, &modulepb.SendRequest{To: to, Message: pm})
	return modulepb.Error(err)
}

func (h *host) SendToGroup(ctx context.Context, group string, m sdk.Message) error {
	m.Route.Source = h.name
	pm := modulepb.FromMessage(m)
	if b := batchFrom(ctx); b != nil && b.add(&modulepb.Outgoing{Kind: modulepb.Outgoing_KIND_GROUP, Target: group, Message: pm}) {
		return nil
	}
	_, err := h.client.SendToGroup(ctx, &modulepb.SendToGroupRequest{Group: group, Message: pm})
	return modulepb.Error(err)
}

func (h *host) Reply(ctx context.Context, m sdk.Message) error {
	m.Route.Source = h.name
	pm := modulepb.FromMessage(m)
	if b := batchFrom(ctx); b != nil && b.add(&modulepb.Outgoing{Kind: modulepb.Outgoing_KIND_REPLY, Message: pm}) {
		return nil
	}
	_, err := h.client.Reply(ctx, &modulepb.ReplyRequest{Message: pm})
	return modulepb.Error(err)
}

// SendSync is always a call of its own (it needs the answer). Sends batched earlier in the same
// Handle go with it and are routed first, so the receiver sees them in the order the module made them.
func (h *host) SendSync(ctx context.Context, to string, m sdk.Message, timeout time.Duration) (sdk.Message, error) {
	m.Route.Source = h.name
	req := &modulepb.SendSyncRequest{To: to, Message: modulepb.FromMessage(m), TimeoutNs: int64(timeout)}
	if b := batchFrom(ctx); b != nil {
		req.Flush = b.take()
	}
	resp, err := h.client.SendSync(ctx, req)
	if err != nil {
		return sdk.Message{}, modulepb.Error(err)
	}
	return resp.GetReply().ToMessage(), nil
}

// batch collects what a module sends with Handle's context while Handle runs. Once Handle returned
// the batch is sealed, and a goroutine still holding that context sends directly instead.
type batch struct {
	mu     sync.Mutex
	out    []*modulepb.Outgoing
	sealed bool
}

type batchKey struct{}

func batchFrom(ctx context.Context) *batch {
	b, _ := ctx.Value(batchKey{}).(*batch)
	return b
}

func (b *batch) add(o *modulepb.Outgoing) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sealed {
		return false
	}
	b.out = append(b.out, o)
	return true
}

// take removes what is batched so far; the batch stays open.
func (b *batch) take() []*modulepb.Outgoing {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.out
	b.out = nil
	return out
}

// seal ends the batch and returns what it holds.
func (b *batch) seal() []*modulepb.Outgoing {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sealed = true
	out := b.out
	b.out = nil
	return out
}

// remoteStore is the module's store namespace, reached through the host.
type remoteStore struct{ client modulepb.HostClient }

var _ sdk.Store = remoteStore{}

func (s remoteStore) Put(ctx context.Context, obj sdk.Object) (sdk.PutResult, error) {
	resp, err := s.client.Put(ctx, &modulepb.PutRequest{Object: modulepb.FromObject(obj)})
	if err != nil {
		return sdk.PutResult{}, modulepb.Error(err)
	}
	return resp.GetResult().ToPutResult(), nil
}

func (s remoteStore) PutBatch(ctx context.Context, objs []sdk.Object) ([]sdk.PutResult, error) {
	req := &modulepb.PutBatchRequest{Objects: make([]*modulepb.Object, len(objs))}
	for i, o := range objs {
		req.Objects[i] = modulepb.FromObject(o)
	}
	resp, err := s.client.PutBatch(ctx, req)
	if err != nil {
		return nil, modulepb.Error(err)
	}
	out := make([]sdk.PutResult, len(resp.GetResults()))
	for i, r := range resp.GetResults() {
		out[i] = r.ToPutResult()
	}
	return out, nil
}

func (s remoteStore) Get(ctx context.Context, k sdk.Key) (sdk.Object, error) {
	resp, err := s.client.Get(ctx, &modulepb.GetRequest{Key: modulepb.FromKey(k)})
	if err != nil {
		return sdk.Object{}, modulepb.Error(err)
	}
	return resp.GetObject().ToObject(), nil
}

func (s remoteStore) List(ctx context.Context, q sdk.Query) ([]sdk.Object, error) {
	resp, err := s.client.List(ctx, &modulepb.ListRequest{Type: q.Type, Namespace: q.Namespace, NamePrefix: q.NamePrefix})
	if err != nil {
		return nil, modulepb.Error(err)
	}
	out := make([]sdk.Object, len(resp.GetObjects()))
	for i, o := range resp.GetObjects() {
		out[i] = o.ToObject()
	}
	return out, nil
}

func (s remoteStore) Delete(ctx context.Context, k sdk.Key) (bool, error) {
	resp, err := s.client.Delete(ctx, &modulepb.DeleteRequest{Key: modulepb.FromKey(k)})
	if err != nil {
		return false, modulepb.Error(err)
	}
	return resp.GetExisted(), nil
}
