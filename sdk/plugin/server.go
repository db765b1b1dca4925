package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kedge-io/kedge/sdk"
	modulepb "github.com/kedge-io/kedge/sdk/proto"
)

// server is the Module service: it drives the module the way the host's manager drives a builtin
// one (Start once, Handle one message at a time, Stop once).
type server struct {
	modulepb.UnimplementedModuleServer
	info    sdk.Info
	broker  *goplugin.GRPCBroker
	version string // the release version reported in StartResponse ("" for none)

	mu     sync.Mutex // guards the fields below
	mod    sdk.Module
	host   *host
	life   context.Context // the module's lifetime, cancelled by Stop
	cancel context.CancelFunc
	done   bool // Stop ran

	// handling holds a token while Handle runs, so a message on a new stream (the host gave up on the
	// old one) still waits for the previous one: the module never sees two at once.
	handling chan struct{}
}

func newServer(info sdk.Info, broker *goplugin.GRPCBroker, version string) *server {
	return &server{info: info, broker: broker, version: version, handling: make(chan struct{}, 1)}
}

func (s *server) Start(ctx context.Context, req *modulepb.StartRequest) (*modulepb.StartResponse, error) {
	if req.GetApiVersion() != sdk.APIVersion {
		return nil, status.Errorf(codes.FailedPrecondition,
			"plugin %s was built for module API version %s, the host speaks %s: rebuild the plugin with the host's Kedge sdk",
			s.info.Name, sdk.APIVersion, req.GetApiVersion())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mod != nil || s.done {
		return nil, status.Error(codes.FailedPrecondition, "the module was already started")
	}
	mod := s.info.New()
	if err := decodeConfig(req.GetModule(), req.GetConfig(), mod); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	conn, err := s.broker.Dial(req.GetHostBrokerId())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "connect to the host's services (broker id %d): %v", req.GetHostBrokerId(), err)
	}
	h := newHost(req.GetModule(), req.GetNode(), conn, slog.Level(req.GetLogLevel()))
	life, cancel := context.WithCancel(context.Background())
	if err := startModule(life, mod, h); err != nil {
		cancel()
		h.close(ctx)
		return nil, status.Error(codes.Aborted, err.Error())
	}
	s.mod, s.host, s.life, s.cancel = mod, h, life, cancel
	return &modulepb.StartResponse{ApiVersion: sdk.APIVersion, Name: s.info.Name, Group: s.info.Group, Doc: s.info.Doc, Version: s.version}, nil
}

// Validate decodes the settings into a fresh module value as Start would and runs its own check
// (sdk.Validator), starting nothing: the host asks before anything starts (validate, startup, reload,
// swap), then stops the plugin. Each problem comes back with its key inside the module's block.
func (s *server) Validate(_ context.Context, req *modulepb.ValidateRequest) (*modulepb.ValidateResponse, error) {
	if req.GetApiVersion() != sdk.APIVersion {
		return nil, status.Errorf(codes.FailedPrecondition,
			"plugin %s was built for module API version %s, the host speaks %s: rebuild the plugin with the host's Kedge sdk",
			s.info.Name, sdk.APIVersion, req.GetApiVersion())
	}
	err := decodeConfig(req.GetModule(), req.GetConfig(), s.info.New())
	return &modulepb.ValidateResponse{Problems: settingProblems(req.GetModule(), err)}, nil
}

// startModule turns a panic in Start into an error: the host reports it and the plugin is stopped,
// exactly as a builtin module's panic in Start fails its start.
func startModule(ctx context.Context, mod sdk.Module, h sdk.Host) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in Start: %v\n%s", p, debug.Stack())
		}
	}()
	return mod.Start(ctx, h)
}

// Handle takes one message at a time from the host's stream. A panic in the module's Handle is not
// recovered: the process dies, and the host treats it as a crash (restart, then retry the message).
func (s *server) Handle(stream modulepb.Module_HandleServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp, err := s.handle(stream.Context(), req.GetMessage())
		if err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

func (s *server) handle(streamCtx context.Context, m *modulepb.Message) (*modulepb.HandleResponse, error) {
	select {
	case s.handling <- struct{}{}:
	case <-streamCtx.Done():
		return nil, streamCtx.Err()
	}
	defer func() { <-s.handling }()
	s.mu.Lock()
	mod, life, done := s.mod, s.life, s.done
	s.mu.Unlock()
	if mod == nil || done {
		return nil, status.Error(codes.FailedPrecondition, "the module is not running (Handle before Start or after Stop)")
	}
	// Handle's context is the module's lifetime, as for a builtin module, plus the batch.
	b := &batch{}
	err := mod.Handle(context.WithValue(life, batchKey{}, b), m.ToMessage())
	resp := &modulepb.HandleResponse{Out: b.seal()}
	if err != nil {
		resp.Error = err.Error()
	}
	return resp, nil
}

func (s *server) Stop(ctx context.Context, _ *modulepb.StopRequest) (*modulepb.StopResponse, error) {
	s.mu.Lock()
	mod, h, cancel, done := s.mod, s.host, s.cancel, s.done
	s.done = true
	s.mu.Unlock()
	if mod == nil || done {
		return &modulepb.StopResponse{}, nil
	}
	cancel()
	// A message the host gave up on may still be in the module; Stop comes after the last Handle.
	select {
	case s.handling <- struct{}{}:
		defer func() { <-s.handling }()
	case <-ctx.Done():
		return nil, status.Errorf(codes.DeadlineExceeded, "Handle did not return before the stop deadline: %v", ctx.Err())
	}
	err := stopModule(ctx, mod)
	h.close(ctx) // after Stop, so what the module logs while stopping reaches the host
	if err != nil {
		return nil, status.Error(codes.Aborted, err.Error())
	}
	return &modulepb.StopResponse{}, nil
}

func stopModule(ctx context.Context, mod sdk.Module) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in Stop: %v\n%s", p, debug.Stack())
		}
	}()
	return mod.Stop(ctx)
}

func (s *server) Health(ctx context.Context, _ *modulepb.HealthRequest) (*modulepb.HealthResponse, error) {
	s.mu.Lock()
	mod, done := s.mod, s.done
	s.mu.Unlock()
	if mod == nil || done {
		return nil, status.Error(codes.FailedPrecondition, "the module is not running")
	}
	hc, ok := mod.(sdk.HealthChecker)
	if !ok {
		return &modulepb.HealthResponse{}, nil
	}
	if err := hc.Healthy(ctx); err != nil {
		return &modulepb.HealthResponse{Error: err.Error()}, nil
	}
	return &modulepb.HealthResponse{}, nil
}

// Gather returns the module's metrics; the host re-exports them labelled with the module's name.
func (s *server) Gather(context.Context, *modulepb.GatherRequest) (*modulepb.GatherResponse, error) {
	s.mu.Lock()
	h := s.host
	s.mu.Unlock()
	if h == nil {
		return &modulepb.GatherResponse{}, nil
	}
	fams, err := h.reg.Gather()
	resp := &modulepb.GatherResponse{}
	for _, f := range fams {
		b, merr := proto.Marshal(f)
		if merr != nil {
			return nil, status.Errorf(codes.Internal, "encode metric family %s: %v", f.GetName(), merr)
		}
		resp.Families = append(resp.Families, b)
	}
	if err != nil && len(fams) == 0 {
		return nil, status.Errorf(codes.Internal, "gather metrics: %v", err)
	}
	return resp, nil
}
