// Package plugin turns a Kedge module into a plugin executable that edgecore or cloudcore runs as a
// separate process (modules.<name>.runtime: process). The executable's whole main is
//
//	func main() { plugin.Serve(mymodule.Info) }
//
// The module is the same sdk.Module a builtin module is; inside the plugin its sdk.Host reaches the
// real host over gRPC (go-plugin, AutoMTLS). Sends and replies a module makes with Handle's context
// while Handle runs are collected and routed by the host, in order, when Handle returns — one round
// trip per message. A send made that way reports routing errors (an unknown module, say) only in the
// host's log, not to the module; use SendSync, or a context not derived from Handle's, to see them.
//
// This package is separate from sdk so builtin modules, which import sdk, never link gRPC.
package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"reflect"
	"runtime"
	"syscall"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/kedge-io/kedge/sdk"
	modulepb "github.com/kedge-io/kedge/sdk/proto"
)

// Option changes how Serve presents the plugin.
type Option func(*options)

type options struct {
	version string
}

// WithVersion reports v as the plugin's release version to the host, which shows it in
// `edgecore module ls` (VERSION). Set it from a variable stamped at build time:
//
//	var version = "dev" // go build -ldflags "-X main.version=1.2.3"
//	func main() { plugin.Serve(mymodule.Info, plugin.WithVersion(version)) }
//
// Without it the host shows "-" (and the file's sha256, as always).
func WithVersion(v string) Option {
	return func(o *options) { o.version = v }
}

// Serve serves info's module to the host that started this executable, and returns when the host
// stops it. Run by hand, it prints how to configure the plugin and exits with status 1.
func Serve(info sdk.Info, opts ...Option) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if err := checkInfo(info); err != nil {
		fmt.Fprintf(os.Stderr, "plugin.Serve: %v\n", err)
		os.Exit(2)
	}
	if os.Getenv(modulepb.Handshake.MagicCookieKey) != modulepb.Handshake.MagicCookieValue {
		usage(os.Stderr, info)
		os.Exit(1)
	}
	// One P unless GOMAXPROCS says otherwise: the host hands the module one message at a time, and
	// with one P gRPC's reader, the handler and gRPC's writer pass each message along without waking
	// other threads — round trips measured ~30% faster on a busy 2-core machine.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	// The host stops the plugin (its module's Stop first). A SIGTERM sent to the host's whole process
	// group or cgroup (timeout(1), systemd stop) must not kill the plugin before that; go-plugin
	// already ignores SIGINT for the same reason. The plugin still dies with the host (parent-death
	// signal) and to SIGKILL.
	signal.Ignore(syscall.SIGTERM)
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: modulepb.Handshake,
		Plugins:         goplugin.PluginSet{modulepb.PluginName: &grpcPlugin{info: info, version: o.version}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts,
				grpc.MaxRecvMsgSize(modulepb.MaxMessageSize), grpc.MaxSendMsgSize(modulepb.MaxMessageSize),
				grpc.InitialWindowSize(modulepb.WindowSize), grpc.InitialConnWindowSize(modulepb.WindowSize))...)
		},
		// go-plugin's own messages go to the real stderr, which the host forwards to its log.
		Logger: hclog.New(&hclog.LoggerOptions{Name: info.Name, Level: hclog.Warn, Output: os.Stderr}),
	})
}

func checkInfo(info sdk.Info) error {
	if info.Name == "" {
		return errors.New("sdk.Info has no Name")
	}
	if info.New == nil {
		return fmt.Errorf("module %q has no New function", info.Name)
	}
	m := info.New()
	if v := reflect.ValueOf(m); m == nil || v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("module %q: New must return a pointer to a struct (its settings), got %T", info.Name, m)
	}
	return nil
}

// usage tells someone who ran the plugin by hand what it is and how to use it.
func usage(w io.Writer, info sdk.Info) {
	path, sum := "/path/to/"+info.Name, "<sha256sum of the file>"
	if exe, err := os.Executable(); err == nil {
		path = exe
		if f, err := os.Open(exe); err == nil {
			h := sha256.New()
			if _, err := io.Copy(h, f); err == nil {
				sum = hex.EncodeToString(h.Sum(nil))
			}
			f.Close()
		}
	}
	fmt.Fprintf(w, `%s: a Kedge module (group %q) built as a plugin. %s

edgecore or cloudcore starts it; it is not run by hand. Configure it like this:

  modules:
    %s:
      runtime: process
      path: %s
      sha256: %s
`, info.Name, info.Group, info.Doc, info.Name, path, sum)
}

// grpcPlugin is the go-plugin glue: the plugin side serves the Module service.
type grpcPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	info    sdk.Info
	version string
}

func (p *grpcPlugin) GRPCServer(b *goplugin.GRPCBroker, s *grpc.Server) error {
	modulepb.RegisterModuleServer(s, newServer(p.info, b, p.version))
	return nil
}

func (p *grpcPlugin) GRPCClient(context.Context, *goplugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("sdk/plugin is the plugin side; host/process drives plugins")
}
