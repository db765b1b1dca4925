package mapper

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/kedge-io/kedge/sdk"
	dmiv1beta1 "github.com/kedge-io/kedge/sdk/dmi/v1beta1"
)

// Module is the mapper runtime: an sdk.Module serving DeviceMapperService on its own unix socket,
// registered with edgecore's DMI, running one goroutine per device around a Driver. Its exported
// fields are its settings; make one with New.
type Module struct {
	Protocol     string        `yaml:"protocol" doc:"Protocol this mapper serves: devices whose spec.protocol.protocolName is this are given to it."`
	DMISocket    string        `yaml:"dmiSocket" doc:"edgecore's DMI socket (DeviceManagerService), where the mapper registers and reports."`
	Socket       string        `yaml:"socket" doc:"Unix socket this mapper serves DeviceMapperService on (mode 0600; directory created 0750)."`
	CallTimeout  time.Duration `yaml:"callTimeout" doc:"Bound on each driver call and each DMI call."`
	CollectCycle time.Duration `yaml:"collectCycle" doc:"Read period of a property whose collectCycle is 0."`
	ReportCycle  time.Duration `yaml:"reportCycle" doc:"Report period of a property whose reportCycle is 0 (0: report after every read)."`
	HealthCycle  time.Duration `yaml:"healthCycle" doc:"How often each device's Health is checked."`
	BackoffMin   time.Duration `yaml:"backoffMin" doc:"First retry delay after a device error (init, read, write); doubles per failure."`
	BackoffMax   time.Duration `yaml:"backoffMax" doc:"Longest retry delay after device errors, and between registration attempts."`
	PushQueue    int           `yaml:"pushQueue" doc:"Readings queued per pushMethod target (MQTT broker+topic, HTTP URL) while it is slow or down; when full the oldest is dropped."`

	name       string
	newDriver  func() Driver
	host       sdk.Host
	log        *slog.Logger
	metrics    *metrics
	pusher     *pusher
	lis        net.Listener
	srv        *grpc.Server
	conn       *grpc.ClientConn
	dmi        dmiv1beta1.DeviceManagerServiceClient
	ctx        context.Context
	wg         sync.WaitGroup
	reregister chan struct{}
	registered chan struct{}          // closed at the first successful registration
	hlis       net.Listener           // the handover socket (handover.go); nil once handed over
	collectors []prometheus.Collector // the protocol's own metrics (WithCollectors)

	mu         sync.Mutex
	released   bool                               // handing its devices and socket to a new instance, or handed them (handover.go)
	handedOver bool                               // the new instance took them: the socket is its now
	models     map[string]*dmiv1beta1.DeviceModel // ns/name
	devices    map[string]*runner                 // ns/name
}

var _ sdk.Module = (*Module)(nil)

// New returns a mapper for protocol whose devices are served by drivers from newDriver (called once
// per device). Register it like any module:
//
//	sdk.Register(sdk.Info{Name: "virtual", Group: "mapper", New: func() sdk.Module { return mapper.New("virtual", NewDriver) }})
func New(protocol string, newDriver func() Driver) *Module {
	return &Module{
		Protocol:     protocol,
		DMISocket:    "/var/lib/kedge/dmi.sock",
		Socket:       "/var/lib/kedge/mappers/" + protocol + ".sock",
		CallTimeout:  5 * time.Second,
		CollectCycle: time.Second,
		HealthCycle:  10 * time.Second,
		BackoffMin:   200 * time.Millisecond,
		BackoffMax:   30 * time.Second,
		PushQueue:    100,
		newDriver:    newDriver,
	}
}

var _ sdk.Validator = (*Module)(nil)

// Validate checks the settings before any module starts (sdk.Validator), for every mapper made with
// New; each problem names its key.
func (m *Module) Validate() error {
	var c sdk.SettingChecks
	if m.newDriver == nil {
		c.Add("", errors.New("no driver: make the module with mapper.New(protocol, newDriver)"))
	}
	c.Check(strings.TrimSpace(m.Protocol) != "", "protocol", "must not be empty")
	c.Check(filepath.IsAbs(m.DMISocket), "dmiSocket", "%q is not an absolute path", m.DMISocket)
	c.Check(filepath.IsAbs(m.Socket), "socket", "%q is not an absolute path", m.Socket)
	for _, d := range []struct {
		key string
		d   time.Duration
	}{{"callTimeout", m.CallTimeout}, {"collectCycle", m.CollectCycle}, {"healthCycle", m.HealthCycle},
		{"backoffMin", m.BackoffMin}, {"backoffMax", m.BackoffMax}} {
		c.Check(d.d > 0, d.key, "must be positive, got %s", d.d)
	}
	c.Check(m.PushQueue > 0, "pushQueue", "must be positive, got %d", m.PushQueue)
	c.Check(m.ReportCycle >= 0, "reportCycle", "must not be negative, got %s", m.ReportCycle)
	c.Check(m.BackoffMax >= m.BackoffMin, "backoffMax", "%s is below backoffMin %s", m.BackoffMax, m.BackoffMin)
	return c.Err()
}

