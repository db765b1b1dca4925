package process

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kedge-io/kedge/sdk"
	modulepb "github.com/kedge-io/kedge/sdk/proto"
)

// instance is one run of a plugin process, from launch to exit. A restart makes a new instance.
type instance struct {
	client  *goplugin.Client
	cmd     *exec.Cmd
	mod     modulepb.ModuleClient
	exited  <-chan struct{} // closed once the process has exited and been reaped
	started time.Time
	stderr  *lineLog
	loader  *Loader
	version string // the plugin's release version from its Start response ("" for none)

	streamMu     sync.Mutex // one Handle at a time on the stream
	stream       modulepb.Module_HandleClient
	streamCancel context.CancelFunc

	mu      sync.Mutex
	cause   error        // why the host killed it, if it did
	hostSrv *grpc.Server // the Host service served to this plugin
}

// dispensed is what go-plugin hands the host for a started plugin.
type dispensed struct {
	conn   *grpc.ClientConn
	broker *goplugin.GRPCBroker
	exited <-chan struct{}
}

// dispenser is the host side of the go-plugin glue.
type dispenser struct {
	goplugin.NetRPCUnsupportedPlugin
}

func (dispenser) GRPCServer(*goplugin.GRPCBroker, *grpc.Server) error {
	return errors.New("host/process is the host side; plugins serve with sdk/plugin")
}

// GRPCClient's ctx is cancelled by go-plugin when the plugin process exits: the crash signal.
func (dispenser) GRPCClient(ctx context.Context, b *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &dispensed{conn: c, broker: b, exited: ctx.Done()}, nil
}

// launch starts the plugin process, completes the handshake, serves the Host service to it and
// starts the module in it. On any error nothing is left running.
func (m *module) launch(ctx context.Context) (*instance, error) {
	in, d, err := m.connect(m.log)
	if err != nil {
		return nil, err
	}
	// A launch that outlives its context (the manager gave up on Start, or Stop came) leaves nothing.
	stop := context.AfterFunc(ctx, func() { in.kill(fmt.Errorf("launch abandoned: %w", context.Cause(ctx))) })
	defer stop()

	id := d.broker.NextId()
	go d.broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		s := grpc.NewServer(append(opts,
			grpc.MaxRecvMsgSize(modulepb.MaxMessageSize), grpc.MaxSendMsgSize(modulepb.MaxMessageSize))...)
		modulepb.RegisterHostServer(s, &hostService{m: m})
		in.mu.Lock()
		in.hostSrv = s
		in.mu.Unlock()
		return s
	})
	resp, err := in.mod.Start(ctx, &modulepb.StartRequest{
		ApiVersion: sdk.APIVersion, Module: m.name, Node: m.h.NodeName(), Config: m.config,
		HostBrokerId: id, LogLevel: int32(minLevel(m.h)),
	})
	if err != nil {
		in.kill(fmt.Errorf("start failed: %w", err))
		return nil, fmt.Errorf("plugin %s: start: %s%s", m.path, rpcMessage(err), in.stderr.tailNote())
	}
	in.version = resp.GetVersion()
	if resp.GetName() != m.name {
		m.log.Debug("plugin runs under another name than it was built as", "built_as", resp.GetName())
	}
	in.streamMu.Lock()
	err = in.openStream()
	in.streamMu.Unlock()
	if err != nil {
		in.kill(fmt.Errorf("open the Handle stream: %w", err))
		return nil, fmt.Errorf("plugin %s: open the Handle stream: %s", m.path, rpcMessage(err))
	}
	return in, nil
}

