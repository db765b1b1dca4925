package mapper

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	dmiv1beta1 "github.com/kedge-io/kedge/sdk/dmi/v1beta1"
)

// runner is one device's goroutine: it owns the device's Driver and calls it serially.
type runner struct {
	m      *Module
	ref    DeviceRef
	notify chan struct{} // cap 1: pending holds the latest update
	cancel context.CancelFunc
	quit   chan struct{} // closed by drain: finish the step in hand, report, return
	done   chan struct{}

	mu      sync.Mutex
	pending struct {
		dev   *dmiv1beta1.Device
		model *dmiv1beta1.DeviceModel
	}
	snap snapshot
}

type snapshot struct {
	device   *dmiv1beta1.Device
	state    string
	stateErr error
	props    []snapProp
}

type snapProp struct {
	name, typ, value string
	ts               time.Time
	has              bool
}

// propState is what the goroutine keeps per property.
type propState struct {
	Property
	collect, report time.Duration
	reportToCloud   bool
	writable        bool
	push            *pushDest // pushMethod target (push.go); nil: none

	nextCollect, nextReport time.Time
	fails                   int
	lastErr                 error
	value                   string
	ts, reportedTs          time.Time
	has                     bool

	desired, written string // desired value, last one written (or refused)
	nextWrite        time.Time
	writeFails       int
	writeErr         error // why the desired value is not on the device (refused, or failing); nil once written
}

func newRunner(m *Module, d *dmiv1beta1.Device, model *dmiv1beta1.DeviceModel) *runner {
	r := &runner{m: m, notify: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}),
		ref: DeviceRef{Namespace: d.GetNamespace(), Name: d.GetName(), Model: d.GetSpec().GetDeviceModelReference()}}
	r.pending.dev, r.pending.model = d, model
	r.snap.device = d
	r.notify <- struct{}{}
	return r
}

func (r *runner) start(parent context.Context) {
	ctx, cancel := context.WithCancel(parent)
	r.cancel = cancel
	go r.run(ctx)
}

func (r *runner) stop() {
	r.cancel()
	<-r.done
}

// drain stops the goroutine without cancelling what it is doing: the read in hand completes, and
// every reading not reported yet is reported before it returns (a hot swap's handover).
func (r *runner) drain() {
	close(r.quit)
	<-r.done
	r.cancel()
}

// update hands the goroutine a changed device and/or model (the latest wins).
func (r *runner) update(d *dmiv1beta1.Device, model *dmiv1beta1.DeviceModel) {
	r.mu.Lock()
	if d != nil {
		r.pending.dev = d
	}
	if model != nil {
		r.pending.model = model
	}
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *runner) snapshot() snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.snap
	s.props = append([]snapProp(nil), r.snap.props...)
	return s
}

// DeviceState is the state last decided for a device ("online", "offline", "" before the first
// decision) and, when offline, why.
func (m *Module) DeviceState(namespace, name string) (string, error) {
	m.mu.Lock()
	r := m.devices[namespace+"/"+name]
	m.mu.Unlock()
	if r == nil {
		return "", fmt.Errorf("device %s/%s is not served by mapper %s", namespace, name, m.name)
	}
	s := r.snapshot()
	return s.state, s.stateErr
}

func (m *Module) backoff(fails int) time.Duration {
	d := m.BackoffMin
	for i := 1; i < fails && d < m.BackoffMax; i++ {
		d *= 2
	}
	return min(d, m.BackoffMax)
}

type devLoop struct {
	r      *runner
	m      *Module
	dev    *dmiv1beta1.Device
	model  *dmiv1beta1.DeviceModel
	driver Driver
	proto  string // protocol config the driver was initialised with
	props  []*propState

	initFails          int
	initErr, healthErr error
	nextInit           time.Time
	nextHealth         time.Time
	healthDone         bool

	state, reported string // decided, last reported to edgecore
	stateErr        error
	propErrs        string    // property errors (propErrors) last reported with the state, as JSON
	offline         string    // offlineReason last reported with the state (offline.go)
	propErrsShape   string    // and which properties failed how
	nextErrText     time.Time // a change of error texts only is reported from then on
	nextStateReport time.Time
	stateFails      int
}

