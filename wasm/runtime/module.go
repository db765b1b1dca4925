package wasmruntime

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/wasm/abi"
	"github.com/kedge-io/kedge/wasm/compile"
	"github.com/kedge-io/kedge/wasm/instrument"
	"github.com/kedge-io/kedge/wasm/manifest"
)

// Module is a WASM module seen from the host: an sdk.Module whose Handle calls the guest.
type Module struct {
	loader   *Loader
	spec     modules.Spec
	sum      string // pinned sha256, hex
	manifest manifest.Manifest
	config   []byte // the module's settings as JSON, for the guest's Init
	// interruptible: the deadline stops any call (stop says how). Otherwise (the operator's
	// `interruptible: false`) the deadline stops a call only when it sleeps or calls the host.
	interruptible bool
	// stop is how a call is stopped at its deadline, set by Start: compile.StopCheck (our loop
	// checks, see wasm/instrument), compile.StopWazero (wazero's checks, when instrumenting
	// failed) or compile.StopNone.
	stop compile.Stop
	// refused is why the instrumenter refused the module (then stop is compile.StopWazero).
	refused error
	// prepared is how long Prepare took (compile, or load from the compilation cache).
	prepared time.Duration

	// Set by Start; used only by the delivery goroutine (Handle) and the host functions it calls.
	host     sdk.Host
	log      *slog.Logger
	metrics  *metrics
	life     context.Context
	rt       wazero.Runtime
	compiled wazero.CompiledModule
	inst     *instance   // nil while the module is down: the next Handle re-instantiates
	out      []byte      // encodes messages for the guest and host-call results
	cur      sdk.Message // the message being handled, while handling
	handling bool
	lastErr  string // explanation of the last failed host call, for last_error
	failMsg  string // the guest's explanation of a failed init/handle, from fail
	denials  map[string]bool

	down atomic.Pointer[error] // why the module is unhealthy; nil when healthy
}

var (
	_ sdk.Module        = (*Module)(nil)
	_ sdk.HealthChecker = (*Module)(nil)
	_ modules.Preparer  = (*Module)(nil)
)

// Manifest is the module's manifest, read from its .wasm file.
func (m *Module) Manifest() manifest.Manifest { return m.manifest }

// Version is the module's own version from its manifest ("" when it states none), for listings
// such as `edgecore module ls`.
func (m *Module) Version() string { return m.manifest.Version }

// StopMechanism says how a call past its deadline is stopped: "check" (Kedge's loop checks),
// "wazero" (wazero's termination checks, when the module could not be instrumented) or "none"
// (`interruptible: false`). Known once the module started.
func (m *Module) StopMechanism() string { return string(m.stop) }

// SHA256 is the pinned checksum of the module's file (hex).
func (m *Module) SHA256() string { return m.sum }

// Prepare reads and verifies the file and compiles it (or loads it from the compilation cache): the
// slow part of a start, which the module manager runs before Start under its own deadline
// (modules.Deps.PrepareTimeout) and, in a swap, while the old instance keeps serving. Start prepares
// the module itself when Prepare was not called.
func (m *Module) Prepare(ctx context.Context) error {
	if m.rt != nil {
		return nil
	}
	began := time.Now()
	wasm, err := os.ReadFile(m.spec.Settings.Path)
	if err != nil {
		return fmt.Errorf("read wasm module: %w", err)
	}
	if got := fileSum(wasm); got != m.sum {
		return checksumError(m.spec.Settings.Path, got, m.sum)
	}
	// Code and capabilities come from the very bytes just verified.
	man, code, err := compile.Code(wasm)
	if err != nil {
		return fmt.Errorf("%s: %w", m.spec.Settings.Path, err)
	}
	m.manifest = man
	code, m.stop, m.refused = compile.Prepare(code, m.interruptible)
	cfg := compile.ConfigForStop(m.stop).WithCompilationCache(m.loader.cache).WithMemoryLimitPages(m.manifest.Limits.MemoryPages)
	rt := wazero.NewRuntimeWithConfig(ctx, cfg)
	compiled, err := rt.CompileModule(compile.Workers(ctx), code)
	if err == nil {
		err = checkExports(compiled)
		if err != nil {
			err = fmt.Errorf("%s: %w", m.spec.Settings.Path, err)
		}
	} else if strings.Contains(err.Error(), "over limit") {
		err = fmt.Errorf("compile %s: %w: raise limits.memoryPages (%d) in the manifest", m.spec.Settings.Path, err, m.manifest.Limits.MemoryPages)
	} else {
		err = fmt.Errorf("compile %s: %w", m.spec.Settings.Path, err)
	}
	if err == nil && ctx.Err() != nil {
		err = fmt.Errorf("compile %s: given up: %w", m.spec.Settings.Path, context.Cause(ctx))
	}
	if err != nil {
		_ = rt.Close(context.WithoutCancel(ctx))
		return err
	}
	m.rt, m.compiled, m.prepared = rt, compiled, time.Since(began)
	return nil
}