// Start serves DeviceMapperService on Socket and registers with edgecore in the background
// (retrying with backoff while edgecore's DMI is not up). When Socket is served by another instance
// of this mapper (a hot swap starts the new instance beside the old one), Start takes its devices
// over first (handover.go): the old instance finishes its in-flight reads and reports and stops
// polling, this one takes the socket and registers before Start returns.
// WithCollectors adds the protocol's own metrics (a line's CRC errors, a session's reconnects) to
// the module's registry at Start, beside the mapper's.
func (m *Module) WithCollectors(cs ...prometheus.Collector) *Module {
	m.collectors = append(m.collectors, cs...)
	return m
}

func (m *Module) Start(ctx context.Context, h sdk.Host) error {
	if err := m.Validate(); err != nil { // the host checked already; a direct caller gets the same answer
		return fmt.Errorf("mapper %s: %w", h.Name(), err)
	}
	m.host, m.name, m.log, m.ctx = h, h.Name(), h.Logger(), ctx
	m.models, m.devices = map[string]*dmiv1beta1.DeviceModel{}, map[string]*runner{}
	m.reregister, m.registered = make(chan struct{}, 1), make(chan struct{})
	mt, err := newMetrics(h)
	if err != nil {
		return err
	}
	m.metrics = mt
	for _, c := range m.collectors {
		if err := h.Metrics().Register(c); err != nil {
			return fmt.Errorf("mapper %s: registering the protocol's metrics: %w", h.Name(), err)
		}
	}
	lis, err := listenUnix(m.Socket)
	var prev *takeover
	if errors.Is(err, errSocketInUse) {
		if prev, err = m.takeOver(ctx); err == nil {
			if lis, err = listenUnix(m.Socket); err != nil {
				prev.abort()
			}
		}
	}
	if err != nil {
		return fmt.Errorf("mapper %s: socket: %w", m.name, err)
	}
	m.lis = lis
	conn, err := grpc.NewClient("unix://"+m.DMISocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		_ = lis.Close()
		prev.abort()
		return fmt.Errorf("mapper %s: dmiSocket %q: %w", m.name, m.DMISocket, err)
	}
	m.pusher = newPusher(m.log, mt.push, m.PushQueue, "kedge-mapper-"+m.name)
	m.conn, m.dmi = conn, dmiv1beta1.NewDeviceManagerServiceClient(conn)
	m.srv = grpc.NewServer()
	dmiv1beta1.RegisterDeviceMapperServiceServer(m.srv, &server{m: m})
	srv := m.srv
	m.wg.Add(1)
	go func() { defer m.wg.Done(); _ = srv.Serve(lis) }()
	if prev != nil {
		// Registered before Start returns: the swap's health check then finds this instance serving.
		if err := m.register(ctx); err != nil {
			m.abortStart()
			prev.abort() // the old instance resumes
			return fmt.Errorf("mapper %s: registering with edgecore after taking the devices over: %w", m.name, err)
		}
		m.metrics.registrations.WithLabelValues("ok").Inc()
		close(m.registered)
		prev.done(m.log)
	}
	m.listenHandover()
	m.wg.Add(1)
	go func() { defer m.wg.Done(); m.registerLoop(ctx, prev != nil) }()
	m.log.Info("mapper serving", "protocol", m.Protocol, "socket", m.Socket, "dmiSocket", m.DMISocket, "tookOver", prev != nil)
	return nil
}

// abortStart undoes a Start that failed after the server started.
func (m *Module) abortStart() {
	m.srv.Stop()
	m.stopRunners(false)
	m.wg.Wait()
	m.pusher.close()
	_ = m.conn.Close()
}

// Handle: a mapper takes no router messages; everything comes over DMI.
func (m *Module) Handle(ctx context.Context, msg sdk.Message) error { return nil }