func (r *runner) run(ctx context.Context) {
	r.m.metrics.goroutines.Inc()
	defer close(r.done)
	defer r.m.metrics.goroutines.Dec()
	l := &devLoop{r: r, m: r.m}
	defer func() {
		if l.driver != nil {
			if err := l.driver.Close(); err != nil {
				r.m.log.Warn("driver close failed", "device", r.ref.String(), "err", err)
			}
		}
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-r.quit:
			l.flush(ctx)
			return
		default:
		}
		now := time.Now()
		l.step(ctx, now)
		wake := l.nextWake(time.Now())
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wake)
		select {
		case <-ctx.Done():
			return
		case <-r.quit:
			l.flush(ctx)
			return
		case <-r.notify:
			r.mu.Lock()
			d, mdl := r.pending.dev, r.pending.model
			r.mu.Unlock()
			l.apply(d, mdl)
		case <-timer.C:
		}
	}
}

// apply takes the device and model as they are now.
func (l *devLoop) apply(d *dmiv1beta1.Device, model *dmiv1beta1.DeviceModel) {
	if d != nil {
		l.dev = d
	}
	if model != nil {
		l.model = model
	}
	l.r.mu.Lock()
	l.r.snap.device = l.dev
	l.r.mu.Unlock()
	pcfg, err := configJSON(l.dev.GetSpec().GetProtocol().GetConfigData())
	key := string(pcfg)
	if err != nil {
		key = "error: " + err.Error()
	}
	if key != l.proto && l.driver != nil {
		l.m.log.Info("protocol config changed; driver re-initialised", "device", l.r.ref.String())
		if err := l.driver.Close(); err != nil {
			l.m.log.Warn("driver close failed", "device", l.r.ref.String(), "err", err)
		}
		l.driver, l.initFails, l.nextInit = nil, 0, time.Time{}
	}
	old := map[string]*propState{}
	for _, p := range l.props {
		old[p.Name] = p
	}
	l.props = nil
	if l.model == nil {
		l.m.log.Warn("device waits for its model", "device", l.r.ref.String(), "model", l.r.ref.Model)
		return
	}
	mprops := map[string]*dmiv1beta1.ModelProperty{}
	for _, mp := range l.model.GetSpec().GetProperties() {
		mprops[mp.GetName()] = mp
	}
	now := time.Now()
	for _, dp := range l.dev.GetSpec().GetProperties() {
		mp := mprops[dp.GetName()]
		if mp == nil {
			l.m.log.Warn("device property not in its model; not collected", "device", l.r.ref.String(), "property", dp.GetName(), "model", l.model.GetName())
			continue
		}
		vis, err := configJSON(dp.GetVisitors().GetConfigData())
		if err != nil {
			l.m.log.Warn("property visitor config unreadable; not collected", "device", l.r.ref.String(), "property", dp.GetName(), "err", err)
			continue
		}
		p := &propState{Property: Property{Name: dp.GetName(), Type: strings.ToUpper(mp.GetType()), AccessMode: mp.GetAccessMode(),
			Minimum: mp.GetMinimum(), Maximum: mp.GetMaximum(), Unit: mp.GetUnit(), VisitorProtocol: dp.GetVisitors().GetProtocolName(), Visitor: vis},
			collect: time.Duration(dp.GetCollectCycle()) * time.Millisecond, report: time.Duration(dp.GetReportCycle()) * time.Millisecond,
			reportToCloud: dp.GetReportToCloud(), writable: strings.EqualFold(mp.GetAccessMode(), "ReadWrite"),
			desired: dp.GetDesired().GetValue(), nextCollect: now}
		if p.collect <= 0 {
			p.collect = l.m.CollectCycle
		}
		if p.report <= 0 {
			p.report = l.m.ReportCycle
		}
		if p.push, err = pushSpec(dp.GetPushMethod(), l.m.CallTimeout); err != nil {
			l.m.log.Warn("property pushMethod not used; the property is still collected and reported", "device", l.r.ref.String(), "property", dp.GetName(), "err", err)
		}
		if o := old[p.Name]; o != nil && equalProperty(o.Property, p.Property) {
			p.nextCollect, p.fails, p.lastErr = o.nextCollect, o.fails, o.lastErr
			p.value, p.ts, p.reportedTs, p.has = o.value, o.ts, o.reportedTs, o.has
			p.nextReport, p.written, p.writeFails, p.nextWrite, p.writeErr = o.nextReport, o.written, o.writeFails, o.nextWrite, o.writeErr
			if p.desired != o.desired {
				p.writeFails, p.nextWrite, p.writeErr = 0, now, nil
			}
		}
		l.props = append(l.props, p)
	}
	l.proto = key
}

