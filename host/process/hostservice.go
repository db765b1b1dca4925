package process

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kedge-io/kedge/sdk"
	modulepb "github.com/kedge-io/kedge/sdk/proto"
)

// hostService serves the module's sdk.Host to its plugin. Everything goes through the Host the
// manager gave the module, so a plugin reaches exactly what a builtin module would: its own store
// namespace, sends stamped with its own name, its own logger and metrics.
type hostService struct {
	modulepb.UnimplementedHostServer
	m *module
}

// message converts and checks a message from the plugin: it crossed a process boundary, so a broken
// one is refused here with a clear error rather than failing later in another module or the hub.
func message(pm *modulepb.Message) (sdk.Message, error) {
	msg := pm.ToMessage()
	if err := msg.Validate(); err != nil {
		return msg, status.Errorf(codes.InvalidArgument, "invalid message: %v", err)
	}
	return msg, nil
}

func (s *hostService) Send(ctx context.Context, req *modulepb.SendRequest) (*modulepb.SendResponse, error) {
	msg, err := message(req.GetMessage())
	if err != nil {
		return nil, err
	}
	return &modulepb.SendResponse{}, modulepb.Status(s.m.h.Send(ctx, req.GetTo(), msg))
}

func (s *hostService) SendToGroup(ctx context.Context, req *modulepb.SendToGroupRequest) (*modulepb.SendResponse, error) {
	msg, err := message(req.GetMessage())
	if err != nil {
		return nil, err
	}
	return &modulepb.SendResponse{}, modulepb.Status(s.m.h.SendToGroup(ctx, req.GetGroup(), msg))
}

func (s *hostService) SendSync(ctx context.Context, req *modulepb.SendSyncRequest) (*modulepb.SendSyncResponse, error) {
	s.m.route(ctx, req.GetFlush())
	msg, err := message(req.GetMessage())
	if err != nil {
		return nil, err
	}
	reply, err := s.m.h.SendSync(ctx, req.GetTo(), msg, time.Duration(req.GetTimeoutNs()))
	if err != nil {
		return nil, modulepb.Status(err)
	}
	return &modulepb.SendSyncResponse{Reply: modulepb.FromMessage(reply)}, nil
}

func (s *hostService) Reply(ctx context.Context, req *modulepb.ReplyRequest) (*modulepb.SendResponse, error) {
	msg, err := message(req.GetMessage())
	if err != nil {
		return nil, err
	}
	return &modulepb.SendResponse{}, modulepb.Status(s.m.h.Reply(ctx, msg))
}

func (s *hostService) Get(ctx context.Context, req *modulepb.GetRequest) (*modulepb.GetResponse, error) {
	obj, err := s.m.h.Store().Get(ctx, req.GetKey().ToKey())
	if err != nil {
		return nil, modulepb.Status(err)
	}
	return &modulepb.GetResponse{Object: modulepb.FromObject(obj)}, nil
}

func (s *hostService) Put(ctx context.Context, req *modulepb.PutRequest) (*modulepb.PutResponse, error) {
	res, err := s.m.h.Store().Put(ctx, req.GetObject().ToObject())
	if err != nil {
		return nil, modulepb.Status(err)
	}
	return &modulepb.PutResponse{Result: modulepb.FromPutResult(res)}, nil
}

func (s *hostService) PutBatch(ctx context.Context, req *modulepb.PutBatchRequest) (*modulepb.PutBatchResponse, error) {
	objs := make([]sdk.Object, len(req.GetObjects()))
	for i, o := range req.GetObjects() {
		objs[i] = o.ToObject()
	}
	res, err := s.m.h.Store().PutBatch(ctx, objs)
	if err != nil {
		return nil, modulepb.Status(err)
	}
	out := &modulepb.PutBatchResponse{Results: make([]*modulepb.PutResult, len(res))}
	for i, r := range res {
		out.Results[i] = modulepb.FromPutResult(r)
	}
	return out, nil
}

func (s *hostService) List(ctx context.Context, req *modulepb.ListRequest) (*modulepb.ListResponse, error) {
	objs, err := s.m.h.Store().List(ctx, sdk.Query{Type: req.GetType(), Namespace: req.GetNamespace(), NamePrefix: req.GetNamePrefix()})
	if err != nil {
		return nil, modulepb.Status(err)
	}
	out := &modulepb.ListResponse{Objects: make([]*modulepb.Object, len(objs))}
	for i, o := range objs {
		out.Objects[i] = modulepb.FromObject(o)
	}
	return out, nil
}

func (s *hostService) Delete(ctx context.Context, req *modulepb.DeleteRequest) (*modulepb.DeleteResponse, error) {
	existed, err := s.m.h.Store().Delete(ctx, req.GetKey().ToKey())
	if err != nil {
		return nil, modulepb.Status(err)
	}
	return &modulepb.DeleteResponse{Existed: existed}, nil
}

// Log writes the plugin's records into the module's log stream with their own time and level; the
// module's logger adds module=<name> like it does for a builtin module.
func (s *hostService) Log(ctx context.Context, req *modulepb.LogRequest) (*modulepb.LogResponse, error) {
	handler := s.m.h.Logger().Handler()
	for _, rec := range req.GetRecords() {
		level := slog.Level(rec.GetLevel())
		if !handler.Enabled(ctx, level) {
			continue
		}
		r := slog.NewRecord(time.Unix(0, rec.GetTimeUnixNano()), level, rec.GetMessage(), 0)
		for _, a := range rec.GetAttrs() {
			r.AddAttrs(attr(a))
		}
		_ = handler.Handle(ctx, r)
	}
	if n := req.GetDropped(); n > 0 {
		s.m.log.Warn("the plugin dropped log records because the host did not take them fast enough", "dropped", n)
	}
	return &modulepb.LogResponse{}, nil
}

func attr(a *modulepb.Attr) slog.Attr {
	switch v := a.GetValue().(type) {
	case *modulepb.Attr_Str:
		return slog.String(a.GetKey(), v.Str)
	case *modulepb.Attr_Int:
		return slog.Int64(a.GetKey(), v.Int)
	case *modulepb.Attr_Uint:
		return slog.Uint64(a.GetKey(), v.Uint)
	case *modulepb.Attr_Float:
		return slog.Float64(a.GetKey(), v.Float)
	case *modulepb.Attr_Bool:
		return slog.Bool(a.GetKey(), v.Bool)
	case *modulepb.Attr_DurationNs:
		return slog.Duration(a.GetKey(), time.Duration(v.DurationNs))
	case *modulepb.Attr_TimeUnixNano:
		return slog.Time(a.GetKey(), time.Unix(0, v.TimeUnixNano))
	default:
		return slog.Any(a.GetKey(), nil)
	}
}

// minLevel is the lowest level the module's logger writes, so the plugin does not send records the
// host would drop.
func minLevel(h sdk.Host) slog.Level {
	for _, l := range []slog.Level{slog.LevelDebug - 4, slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError} {
		if h.Logger().Enabled(context.Background(), l) {
			return l
		}
	}
	return slog.LevelError + 4
}