// Start instantiates the prepared module (preparing it first if needed): the guest's runtime
// initialiser, the ABI version check and the guest's Init.
func (m *Module) Start(ctx context.Context, h sdk.Host) error {
	m.host, m.log, m.life = h, h.Logger(), ctx
	m.metrics = newMetrics(h.Metrics())
	m.denials = map[string]bool{}
	if err := m.Prepare(ctx); err != nil {
		return err
	}
	if m.refused != nil {
		m.log.Warn("wasm module cannot be instrumented with Kedge's loop checks; using wazero's termination checks "+
			"(slower calls, same deadline)", "path", m.spec.Settings.Path, "reason", m.refused)
	}
	m.metrics.stop.WithLabelValues(string(m.stop)).Set(1)
	began := time.Now()
	if err := m.setup(ctx); err != nil {
		_ = m.rt.Close(context.WithoutCancel(ctx))
		return err
	}
	m.log.Info("wasm module instantiated", "prepared", m.prepared.Round(time.Millisecond),
		"instantiated", time.Since(began).Round(time.Millisecond), "stop", string(m.stop))
	return nil
}

func (m *Module) setup(ctx context.Context) error {
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, m.rt); err != nil {
		return fmt.Errorf("wasi: %w", err)
	}
	if err := m.instantiateHost(ctx); err != nil {
		return fmt.Errorf("host functions: %w", err)
	}
	var err error
	m.inst, err = m.instantiate(ctx)
	return err
}

// checkExports makes sure the guest speaks the ABI before anything runs.
func checkExports(c wazero.CompiledModule) error {
	i32 := api.ValueTypeI32
	want := []struct {
		name            string
		params, results []api.ValueType
	}{
		{abi.ExportInitialize, nil, nil},
		{abi.ExportVersion, nil, []api.ValueType{i32}},
		{abi.ExportBuffer, []api.ValueType{i32}, []api.ValueType{i32}},
		{abi.ExportInit, []api.ValueType{i32}, []api.ValueType{i32}},
		{abi.ExportHandle, []api.ValueType{i32}, []api.ValueType{i32}},
	}
	got := c.ExportedFunctions()
	for _, w := range want {
		f, ok := got[w.name]
		if !ok {
			return fmt.Errorf("not a Kedge WASM module: it does not export %s (build the guest with wasm/guest, "+
				"GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared)", w.name)
		}
		if !sameTypes(f.ParamTypes(), w.params) || !sameTypes(f.ResultTypes(), w.results) {
			return fmt.Errorf("export %s has signature %v -> %v, ABI %d wants %v -> %v", w.name,
				f.ParamTypes(), f.ResultTypes(), abi.Version, w.params, w.results)
		}
	}
	return nil
}

func sameTypes(a, b []api.ValueType) bool {
	return string(a) == string(b)
}