func equalProperty(a, b Property) bool {
	return a.Name == b.Name && a.Type == b.Type && a.AccessMode == b.AccessMode && a.Minimum == b.Minimum &&
		a.Maximum == b.Maximum && a.Unit == b.Unit && a.VisitorProtocol == b.VisitorProtocol && string(a.Visitor) == string(b.Visitor)
}

func (l *devLoop) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, l.m.CallTimeout)
}

// step does what is due at now: init, desired writes, reads, health, reports, state.
func (l *devLoop) step(ctx context.Context, now time.Time) {
	if l.dev == nil || l.model == nil || ctx.Err() != nil {
		return
	}
	ref := l.r.ref
	dev := ref.String()
	if l.driver == nil {
		if now.Before(l.nextInit) {
			return
		}
		pcfg, err := configJSON(l.dev.GetSpec().GetProtocol().GetConfigData())
		if err == nil {
			drv := l.m.newDriver()
			cctx, cancel := l.call(ctx)
			err = drv.Init(cctx, ProtocolConfig{Device: ref, Name: l.dev.GetSpec().GetProtocol().GetProtocolName(), ConfigData: pcfg})
			cancel()
			if err == nil {
				l.driver, l.initFails, l.initErr = drv, 0, nil
				l.nextHealth, l.healthDone = now, false
			} else {
				_ = drv.Close()
			}
		}
		if err != nil {
			l.initFails++
			l.initErr = fmt.Errorf("init: %w", err)
			l.nextInit = now.Add(l.m.backoff(l.initFails))
			l.m.log.Warn("driver init failed; retrying", "device", dev, "in", l.m.backoff(l.initFails), "err", err)
			l.decide(ctx, now)
			return
		}
	}
	for _, p := range l.props {
		if ctx.Err() != nil {
			return
		}
		if p.desired == "" || p.desired == p.written || now.Before(p.nextWrite) {
			continue
		}
		if !p.writable {
			l.m.log.Warn("desired value for a property that is not ReadWrite; not written", "device", dev, "property", p.Name, "err", ErrReadOnly)
			p.written, p.writeErr = p.desired, fmt.Errorf("desired value %q not written: %w (model accessMode %q)", p.desired, ErrReadOnly, p.AccessMode)
			l.m.metrics.writes.WithLabelValues(dev, "refused").Inc()
			continue
		}
		v, err := ParseValue(p.Type, p.desired)
		if err == nil {
			err = checkRange(p.Property, v) // properrors.go
		}
		if err != nil {
			l.m.log.Warn("desired value not written", "device", dev, "property", p.Name, "err", err)
			p.written, p.writeErr = p.desired, fmt.Errorf("desired value %q not written: %w", p.desired, err)
			l.m.metrics.writes.WithLabelValues(dev, "refused").Inc()
			continue
		}
		cctx, cancel := l.call(ctx)
		if v, err = l.m.encodeWrite(cctx, ref, p.Property, v); err == nil { // codec.go
			err = l.driver.Write(cctx, ref, p.Property, v)
		}
		cancel()
		if err != nil {
			p.writeFails++
			p.writeErr = fmt.Errorf("desired value %q not written: %w", p.desired, err)
			p.nextWrite = now.Add(l.m.backoff(p.writeFails))
			l.m.metrics.writes.WithLabelValues(dev, "error").Inc()
			l.m.log.Warn("write failed; retrying", "device", dev, "property", p.Name, "value", p.desired, "in", l.m.backoff(p.writeFails), "err", err)
			continue
		}
		l.m.metrics.writes.WithLabelValues(dev, "ok").Inc()
		l.m.log.Info("desired value written", "device", dev, "property", p.Name, "value", p.desired)
		p.written, p.writeFails, p.writeErr, p.nextCollect = p.desired, 0, nil, now // read it back now
	}
	for _, p := range l.props {
		if ctx.Err() != nil {
			return
		}
		if now.Before(p.nextCollect) {
			continue
		}
		cctx, cancel := l.call(ctx)
		v, err := l.driver.Read(cctx, ref, p.Property)
		if err == nil {
			v, err = l.m.decodeRead(cctx, ref, p.Property, v) // codec.go: Raw goes to the visitor's codec
		}
		cancel()
		var s string
		if err == nil {
			s, err = FormatValue(p.Type, v)
			if err != nil {
				err = fmt.Errorf("property %q: %w", p.Name, err)
			}
		}
		done := time.Now()
		if err != nil {
			p.fails++
			p.lastErr = err
			p.nextCollect = done.Add(max(p.collect, l.m.backoff(p.fails)))
			l.m.metrics.readErrors.WithLabelValues(dev).Inc()
			if p.fails == 1 || p.fails%10 == 0 {
				l.m.log.Warn("read failed", "device", dev, "property", p.Name, "fails", p.fails, "err", err)
			}
			continue
		}
		l.m.metrics.reads.WithLabelValues(dev).Inc()
		if !done.After(p.ts) {
			done = p.ts.Add(time.Millisecond)
		}
		p.fails, p.lastErr, p.value, p.ts, p.has = 0, nil, s, done, true
		p.nextCollect = done.Add(p.collect)
		if p.push != nil {
			l.m.pusher.push(p.push, pushPayload{Device: dev, Property: p.Name, Value: s, Type: p.Type, Timestamp: done.UnixMilli()})
		}
	}
	if !now.Before(l.nextHealth) && ctx.Err() == nil {
		cctx, cancel := l.call(ctx)
		l.healthErr = l.driver.Health(cctx, ref)
		cancel()
		l.healthDone = true
		l.nextHealth = time.Now().Add(l.m.HealthCycle)
	}
	l.report(ctx, time.Now())
	l.snapshotValues()
	l.decide(ctx, time.Now())
}