// connect starts the plugin process and completes the go-plugin handshake (checksum checked right
// before exec, AutoMTLS); its output goes to log. On any error nothing is left running.
func (m *module) connect(log *slog.Logger) (*instance, *dispensed, error) {
	cmd := exec.Command(m.path)
	// The kernel kills the plugin when the host dies, even by SIGKILL. (The signal follows the OS
	// thread that forked; Go only ends threads of goroutines that exit while locked to them, and
	// launch never locks one.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Env = pluginEnv(os.Environ())
	stderr := &lineLog{log: log, stream: "stderr"}
	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  modulepb.Handshake,
		Plugins:          goplugin.PluginSet{modulepb.PluginName: dispenser{}},
		Cmd:              cmd,
		SkipHostEnv:      true,                                                        // cmd.Env has what a plugin may see of the host's environment
		SecureConfig:     &goplugin.SecureConfig{Checksum: m.sum, Hash: sha256.New()}, // checked right before exec
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		AutoMTLS:         true,
		StartTimeout:     m.opts.StartTimeout,
		Stderr:           stderr,                               // the process's own stderr: panics, early prints
		SyncStderr:       stderr,                               // os.Stderr inside the plugin after Serve
		SyncStdout:       &lineLog{log: log, stream: "stdout"}, // os.Stdout after the handshake
		Logger:           hclog.NewNullLogger(),
		GRPCDialOptions: []grpc.DialOption{
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(modulepb.MaxMessageSize), grpc.MaxCallSendMsgSize(modulepb.MaxMessageSize)),
			grpc.WithInitialWindowSize(modulepb.WindowSize), grpc.WithInitialConnWindowSize(modulepb.WindowSize),
		},
	})
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, nil, m.handshakeError(err, cmd, stderr)
	}
	raw, err := rpc.Dispense(modulepb.PluginName)
	if err != nil {
		client.Kill()
		return nil, nil, fmt.Errorf("plugin %s: %w", m.path, err)
	}
	d := raw.(*dispensed)
	in := &instance{client: client, cmd: cmd, mod: modulepb.NewModuleClient(d.conn), exited: d.exited,
		started: time.Now(), stderr: stderr, loader: m.loader}
	if !m.loader.track(in) {
		in.kill(errors.New("the loader is closed"))
		return nil, nil, fmt.Errorf("plugin %s: not started: the host is shutting down", m.path)
	}
	return in, d, nil
}

// handshakeError turns go-plugin's start errors, which do not say which plugin or what to do, into
// ones that do.
func (m *module) handshakeError(err error, cmd *exec.Cmd, stderr *lineLog) error {
	msg := err.Error()
	exit := ""
	if cmd.ProcessState != nil { // set once go-plugin reaped it; client.Kill waited for that
		exit = " (" + cmd.ProcessState.String() + ")"
	}
	var what string
	switch {
	case errors.Is(err, goplugin.ErrChecksumsDoNotMatch):
		if verr := verify(m.path, m.sum); verr != nil {
			return fmt.Errorf("not started: %w", verr)
		}
		what = "changed while it was being checked: its sha256 no longer matches"
	case strings.HasPrefix(msg, "error verifying checksum"):
		what = "cannot be read to verify its checksum: " + strings.TrimPrefix(msg, "error verifying checksum: ")
	case strings.HasPrefix(msg, "Unrecognized remote plugin message: "):
		line, _, _ := strings.Cut(strings.TrimPrefix(msg, "Unrecognized remote plugin message: "), "\n")
		if line == "" {
			what = "exited without completing the go-plugin handshake" + exit + ": it is not a Kedge plugin, or it failed at startup"
		} else {
			what = fmt.Sprintf("wrote %q to stdout before the go-plugin handshake: it is not a Kedge plugin, or it prints to stdout "+
				"before plugin.Serve (stdout is reserved for the handshake; log to stderr)", line)
		}
	case strings.Contains(msg, "plugin exited before we could connect"):
		what = "exited before the go-plugin handshake" + exit + ": it is not a Kedge plugin, or it failed at startup"
	case strings.Contains(msg, "timeout while waiting for plugin to start"):
		what = fmt.Sprintf("did not complete the go-plugin handshake within %s", m.opts.StartTimeout)
	case strings.Contains(msg, "Incompatible API version"), strings.Contains(msg, "incompatible core API version"):
		what = "speaks another plugin protocol version: rebuild it with this Kedge version's sdk: " + firstLine(msg)
	case errors.Is(err, syscall.ENOEXEC), errors.Is(err, syscall.EACCES), errors.Is(err, exec.ErrNotFound):
		what = "cannot be executed (a binary for another machine, or a script without #!): " + msg
	default:
		what = "failed to start: " + firstLine(msg)
	}
	return fmt.Errorf("plugin %s %s%s", m.path, what, stderr.tailNote())
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// rpcMessage is a gRPC error's message without the "rpc error: code = ... desc =" wrapping.
func rpcMessage(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Message()
	}
	return err.Error()
}