// Handle passes msg to the guest's handle export. A guest that is down (killed or crashed by an
// earlier message) is re-instantiated first.
func (m *Module) Handle(ctx context.Context, msg sdk.Message) error {
	if m.inst == nil {
		inst, err := m.instantiate(ctx)
		if err != nil {
			return fmt.Errorf("module is down and could not be re-instantiated: %w", err)
		}
		m.inst = inst
		m.down.Store(nil)
		m.log.Info("wasm module re-instantiated")
	}
	m.cur, m.handling = msg, true
	defer func() { m.cur, m.handling = sdk.Message{}, false }()
	status, err := m.inst.handleMessage(toABI(msg))
	if err != nil {
		return m.lose(err)
	}
	return m.guestStatus("handle", status)
}

// guestStatus turns the status an init/handle export returned into an error.
func (m *Module) guestStatus(call string, status abi.Status) error {
	if status == abi.OK {
		return nil
	}
	reason := m.failMsg
	m.failMsg = ""
	if reason == "" {
		reason = "no reason given"
	}
	return fmt.Errorf("guest %s: %s: %s", call, status, reason)
}

// lose records that the instance died in a call, drops it and makes a new one at once, so the module
// is ready again without waiting for a message (an idle module would otherwise stay unready). If the
// new instance cannot be made, the module reports unhealthy and the next message tries again.
func (m *Module) lose(err error) error {
	m.inst.close()
	f := m.inst.explain(err)
	m.inst = nil
	m.metrics.lost.WithLabelValues(f.kind).Inc()
	m.log.Warn("wasm instance lost; making a new one", "reason", f.kind, "err", f.msg)
	inst, ierr := m.instantiate(m.life)
	if ierr != nil {
		down := fmt.Errorf("%w; a new instance could not be made: %v", f, ierr)
		m.down.Store(&down)
		m.log.Error("wasm module is down until a new instance can be made (the next message tries again)", "err", ierr)
		return f
	}
	m.inst = inst
	m.down.Store(nil)
	return f
}

// Healthy reports why the module is down, if it is.
func (m *Module) Healthy(context.Context) error {
	if err := m.down.Load(); err != nil {
		return fmt.Errorf("wasm instance is down until the next message re-instantiates it: %w", *err)
	}
	return nil
}

// Stop closes the module's runtime and everything in it.
func (m *Module) Stop(ctx context.Context) error {
	if m.inst != nil {
		m.inst.close()
		m.inst = nil
	}
	if m.rt == nil {
		return nil
	}
	return m.rt.Close(ctx)
}

// instance is one instantiation of the guest.
type instance struct {
	mod      api.Module
	mem      api.Memory
	buffer   api.Function
	handle   api.Function
	bufAddr  uint32
	bufCap   uint32
	stack    []uint64
	stderr   *head
	deadline time.Duration
	// ctx bounds host calls that may block (a send to a full mailbox); it ends when the instance dies.
	ctx    context.Context
	cancel context.CancelFunc
	// busy is when the running call started (ns since born), 0 between calls, and -1 once the
	// watchdog gave up on the call; killed is closed once it has cancelled ctx.
	busy   atomic.Int64
	born   time.Time
	killed chan struct{}
	// initDone ends the guest's sleeps once the init deadline passed; nil after Init.
	initDone <-chan struct{}
	// overdue is called by the watchdog when it gives up on a call (from the watchdog's goroutine).
	overdue func()
	// stopFlag is the instrumented guest's stop flag (nil unless compile.StopCheck): raise sets it,
	// and the guest traps at its next loop check. raised says it was set.
	stopFlag api.MutableGlobal
	raised   atomic.Bool
}

// raise tells an instrumented guest to stop: it traps within instrument.Budget loop iterations.
func (in *instance) raise() {
	in.raised.Store(true)
	if in.stopFlag != nil {
		in.stopFlag.Set(1)
	}
}

var errDeadline = errors.New("deadline exceeded")