// report sends every reportToCloud property with a value newer than the last reported one whose
// report cycle is due, in one ReportDeviceStatus call.
func (l *devLoop) report(ctx context.Context, now time.Time) {
	var twins []*dmiv1beta1.Twin
	var sent []*propState
	for _, p := range l.props {
		if !p.reportToCloud || !p.has || !p.ts.After(p.reportedTs) || now.Before(p.nextReport) {
			continue
		}
		twins = append(twins, &dmiv1beta1.Twin{PropertyName: p.Name, Reported: &dmiv1beta1.TwinProperty{Value: p.value,
			Metadata: map[string]string{"timestamp": strconv.FormatInt(p.ts.UnixMilli(), 10), "type": p.Type}}})
		sent = append(sent, p)
	}
	if len(twins) == 0 || ctx.Err() != nil {
		return
	}
	dev := l.r.ref.String()
	cctx, cancel := l.call(ctx)
	_, err := l.m.dmi.ReportDeviceStatus(cctx, &dmiv1beta1.ReportDeviceStatusRequest{DeviceName: l.r.ref.Name, DeviceNamespace: l.r.ref.Namespace,
		ReportedDevice: &dmiv1beta1.DeviceStatus{Twins: twins}})
	cancel()
	if err != nil && refusedReport(err) {
		// edgecore took the call and refused what it carried (a property not in the model, a bad
		// timestamp...): sending the same values again cannot help; the next readings go next cycle.
		l.m.metrics.reports.WithLabelValues(dev, "refused").Inc()
		l.m.log.Warn("report refused by edgecore; these values are dropped", "device", dev, "err", err)
		for _, p := range sent {
			p.reportedTs = p.ts
			p.nextReport = now.Add(p.report)
		}
		return
	}
	if err != nil {
		l.m.metrics.reports.WithLabelValues(dev, "failed").Inc()
		if ctx.Err() == nil {
			l.m.log.Warn("report to edgecore failed; the latest values go with the next report", "device", dev, "err", err)
		}
		l.m.dmiFailed(err)
		for _, p := range sent {
			p.nextReport = now.Add(max(p.report, l.m.BackoffMin))
		}
		return
	}
	l.m.metrics.reports.WithLabelValues(dev, "ok").Inc()
	for _, p := range sent {
		p.reportedTs = p.ts
		p.nextReport = now.Add(p.report)
	}
}

// flush reports every reading not reported yet, whatever the report cycle (before a handover).
func (l *devLoop) flush(ctx context.Context) {
	if l.driver == nil {
		return
	}
	for _, p := range l.props {
		p.nextReport = time.Time{}
	}
	l.report(ctx, time.Now())
}