func (in *instance) pid() int {
	if in.cmd.Process == nil {
		return 0
	}
	return in.cmd.Process.Pid
}

func (in *instance) dead() bool {
	select {
	case <-in.exited:
		return true
	default:
		return false
	}
}

// exitCause says why the process ended, for the log.
func (in *instance) exitCause() string {
	in.mu.Lock()
	cause := in.cause
	in.mu.Unlock()
	ps := in.cmd.ProcessState
	if ps == nil {
		return "exited"
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && cause != nil && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
		return "killed by the host: " + cause.Error()
	}
	return ps.String()
}

// openStream opens the Handle stream; the caller holds streamMu.
func (in *instance) openStream() error {
	ctx, cancel := context.WithCancel(context.Background())
	st, err := in.mod.Handle(ctx)
	if err != nil {
		cancel()
		return err
	}
	in.stream, in.streamCancel = st, cancel
	return nil
}

// handle sends one message down the stream and waits for its response. If ctx ends first the
// stream is cancelled (the plugin sees its context end) and the next call opens a new one.
func (in *instance) handle(ctx context.Context, req *modulepb.HandleRequest) (*modulepb.HandleResponse, error) {
	in.streamMu.Lock()
	defer in.streamMu.Unlock()
	if in.stream == nil {
		if err := in.openStream(); err != nil {
			return nil, err
		}
	}
	stop := context.AfterFunc(ctx, in.streamCancel)
	err := in.stream.Send(req)
	var resp *modulepb.HandleResponse
	if err == nil {
		resp, err = in.stream.Recv()
	} else if errors.Is(err, io.EOF) {
		_, err = in.stream.Recv() // the stream ended; Recv has the reason
	}
	if !stop() || err != nil {
		in.streamCancel()
		in.stream = nil
	}
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// kill ends the process at once (SIGKILL) and cleans up after it; cause is logged as the reason.
func (in *instance) kill(cause error) {
	in.mu.Lock()
	if in.cause == nil {
		in.cause = cause
	}
	in.mu.Unlock()
	if p := in.cmd.Process; p != nil {
		_ = p.Kill()
	}
	in.cleanup()
}

// stop asks the module to stop, then ends the process: gracefully if it exits by itself, else killed.
func (in *instance) stop(ctx context.Context) error {
	in.streamMu.Lock()
	if in.stream != nil {
		_ = in.stream.CloseSend()
		in.streamCancel()
		in.stream = nil
	}
	in.streamMu.Unlock()
	if in.dead() {
		in.cleanup()
		return nil
	}
	if _, err := in.mod.Stop(ctx, &modulepb.StopRequest{}); err != nil {
		died := in.dead()
		in.kill(fmt.Errorf("stop failed: %s", rpcMessage(err)))
		if died || status.Code(err) == codes.Unavailable {
			return fmt.Errorf("the plugin exited before its module's Stop finished (%s)%s", in.exitCause(), in.stderr.tailNote())
		}
		return errors.New(rpcMessage(err))
	}
	in.cleanup() // go-plugin's Kill: the plugin exits by itself (SIGKILL only if it has not within 2s)
	return nil
}

// pluginEnv is the part of the host's environment a plugin gets: what programs need to run (paths,
// locale, time zone, Go runtime knobs), not the host's settings or secrets (KEDGE_*, tokens, ...).
func pluginEnv(environ []string) []string {
	var env []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "PATH", k == "HOME", k == "USER", k == "LANG", k == "TZ", k == "TMPDIR",
			strings.HasPrefix(k, "LC_"),
			k == "GOMAXPROCS", k == "GOMEMLIMIT", k == "GOGC", k == "GODEBUG", k == "GOTRACEBACK":
			env = append(env, kv)
		}
	}
	return env
}

func (in *instance) cleanup() {
	in.client.Kill()
	in.mu.Lock()
	srv := in.hostSrv
	in.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
	in.streamMu.Lock()
	if in.streamCancel != nil {
		in.streamCancel()
	}
	in.streamMu.Unlock()
	in.loader.forget(in)
}