// Stop stops the server, every device goroutine (closing its driver) and the DMI connection. An
// instance that handed its devices over has nothing left but its connection; the socket, now the
// new instance's, stays.
func (m *Module) Stop(ctx context.Context) error {
	m.mu.Lock()
	srv, handedOver := m.srv, m.handedOver
	m.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
	m.closeHandover()
	m.stopRunners(false)
	m.wg.Wait()
	if m.pusher != nil {
		m.pusher.close()
	}
	if m.conn != nil {
		_ = m.conn.Close()
	}
	if m.Socket != "" && !handedOver {
		_ = os.Remove(m.Socket)
	}
	return nil
}

// stopRunners stops every device goroutine and waits for them; drain lets each finish the read and
// report in hand and report what it read but has not reported yet, instead of cancelling them.
func (m *Module) stopRunners(drain bool) {
	m.mu.Lock()
	rs := make([]*runner, 0, len(m.devices))
	for k, r := range m.devices {
		rs = append(rs, r)
		delete(m.devices, k)
	}
	if m.metrics != nil {
		m.metrics.devices.Set(0)
	}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range rs {
		if drain {
			wg.Go(r.drain)
		} else {
			wg.Go(r.stop)
		}
	}
	wg.Wait()
}

// Healthy is not ready until the mapper is registered with edgecore.
func (m *Module) Healthy(ctx context.Context) error {
	select {
	case <-m.registered:
		return nil
	default:
		return fmt.Errorf("mapper %s not registered with edgecore's DMI at %s yet", m.name, m.DMISocket)
	}
}