func (l *devLoop) snapshotValues() {
	ps := make([]snapProp, 0, len(l.props))
	for _, p := range l.props {
		ps = append(ps, snapProp{name: p.Name, typ: p.Type, value: p.value, ts: p.ts, has: p.has})
	}
	l.r.mu.Lock()
	l.r.snap.props = ps
	l.r.mu.Unlock()
}

// decide works out the device's state and reports it to edgecore when it changed: offline when the
// driver cannot be initialised, Health fails, or every property's last read failed; online otherwise
// (once Health or a read succeeded).
func (l *devLoop) decide(ctx context.Context, now time.Time) {
	state, why := "online", error(nil)
	switch {
	case l.driver == nil:
		state, why = "offline", l.initErr
	case l.healthErr != nil:
		state, why = "offline", fmt.Errorf("health: %w", l.healthErr)
	default:
		var errs []error
		for _, p := range l.props {
			if p.fails == 0 {
				errs = nil
				break
			}
			errs = append(errs, p.lastErr)
		}
		if len(errs) > 0 {
			state, why = "offline", errors.Join(errs...)
		}
		if state == "online" && !l.healthDone {
			return
		}
	}
	if state != l.state || fmt.Sprint(why) != fmt.Sprint(l.stateErr) {
		if state != l.state {
			l.m.log.Info("device state", "device", l.r.ref.String(), "state", state, "err", why)
		}
		l.state, l.stateErr = state, why
		l.r.mu.Lock()
		l.r.snap.state, l.r.snap.stateErr = state, why
		l.r.mu.Unlock()
		v := 0.0
		if state == "online" {
			v = 1
		}
		l.m.metrics.online.WithLabelValues(l.r.ref.String()).Set(v)
	}
	perrs, shape := l.propErrorsShape()
	offline := offlineReason(l.state, l.stateErr) // offline.go
	if (l.state == l.reported && offline == l.offline && !l.propErrorsDue(now)) || now.Before(l.nextStateReport) || ctx.Err() != nil {
		return
	}
	cctx, cancel := l.call(ctx)
	cctx = metadata.AppendToOutgoingContext(cctx, PropertyErrorsHeader, cmp.Or(perrs, "{}"), OfflineReasonHeader, offline)
	_, err := l.m.dmi.ReportDeviceStates(cctx, &dmiv1beta1.ReportDeviceStatesRequest{DeviceName: l.r.ref.Name, DeviceNamespace: l.r.ref.Namespace, State: l.state})
	cancel()
	if err != nil {
		l.stateFails++
		l.nextStateReport = now.Add(l.m.backoff(l.stateFails))
		if ctx.Err() == nil {
			l.m.log.Warn("state report to edgecore failed; retrying", "device", l.r.ref.String(), "err", err)
		}
		l.m.dmiFailed(err)
		return
	}
	l.reported, l.propErrs, l.propErrsShape, l.stateFails, l.offline = l.state, perrs, shape, 0, offline
	l.nextErrText = now.Add(l.m.HealthCycle)
}

// nextWake is when something is next due (at most HealthCycle away).
func (l *devLoop) nextWake(now time.Time) time.Duration {
	next := now.Add(l.m.HealthCycle)
	at := func(t time.Time) {
		if t.Before(next) {
			next = t
		}
	}
	if l.dev == nil || l.model == nil {
		return time.Hour
	}
	if l.driver == nil {
		at(l.nextInit)
	} else {
		at(l.nextHealth)
		for _, p := range l.props {
			at(p.nextCollect)
			if p.desired != "" && p.desired != p.written {
				at(p.nextWrite)
			}
			if p.reportToCloud && p.has && p.ts.After(p.reportedTs) {
				at(p.nextReport)
			}
		}
	}
	if l.state != "" && (l.state != l.reported || offlineReason(l.state, l.stateErr) != l.offline) {
		at(l.nextStateReport)
	}
	if text, shape := l.propErrorsShape(); l.state != "" && text != l.propErrs {
		when := l.nextStateReport // after a failed report: its backoff
		if shape == l.propErrsShape && l.nextErrText.After(when) {
			when = l.nextErrText // only the texts changed: not before then
		}
		at(when)
	}
	return max(next.Sub(now), 0)
}

// refusedReport says whether edgecore answered a report with a refusal of its content (as opposed to
// not taking it: unreachable, overloaded, timed out).
func refusedReport(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition, codes.OutOfRange, codes.PermissionDenied:
		return true
	}
	return false
}
