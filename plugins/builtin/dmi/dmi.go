// Package dmi serves the Device Management Interface (KubeEdge-compatible DMI v1beta1) on a unix
// socket: mappers register (MapperRegister) and get the devices and models of their protocol, and
// report twin values and device states, which go to devicetwin exactly as MQTT messages from eventbus
// would. A reconcile loop keeps every registered mapper's device and model lists in step with what
// metamanager holds, calling the mapper's DeviceMapperService.
package dmi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"

	"github.com/kedge-io/kedge/sdk"
	dmiv1beta1 "github.com/kedge-io/kedge/sdk/dmi/v1beta1"
	"github.com/kedge-io/kedge/sdk/message"
)

// Name is the module's routing address; its group is "dmi".
const Name = "dmi"

// Info registers dmi.
var Info = sdk.Info{
	Name:     Name,
	Group:    "dmi",
	Doc:      "Device Management Interface: KubeEdge-compatible DMI v1beta1 gRPC server for device mappers on a unix socket; reports go to devicetwin, device changes go to the mappers.",
	Requires: []string{"devicetwin", sdk.DefaultMetaManager},
	Enabled:  true, // edgecore serves the DMI, as KubeEdge's does: mappers find it at the socket below
	New:      func() sdk.Module { return New() },
}

func init() { sdk.Register(Info) }

// Module is dmi; its exported fields are its settings.
type Module struct {
	Socket            string        `yaml:"socket" doc:"Unix socket DeviceManagerService listens on (mode 0600; the directory is created 0750 if missing)."`
	QPS               float64       `yaml:"qps" doc:"Calls per second each mapper (one per protocol) may make into edgecore; more get ResourceExhausted."`
	Burst             int           `yaml:"burst" doc:"Calls a mapper may make at once above qps."`
	ReconcileInterval time.Duration `yaml:"reconcileInterval" doc:"How often the devices and models metamanager holds are compared with what each mapper was given."`
	CallTimeout       time.Duration `yaml:"callTimeout" doc:"Bound on each call to a mapper and each query to metamanager."`
	DeviceTwin        string        `yaml:"deviceTwin" doc:"Module that receives the twin and state updates (as eventbus's MQTT messages)."`
	MetaManager       string        `yaml:"metaManager" doc:"Module asked for the node's devices and device models."`

	host    sdk.Host
	log     *slog.Logger
	metrics *metrics
	lis     net.Listener
	srv     *grpc.Server
	wg      sync.WaitGroup
	kick    chan struct{}

	mu       sync.Mutex
	cache    *inventory
	mappers  map[string]*mapper       // by protocol
	limiters map[string]*rate.Limiter // by protocol (a mapper serves one); "" for unknown devices
}

var _ sdk.Module = (*Module)(nil)

// New returns dmi with its defaults.
func New() *Module {
	return &Module{
		Socket:            "/var/lib/kedge/dmi.sock",
		QPS:               100,
		Burst:             200,
		ReconcileInterval: 3 * time.Second,
		CallTimeout:       5 * time.Second,
		DeviceTwin:        "devicetwin",
		MetaManager:       sdk.DefaultMetaManager,
	}
}

type metrics struct {
	requests    *prometheus.CounterVec
	mapperCalls *prometheus.CounterVec
	mappers     prometheus.Gauge
}

// maxSocketPath is the usable length of a unix socket path (sun_path is 108 bytes on Linux).
const maxSocketPath = 107

func (m *Module) Start(ctx context.Context, h sdk.Host) error {
	if err := m.Validate(); err != nil { // the host checked already; a direct caller gets the same answer
		return err
	}
	m.host, m.log = h, h.Logger()
	m.metrics = &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_dmi_requests_total",
			Help: "DeviceManagerService calls from mappers, by method and gRPC code."}, []string{"method", "code"}),
		mapperCalls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_dmi_mapper_calls_total",
			Help: "DeviceMapperService calls to mappers, by method and result (ok, error)."}, []string{"method", "result"}),
		mappers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kedge_dmi_mappers",
			Help: "Mappers registered."}),
	}
	for _, c := range []prometheus.Collector{m.metrics.requests, m.metrics.mapperCalls, m.metrics.mappers} {
		if err := h.Metrics().Register(c); err != nil {
			return err
		}
	}
	m.cache = newInventory()
	m.mappers = map[string]*mapper{}
	m.limiters = map[string]*rate.Limiter{}
	m.kick = make(chan struct{}, 1)

	if err := m.restore(ctx); err != nil {
		return err
	}
	restored := len(m.mappers)
	lis, err := listenUnix(m.Socket)
	if err != nil {
		return err
	}
	m.lis = lis
	m.srv = grpc.NewServer(grpc.ChainUnaryInterceptor(m.observe, m.limit))
	dmiv1beta1.RegisterDeviceManagerServiceServer(m.srv, &server{m: m})
	m.wg.Go(func() {
		if err := m.srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			m.log.Error("DMI server stopped", "socket", m.Socket, "err", err)
		}
	})
	m.wg.Go(func() { m.reconcileLoop(ctx) })
	if restored > 0 { // restored: bring them in step now, not a reconcileInterval later
		m.kick <- struct{}{}
	}
	m.log.Info("DMI listening", "socket", m.Socket, "qps", m.QPS, "burst", m.Burst)
	return nil
}

// listenUnix creates the socket's directory if needed, replaces a stale socket file (never another
// kind of file) and listens with mode 0600.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("socket %s: create its directory: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("socket %s: a %s is already there; not replacing it", path, fi.Mode().Type())
		}
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("socket %s: another process is serving it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("socket %s: remove the stale socket: %w", path, err)
		}
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = lis.Close()
		return nil, fmt.Errorf("socket %s: chmod 0600: %w", path, err)
	}
	return lis, nil
}

// Stop ends the server (in-flight calls get a moment to finish), closes the mappers' connections and
// removes the socket.
func (m *Module) Stop(ctx context.Context) error {
	done := make(chan struct{})
	go func() { m.srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		m.srv.Stop()
		<-done
	}
	m.wg.Wait()
	m.mu.Lock()
	for _, mp := range m.mappers {
		mp.close()
	}
	m.mappers = map[string]*mapper{}
	m.mu.Unlock()
	if err := os.Remove(m.Socket); err != nil && !errors.Is(err, fs.ErrNotExist) {
		m.log.Warn("socket not removed", "socket", m.Socket, "err", err)
	}
	return nil
}

// Handle takes nothing but late answers to dmi's own queries.
func (m *Module) Handle(_ context.Context, msg sdk.Message) error {
	if msg.Route.Operation == message.OpResponse || msg.Route.Operation == message.OpError {
		return nil
	}
	return fmt.Errorf("dmi takes no messages (got %s %s from %s): mappers reach it over gRPC on %s",
		msg.Route.Operation, msg.Route.Resource, msg.Route.Source, m.Socket)
}

// Healthy reports whether the DMI socket is served.
func (m *Module) Healthy(context.Context) error {
	c, err := net.DialTimeout("unix", m.Socket, time.Second)
	if err != nil {
		return fmt.Errorf("DMI socket %s: %w", m.Socket, err)
	}
	return c.Close()
}

// SocketPath is where DeviceManagerService listens.
func (m *Module) SocketPath() string { return m.Socket }