// instantiate runs the guest's initialisers and Init under the manifest's init deadline.
func (m *Module) instantiate(ctx context.Context) (*instance, error) {
	limits := m.manifest.Limits
	initCtx, cancel := context.WithTimeout(ctx, time.Duration(limits.InitDeadline))
	defer cancel()
	in := &instance{stderr: &head{}, deadline: time.Duration(limits.Deadline), stack: make([]uint64, 1), killed: make(chan struct{}),
		initDone: initCtx.Done(), overdue: m.overdue}
	cfg := wazero.NewModuleConfig().
		WithName("").         // anonymous: a fresh instance never clashes with a dead one
		WithStartFunctions(). // _initialize is called below, once the stop flag is armed
		WithSysWalltime().WithSysNanotime().WithNanosleep(in.nap).
		WithRandSource(crand.Reader).
		WithStdout(&lineLog{m: m}).
		WithStderr(in.stderr)
	mod, err := m.rt.InstantiateModule(initCtx, m.compiled, cfg)
	if err != nil {
		return nil, fmt.Errorf("instantiate: %w", in.explainWith(err, initCtx, time.Duration(limits.InitDeadline)))
	}
	in.mod, in.mem = mod, mod.Memory()
	in.buffer, in.handle = mod.ExportedFunction(abi.ExportBuffer), mod.ExportedFunction(abi.ExportHandle)
	fail := func(err error) (*instance, error) {
		_ = mod.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	var disarm func() bool
	if in.mem == nil {
		return fail(errors.New("the guest exports no memory"))
	}
	if m.stop == compile.StopCheck {
		flag, ok := mod.ExportedGlobal(instrument.StopExport).(api.MutableGlobal)
		if !ok {
			return fail(fmt.Errorf("the instrumented guest does not export its stop flag %s", instrument.StopExport))
		}
		in.stopFlag = flag
		// Init past its deadline is stopped like a call (its flag goes up).
		disarm = context.AfterFunc(initCtx, in.raise)
		defer disarm()
	}
	if f := mod.ExportedFunction(abi.ExportInitialize); f != nil {
		if err := f.CallWithStack(initCtx, nil); err != nil {
			return fail(fmt.Errorf("%s: %w", abi.ExportInitialize, in.explainWith(err, initCtx, time.Duration(limits.InitDeadline))))
		}
	}
	if err := mod.ExportedFunction(abi.ExportVersion).CallWithStack(initCtx, in.stack); err != nil {
		return fail(fmt.Errorf("%s: %w", abi.ExportVersion, in.explainWith(err, initCtx, time.Duration(limits.InitDeadline))))
	}
	if v := int32(in.stack[0]); v != abi.Version {
		return fail(fmt.Errorf("the guest speaks ABI version %d, this host speaks %d: rebuild it with this Kedge's wasm/guest", v, abi.Version))
	}
	block := abi.AppendInit(nil, abi.Init{Name: m.spec.Name, Node: m.host.NodeName(), Group: m.spec.Group, Config: m.config})
	addr, err := in.reserve(initCtx, len(block))
	if err == nil {
		in.mem.Write(addr, block)
		in.stack[0] = uint64(len(block))
		err = mod.ExportedFunction(abi.ExportInit).CallWithStack(initCtx, in.stack)
	}
	if err != nil {
		return fail(fmt.Errorf("%s: %w", abi.ExportInit, in.explainWith(err, initCtx, time.Duration(limits.InitDeadline))))
	}
	if err := m.guestStatus("init", abi.Status(int32(in.stack[0]))); err != nil {
		return fail(err)
	}
	if disarm != nil && !disarm() { // the deadline passed just as Init returned: the flag is up
		return fail(fmt.Errorf("killed: ran past its %s deadline (limits.initDeadline in the manifest)", time.Duration(limits.InitDeadline)))
	}
	in.ctx, in.cancel = context.WithCancel(m.life)
	in.born = time.Now()
	in.initDone = nil
	go in.watch()
	return in, nil
}

// nap is the guest's sleep: real, so a sleeping guest does not spin, but in slices of at most 10 ms,
// so control returns to guest code (where the deadline can stop it) while it sleeps for longer.
// A sleep in a call the watchdog gave up on, or in an Init past its deadline, ends the call (a panic
// in a host function unwinds the guest): this is what stops a sleeping guest that is not
// interruptible.
func (in *instance) nap(ns int64) {
	if in.busy.Load() < 0 {
		panic(sys.NewExitError(sys.ExitCodeDeadlineExceeded))
	}
	if in.initDone != nil {
		select {
		case <-in.initDone:
			panic(sys.NewExitError(sys.ExitCodeDeadlineExceeded))
		default:
		}
	}
	time.Sleep(min(time.Duration(ns), 10*time.Millisecond))
}

// overdue is told by an instance's watchdog that it gave up on a call. An interruptible guest is
// stopped at its next check; one that is not runs until it sleeps, calls the host or returns, so
// until then the module reports why it is not ready.
func (m *Module) overdue() {
	if m.stop != compile.StopNone {
		return
	}
	err := fmt.Errorf("a call has run past its %s deadline and cannot be stopped until it sleeps, calls the host or returns "+
		"(the module is configured interruptible: false)", time.Duration(m.manifest.Limits.Deadline))
	m.down.Store(&err)
	m.log.Error("wasm call overran its deadline in a module that is not interruptible", "deadline", time.Duration(m.manifest.Limits.Deadline))
}

// watch stops a call that runs past the deadline, checking four times per deadline:
// a runaway is stopped between 1 and 1.25 deadlines after its call began. A ticker costs the calls
// nothing, where arming a timer for each would cost more than the rest of a call's overhead.
func (in *instance) watch() {
	t := time.NewTicker(max(in.deadline/4, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-in.ctx.Done():
			return
		case <-t.C:
		}
		start := in.busy.Load()
		if start > 0 && in.elapsed()-start > int64(in.deadline) && in.busy.CompareAndSwap(start, -1) {
			// Raising the stop flag makes an instrumented guest trap at its next loop check;
			// cancelling the call's context makes wazero stop a guest compiled with its checks and
			// close the instance from the calling goroutine (closing it from here would race with a
			// host function the guest is in), and ends host calls blocked on it.
			in.raise()
			in.cancel()
			close(in.killed)
			if in.overdue != nil {
				in.overdue()
			}
			return
		}
	}
}

// elapsed is the monotonic time since the instance was made, in ns; never 0 once a call runs.
func (in *instance) elapsed() int64 { return int64(time.Since(in.born)) + 1 }

// reserve makes the guest's exchange buffer hold at least n bytes and returns its address.
func (in *instance) reserve(ctx context.Context, n int) (uint32, error) {
	if n > int(^uint32(0)>>1) {
		return 0, fmt.Errorf("%d bytes do not fit in a 32-bit guest", n)
	}
	if uint32(n) <= in.bufCap && in.bufCap > 0 {
		return in.bufAddr, nil
	}
	size := uint32(max(n, 4096))
	in.stack[0] = uint64(size)
	if err := in.buffer.CallWithStack(ctx, in.stack); err != nil {
		return 0, err
	}
	addr := uint32(in.stack[0])
	if addr == 0 || uint64(addr)+uint64(size) > uint64(in.mem.Size()) {
		return 0, fmt.Errorf("%s returned address %d for %d bytes, outside the guest's memory", abi.ExportBuffer, addr, size)
	}
	in.bufAddr, in.bufCap = addr, size
	return addr, nil
}

// handleMessage encodes msg straight into the guest's exchange buffer and calls its handle export
// under the per-call deadline.
func (in *instance) handleMessage(msg abi.Message) (abi.Status, error) {
	in.stderr.reset()
	start := in.elapsed()
	in.busy.Store(start)
	size := abi.MessageSize(msg)
	addr, err := in.reserve(in.ctx, size)
	if err == nil {
		buf, _ := in.mem.Read(addr, uint32(size)) // in bounds: reserve checked it, and memory never shrinks
		abi.AppendMessage(buf[:0], msg)
		in.stack[0] = uint64(size)
		err = in.handle.CallWithStack(in.ctx, in.stack)
	}
	if !in.busy.CompareAndSwap(start, 0) {
		<-in.killed // the watchdog fired: the instance is closed whatever the call returned
		return 0, errDeadline
	}
	return abi.Status(int32(in.stack[0])), err
}

func (in *instance) close() {
	if in.cancel != nil {
		in.cancel()
	}
	_ = in.mod.Close(context.Background())
}

// failure says why an instance died in a call: kind labels the lost-instances metric ("deadline",
// "memory", "exit", "trap", "stopped"), msg is for the module author.
type failure struct {
	kind, msg string
}

func (f *failure) Error() string { return f.msg }

// explain says why a call into the instance failed, in the module author's terms.
func (in *instance) explain(err error) *failure {
	if errors.Is(err, errDeadline) {
		return &failure{"deadline", fmt.Sprintf("killed: the call ran past its %s deadline (limits.deadline in the manifest)", in.deadline)}
	}
	return in.explainWith(err, in.ctx, 0)
}

func (in *instance) explainWith(err error, ctx context.Context, deadline time.Duration) *failure {
	if in.raised.Load() { // an instrumented guest trapped at its stop check
		return &failure{"deadline", fmt.Sprintf("killed: ran past its %s deadline (limits.initDeadline in the manifest)", deadline)}
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		switch exit.ExitCode() {
		case sys.ExitCodeDeadlineExceeded:
			return &failure{"deadline", fmt.Sprintf("killed: ran past its %s deadline (limits.initDeadline in the manifest)", deadline)}
		case sys.ExitCodeContextCanceled:
			return &failure{"stopped", fmt.Sprintf("stopped: the module is shutting down (%v)", context.Cause(ctx))}
		}
		return in.crash("exit", fmt.Sprintf("the guest exited with code %d", exit.ExitCode()))
	}
	// wazero's message goes on with the wasm stack; its first line says what trapped.
	what, _, _ := strings.Cut(err.Error(), "\n")
	return in.crash("trap", "the guest trapped ("+what+")")
}

// crash adds what the guest said on stderr; a Go guest that ran out of memory says so there.
func (in *instance) crash(kind, msg string) *failure {
	said := in.stderr.summary()
	if strings.Contains(said, "out of memory") {
		kind = "memory"
	}
	return &failure{kind, msg + said}
}

// toABI converts a host message for the guest; strings are shared, not copied.
func toABI(m message.Message) abi.Message {
	return abi.Message{
		Header: abi.Header{ID: m.Header.ID, ParentID: m.Header.ParentID, Timestamp: m.Header.Timestamp,
			ResourceVersion: m.Header.ResourceVersion, Sync: m.Header.Sync, Type: m.Header.Type},
		Route: abi.Route{Source: m.Route.Source, Destination: m.Route.Destination, Group: m.Route.Group,
			Operation: m.Route.Operation, Resource: m.Route.Resource},
		Content: m.Content,
	}
}

// fromABI converts a guest's message; the host fills in an empty ID and timestamp.
func fromABI(m abi.Message) message.Message {
	out := message.Message{
		Header: message.Header{ID: m.Header.ID, ParentID: m.Header.ParentID, Timestamp: m.Header.Timestamp,
			ResourceVersion: m.Header.ResourceVersion, Sync: m.Header.Sync, Type: m.Header.Type},
		Route: message.Route{Source: m.Route.Source, Destination: m.Route.Destination, Group: m.Route.Group,
			Operation: m.Route.Operation, Resource: m.Route.Resource},
		Content: m.Content,
	}
	if out.Header.ID == "" {
		out.Header.ID = message.NewID()
	}
	if out.Header.Timestamp == 0 {
		out.Header.Timestamp = time.Now().UnixMilli()
	}
	return out
}