// registerLoop registers with edgecore, then again whenever a DMI call finds edgecore gone
// (Unavailable: edgecore restarted and forgot this mapper).
func (m *Module) registerLoop(ctx context.Context, registered bool) {
	first := !registered
	for registered {
		select {
		case <-ctx.Done():
			return
		case <-m.reregister:
			registered = false
		}
	}
	for {
		delay := m.BackoffMin
		for {
			err := m.register(ctx)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			m.metrics.registrations.WithLabelValues("error").Inc()
			m.log.Warn("register with edgecore failed; retrying", "dmiSocket", m.DMISocket, "in", delay, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			delay = min(delay*2, m.BackoffMax)
		}
		m.metrics.registrations.WithLabelValues("ok").Inc()
		if first {
			close(m.registered)
			first = false
		}
		select {
		case <-ctx.Done():
			return
		case <-m.reregister:
		}
	}
}

func (m *Module) register(ctx context.Context) error {
	if m.isReleased() {
		return nil // handed over: the new instance is the one registered
	}
	cctx, cancel := context.WithTimeout(ctx, m.CallTimeout)
	defer cancel()
	resp, err := m.dmi.MapperRegister(cctx, &dmiv1beta1.MapperRegisterRequest{WithData: true, Mapper: &dmiv1beta1.MapperInfo{
		Name: m.name, Version: "v1", ApiVersion: "v1beta1", Protocol: m.Protocol, Address: []byte(m.Socket), State: "ok"}})
	if err != nil {
		return err
	}
	for _, dm := range resp.GetModelList() {
		m.putModel(dm)
	}
	keep := map[string]bool{}
	for _, d := range resp.GetDeviceList() {
		if err := m.putDevice(d); err != nil {
			m.log.Warn("device from registration not served", "err", err)
			continue
		}
		keep[d.GetNamespace()+"/"+d.GetName()] = true
	}
	m.mu.Lock()
	var gone []string
	for k := range m.devices {
		if !keep[k] {
			gone = append(gone, k)
		}
	}
	m.mu.Unlock()
	for _, k := range gone {
		ns, name, _ := strings.Cut(k, "/")
		m.removeDevice(ns, name)
	}
	m.log.Info("registered with edgecore", "devices", len(resp.GetDeviceList()), "models", len(resp.GetModelList()))
	return nil
}

// dmiFailed asks for a new registration when edgecore's DMI answered Unavailable.
func (m *Module) dmiFailed(err error) {
	if status.Code(err) == codes.Unavailable {
		select {
		case m.reregister <- struct{}{}:
		default:
		}
	}
}

func (m *Module) putModel(dm *dmiv1beta1.DeviceModel) {
	k := dm.GetNamespace() + "/" + dm.GetName()
	m.mu.Lock()
	m.models[k] = dm
	var users []*runner
	for _, r := range m.devices {
		if r.ref.Namespace == dm.GetNamespace() && r.ref.Model == dm.GetName() {
			users = append(users, r)
		}
	}
	m.mu.Unlock()
	for _, r := range users {
		r.mu.Lock()
		d := r.snap.device
		r.mu.Unlock()
		if d != nil {
			_ = m.checkProperties(d, dm) // logged; the driver refuses such a property at each read too
		}
		r.update(nil, dm)
	}
}

func (m *Module) removeModel(ns, name string) {
	m.mu.Lock()
	delete(m.models, ns+"/"+name)
	m.mu.Unlock()
}

// putDevice starts a device's goroutine or hands it the changed device.
func (m *Module) putDevice(d *dmiv1beta1.Device) error {
	if d.GetName() == "" {
		return errors.New("device has no name")
	}
	if p := d.GetSpec().GetProtocol().GetProtocolName(); p != m.Protocol {
		return fmt.Errorf("device %s/%s is of protocol %q, this mapper serves %q", d.GetNamespace(), d.GetName(), p, m.Protocol)
	}
	k := d.GetNamespace() + "/" + d.GetName()
	m.mu.Lock()
	if m.released {
		m.mu.Unlock()
		return fmt.Errorf("mapper %s handed its devices to a new instance", m.name)
	}
	model := m.models[d.GetNamespace()+"/"+d.GetSpec().GetDeviceModelReference()]
	if err := m.checkProperties(d, model); err != nil {
		m.mu.Unlock()
		return err
	}
	r := m.devices[k]
	if r == nil {
		r = newRunner(m, d, model)
		m.devices[k] = r
		m.metrics.devices.Set(float64(len(m.devices)))
		m.mu.Unlock()
		r.start(m.ctx)
		return nil
	}
	m.mu.Unlock()
	r.update(d, model)
	return nil
}

// checkProperties asks the driver (when it is a PropertyChecker) whether each property of the device
// can work as its model and visitor say; the first that cannot refuses the device.
func (m *Module) checkProperties(d *dmiv1beta1.Device, model *dmiv1beta1.DeviceModel) error {
	if model == nil {
		return nil
	}
	pc, ok := m.newDriver().(PropertyChecker)
	if !ok {
		return nil
	}
	types := map[string]*dmiv1beta1.ModelProperty{}
	for _, mp := range model.GetSpec().GetProperties() {
		types[mp.GetName()] = mp
	}
	for _, dp := range d.GetSpec().GetProperties() {
		mp := types[dp.GetName()]
		if mp == nil {
			continue
		}
		vis, err := configJSON(dp.GetVisitors().GetConfigData())
		if err != nil {
			continue // logged and skipped when the device runs
		}
		prop := Property{Name: dp.GetName(), Type: strings.ToUpper(mp.GetType()), AccessMode: mp.GetAccessMode(),
			Minimum: mp.GetMinimum(), Maximum: mp.GetMaximum(), Unit: mp.GetUnit(), VisitorProtocol: dp.GetVisitors().GetProtocolName(), Visitor: vis}
		if err := pc.CheckProperty(prop); err != nil {
			m.metrics.refusedDevices.Inc()
			m.log.Error("device refused: a property cannot work as configured", "device", d.GetNamespace()+"/"+d.GetName(), "property", dp.GetName(), "err", err)
			return fmt.Errorf("device %s/%s property %q (model %s type %s): %w", d.GetNamespace(), d.GetName(), dp.GetName(), model.GetName(), prop.Type, err)
		}
	}
	return nil
}

// removeDevice stops a device's goroutine and waits for it (its driver closed).
func (m *Module) removeDevice(ns, name string) bool {
	k := ns + "/" + name
	m.mu.Lock()
	r := m.devices[k]
	delete(m.devices, k)
	m.metrics.devices.Set(float64(len(m.devices)))
	m.mu.Unlock()
	if r == nil {
		return false
	}
	r.stop()
	m.metrics.forget(k)
	return true
}

// Devices lists the devices the mapper runs (ns/name).
func (m *Module) Devices() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.devices))
	for k := range m.devices {
		out = append(out, k)
	}
	return out
}

// listenUnix listens on a unix socket (mode 0600), creating its directory 0750 and replacing a stale
// socket; any other file at the path is refused.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("%s: %w", path, errSocketInUse)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = lis.Close()
		return nil, err
	}
	return lis, nil
}
