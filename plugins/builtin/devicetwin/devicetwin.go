// Package devicetwin keeps the edge's device twins: the Devices and DeviceModels the cloud sends
// (through metamanager), the expected and actual value of every property, and device states. It
// speaks KubeEdge's MQTT topic API through eventbus ($hw/events/device/<id>/twin/update, /twin/get,
// membership, state, data) and sends reported values to the cloud in batches.
package devicetwin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/sdk"
	devicesv1beta1 "github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	"github.com/kedge-io/kedge/sdk/message"
)

// Name is the module's routing address; its group is "twin".
const Name = "devicetwin"

// Store types in devicetwin's namespace.
const (
	typeDevice      = "device"      // (ns, name) -> the Device JSON, with its resourceVersion
	typeDeviceModel = "devicemodel" // (ns, name) -> the DeviceModel JSON, with its resourceVersion
	typeTwin        = "twin"        // (ns, <device>/<property>) -> msgTwin
	typeMembership  = "membership"  // ("default", node) -> membershipContent
	typeDeviceState = "devicestate" // (ns, name) -> deviceState
)

// Info registers devicetwin.
var Info = sdk.Info{
	Name:    Name,
	Group:   "twin",
	Doc:     "Device twins: Devices/DeviceModels from the cloud, KubeEdge's MQTT twin API through eventbus, reported values batched to the cloud.",
	Enabled: true,
	Mailbox: 8192,
	New:     func() sdk.Module { return New() },
}

func init() { sdk.Register(Info) }

// Module is devicetwin; its exported fields are its settings.
// LastOnlineLayout is how KubeEdge v1.23.1's devicetwin writes a device's last online time
// (last_online in membership payloads, lastOnlineTime in state/update/result and upstream): RFC 3339
// in UTC, to the second ("2026-12-06T05:46:13Z"), as observed from its binary (README, "Payloads
// compared with KubeEdge"). An earlier Kedge wrote "2006-01-02 15:04:05", from a reading of
// KubeEdge's code (issue 16) that the binary does not bear out.
const LastOnlineLayout = time.RFC3339

type Module struct {
	FlushInterval time.Duration `yaml:"flushInterval" doc:"Reported values, states and observed desired values go to the cloud at most once per device per interval, the latest of each property."`
	EventBus      string        `yaml:"eventBus" doc:"Module that publishes to MQTT."`
	MetaManager   string        `yaml:"metaManager" doc:"Module that stores upstream device status and forwards it to the cloud; also asked for devices at start."`
	ResyncOnStart bool          `yaml:"resyncOnStart" doc:"At start, ask metaManager for every device, model and membership it holds (changes made while devicetwin was not running)."`
	ResyncTimeout time.Duration `yaml:"resyncTimeout" doc:"Bound on each resync query."`

	host    sdk.Host
	ctx     context.Context
	log     *slog.Logger
	metrics *metrics
	wg      sync.WaitGroup

	// Only Handle touches the state below (the host calls it serially); Start fills it first.
	devices    map[string]*devicesv1beta1.Device      // ns/name
	byName     map[string][]string                    // name -> namespaces
	models     map[string]*devicesv1beta1.DeviceModel // ns/name
	twins      map[string]map[string]*msgTwin         // ns/name -> property -> twin
	states     map[string]deviceState                 // ns/name
	membership map[string][]memberRef                 // node -> devices

	pendingMu sync.Mutex
	pending   map[string]*pendingStatus // ns/name -> what goes upstream at the next flush
	pendKick  chan struct{}             // something was pended: the flusher arms its timer
	health    map[string]*devHealth     // ns/name -> refused readings, offline (health.go)

	// Group commit (commit.go): Handle queues, the committer writes and answers.
	qMu      sync.Mutex
	queued   *batch // waiting for the next transaction
	inflight *batch // in the transaction now
	kick     chan struct{}
	commitMu sync.Mutex
	reload   atomic.Bool // a group commit failed: read twins and states again from the store
}

type deviceState struct {
	State          string `json:"state"`
	LastOnlineTime string `json:"lastOnlineTime,omitempty"`
}

type pendingStatus struct {
	ns, name       string
	twins          map[string]*statusTwin
	state          string
	lastOnlineTime string
	condition      *statusCondition
}

var _ sdk.Module = (*Module)(nil)

// New returns devicetwin with its defaults.
func New() *Module {
	return &Module{
		FlushInterval: 200 * time.Millisecond,
		EventBus:      "eventbus",
		MetaManager:   sdk.DefaultMetaManager,
		ResyncOnStart: true,
		ResyncTimeout: 5 * time.Second,
	}
}

type metrics struct {
	requests       *prometheus.CounterVec
	updates        prometheus.Counter
	upstream       prometheus.Counter
	dropped        *prometheus.CounterVec
	commitWrites   prometheus.Histogram
	commitSeconds  prometheus.Histogram
	commitFailures prometheus.Counter
	refused        *prometheus.CounterVec
}

func (m *Module) Start(ctx context.Context, h sdk.Host) error {
	if err := m.Validate(); err != nil { // the host checked already; a direct caller gets the same answer
		return err
	}
	m.host, m.ctx, m.log = h, ctx, h.Logger()
	m.metrics = &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_devicetwin_requests_total",
			Help: "MQTT requests and cloud changes handled, by kind (twin_update, twin_get, membership_get, state_update, data_update, device, devicemodel, membership) and result (ok, error, ignored)."}, []string{"kind", "result"}),
		updates: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_devicetwin_twin_values_stored_total",
			Help: "Twin property values stored (expected or actual)."}),
		upstream: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_devicetwin_status_sent_total",
			Help: "Device status messages sent upstream (one per device per flush at most)."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_devicetwin_dropped_total",
			Help: "Messages that could not be sent, by destination (eventbus, metamanager)."}, []string{"to"}),
		commitWrites: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kedge_devicetwin_commit_requests",
			Help:    "MQTT requests whose store writes shared one SQLite transaction (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14)}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kedge_devicetwin_commit_seconds",
			Help:    "Duration of one group commit's transaction.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		commitFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_devicetwin_commit_failures_total",
			Help: "Group commits whose transaction failed (their requests were answered with an error, nothing acknowledged)."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_devicetwin_refused_total",
			Help: "Device failures devicetwin put in the Healthy condition, by kind: reading (a reading refused: out of the model's range, not of its type), desired (a desired value from the cloud refused), read_failed and write_refused (a property's read failing or desired value not written, as its mapper reports); each sets the Device's Healthy condition to False in the cloud."}, []string{"kind"}),
	}
	for _, c := range []prometheus.Collector{m.metrics.requests, m.metrics.updates, m.metrics.upstream, m.metrics.dropped,
		m.metrics.commitWrites, m.metrics.commitSeconds, m.metrics.commitFailures, m.metrics.refused} {
		if err := h.Metrics().Register(c); err != nil {
			return err
		}
	}
	m.devices, m.byName, m.models = map[string]*devicesv1beta1.Device{}, map[string][]string{}, map[string]*devicesv1beta1.DeviceModel{}
	m.twins, m.states, m.membership = map[string]map[string]*msgTwin{}, map[string]deviceState{}, map[string][]memberRef{}
	m.pending = map[string]*pendingStatus{}
	m.pendKick = make(chan struct{}, 1)
	m.health = map[string]*devHealth{}
	m.kick = make(chan struct{}, 1)
	if err := m.load(ctx); err != nil {
		return fmt.Errorf("load devicetwin tables: %w", err)
	}
	// The upstream batch of the last run was in memory: send the latest stored values again.
	m.rereport()
	m.wg.Go(m.commitLoop)
	if m.ResyncOnStart {
		m.resync(ctx)
	}
	m.wg.Go(m.flushLoop)
	return nil
}

// Stop commits and answers what is queued, sends what is still pending upstream and waits for the
// committer and the flusher.
func (m *Module) Stop(context.Context) error {
	m.wg.Wait()
	m.commitOnce()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m.flush(ctx)
	return nil
}

// load reads devicetwin's own tables.
func (m *Module) load(ctx context.Context) error {
	st := m.host.Store()
	objs, err := st.List(ctx, sdk.Query{})
	if err != nil {
		return err
	}
	for _, o := range objs {
		k := o.Namespace + "/" + o.Name
		switch o.Type {
		case typeTwin, typeDeviceState:
			m.loadObject(o, m.twins, m.states)
		case typeDevice:
			var d devicesv1beta1.Device
			if err := json.Unmarshal(o.Value, &d); err != nil {
				m.log.Error("stored device unreadable; skipped", "key", o.Key.String(), "err", err)
				continue
			}
			m.setDevice(o.Namespace, o.Name, &d)
		case typeDeviceModel:
			var dm devicesv1beta1.DeviceModel
			if err := json.Unmarshal(o.Value, &dm); err != nil {
				m.log.Error("stored device model unreadable; skipped", "key", o.Key.String(), "err", err)
				continue
			}
			m.models[k] = &dm
		case typeMembership:
			var mc membershipContent
			if json.Unmarshal(o.Value, &mc) == nil {
				m.membership[o.Name] = mc.Devices
			}
		}
	}
	return nil
}

// loadObject reads a stored twin or device state into the given tables.
func (m *Module) loadObject(o sdk.Object, twins map[string]map[string]*msgTwin, states map[string]deviceState) {
	switch o.Type {
	case typeTwin:
		dev, prop, ok := strings.Cut(o.Name, "/")
		var t msgTwin
		if !ok || json.Unmarshal(o.Value, &t) != nil {
			m.log.Error("stored twin unreadable; skipped", "key", o.Key.String())
			return
		}
		dk := o.Namespace + "/" + dev
		if twins[dk] == nil {
			twins[dk] = map[string]*msgTwin{}
		}
		twins[dk][prop] = &t
	case typeDeviceState:
		var s deviceState
		if json.Unmarshal(o.Value, &s) == nil {
			states[o.Namespace+"/"+o.Name] = s
		}
	}
}

// resync asks metamanager for what it holds, so changes stored while devicetwin was not running are
// applied; a device devicetwin holds that metamanager no longer has is removed.
func (m *Module) resync(ctx context.Context) {
	for _, typ := range []string{typeDeviceModel, typeDevice, typeMembership} {
		q := message.New(Name, "resource", message.OpQuery, "*/"+typ)
		reply, err := m.host.SendSync(ctx, m.MetaManager, q, m.ResyncTimeout)
		if err != nil {
			if !errors.Is(err, sdk.ErrUnknownModule) {
				m.log.Warn("resync: metamanager did not answer; using devicetwin's own tables", "type", typ, "err", err)
			}
			return
		}
		if reply.Route.Operation == message.OpError {
			m.log.Warn("resync: metamanager refused", "type", typ, "reply", string(reply.Content))
			return
		}
		var items []json.RawMessage
		if err := json.Unmarshal(reply.Content, &items); err != nil {
			m.log.Warn("resync: unreadable answer", "type", typ, "err", err)
			return
		}
		seen := map[string]bool{}
		for _, it := range items {
			var meta struct {
				Metadata struct {
					Namespace, Name, ResourceVersion string
				} `json:"metadata"`
				Devices []memberRef `json:"devices"`
			}
			if json.Unmarshal(it, &meta) != nil {
				continue
			}
			msg := message.New(Name, "resource", message.OpUpdate, "")
			msg.Content = it
			msg.Header.ResourceVersion = meta.Metadata.ResourceVersion
			ns, name := meta.Metadata.Namespace, meta.Metadata.Name
			if typ == typeMembership {
				ns, name = "default", m.host.NodeName() // the membership object carries no metadata
			}
			if name == "" {
				continue
			}
			seen[ns+"/"+name] = true
			if err := m.applyCloud(ctx, msg, message.Resource{Namespace: ns, Type: typ, Name: name}); err != nil {
				m.log.Warn("resync: not applied", "type", typ, "name", ns+"/"+name, "err", err)
			}
		}
		if typ == typeDevice {
			for k := range m.devices {
				if !seen[k] {
					ns, name, _ := strings.Cut(k, "/")
					_ = m.deleteDevice(ctx, ns, name)
				}
			}
		}
	}
}

// Handle takes MQTT messages from eventbus and device changes from metamanager.
func (m *Module) Handle(ctx context.Context, msg sdk.Message) error {
	m.reloadIfFailed(ctx)
	if msg.Route.Operation == message.OpPublish && strings.HasPrefix(msg.Route.Resource, "$") {
		m.handleMQTT(ctx, msg)
		return nil
	}
	if msg.Route.Operation == message.OpResponse || msg.Route.Operation == message.OpError {
		return nil // late answers to our own requests
	}
	if msg.Route.Resource == kubeEdgeMembershipResource { // KubeEdge's cloud: a change (kubeedge.go)
		if err := m.drainCommits(ctx); err != nil {
			return fmt.Errorf("membership: waiting for queued twin writes: %w", err)
		}
		return m.applyKubeEdgeMembership(ctx, msg)
	}
	res, err := message.ParseEdge(msg.Route.Resource)
	if err != nil {
		if cr, cerr := message.ParseCloud(msg.Route.Resource); cerr == nil {
			res, err = cr, nil
		}
	}
	if err != nil {
		return fmt.Errorf("message from %s: %w", msg.Route.Source, err)
	}
	switch res.Type {
	case typeDevice, typeDeviceModel, typeMembership:
	default:
		return fmt.Errorf("resource %s from %s: devicetwin handles device, devicemodel and membership", msg.Route.Resource, msg.Route.Source)
	}
	if res.Name == "" {
		return fmt.Errorf("resource %s from %s: no name", msg.Route.Resource, msg.Route.Source)
	}
	// Cloud changes write and publish directly: what MQTT requests queued goes first.
	if err := m.drainCommits(ctx); err != nil {
		return fmt.Errorf("%s %s: waiting for queued twin writes: %w", msg.Route.Operation, msg.Route.Resource, err)
	}
	switch msg.Route.Operation {
	case message.OpInsert, message.OpUpdate, message.OpPatch:
		err = m.applyCloud(ctx, msg, res)
	case message.OpDelete:
		err = m.deleteCloud(ctx, res)
	default:
		err = fmt.Errorf("operation %q on %s is not supported (insert, update, delete)", msg.Route.Operation, msg.Route.Resource)
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.metrics.requests.WithLabelValues(res.Type, result).Inc()
	return err
}

// flushLoop flushes FlushInterval after something was pended, and sleeps while nothing is: an idle
// edge wakes up for nothing (a 200 ms ticker was 5 wake-ups a second, each waking the Go runtime's
// threads too). A change pended right after a flush waits a full interval, so each device still goes
// upstream at most once per interval.
func (m *Module) flushLoop() {
	t := time.NewTimer(m.FlushInterval)
	t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.pendKick:
		}
		t.Reset(m.FlushInterval)
		select {
		case <-m.ctx.Done():
			t.Stop()
			return
		case <-t.C:
			m.flush(m.ctx)
		}
	}
}

// flush sends one devicestatus message per device with pending changes (the latest of each).
func (m *Module) flush(ctx context.Context) {
	m.pendingMu.Lock()
	batch := m.pending
	m.pending = map[string]*pendingStatus{}
	m.pendingMu.Unlock()
	for _, p := range batch {
		st := deviceStatus{State: p.state, LastOnlineTime: p.lastOnlineTime, Condition: p.condition}
		for _, t := range p.twins {
			st.Twins = append(st.Twins, *t)
		}
		msg := message.New(Name, "twin", message.OpUpdate, p.ns+"/devicestatus/"+p.name)
		msg, err := msg.WithContent(st)
		if err == nil {
			err = m.host.Send(ctx, m.MetaManager, msg)
		}
		if err != nil {
			m.metrics.dropped.WithLabelValues("metamanager").Inc()
			m.log.Warn("device status not sent upstream", "device", p.ns+"/"+p.name, "err", err)
			continue
		}
		m.metrics.upstream.Inc()
	}
}

// pend records what goes upstream at the next flush.
func (m *Module) pend(ns, name string, fn func(p *pendingStatus)) {
	m.pendingMu.Lock()
	defer m.pendingMu.Unlock()
	fn(m.pendingLocked(ns, name))
}

// pendingLocked returns the device's pending status, creating it (pendingMu held).
func (m *Module) pendingLocked(ns, name string) *pendingStatus {
	k := ns + "/" + name
	p := m.pending[k]
	if p == nil {
		p = &pendingStatus{ns: ns, name: name, twins: map[string]*statusTwin{}}
		m.pending[k] = p
		select {
		case m.pendKick <- struct{}{}:
		default: // the flusher is already told
		}
	}
	return p
}

func (p *pendingStatus) twin(prop string) *statusTwin {
	t := p.twins[prop]
	if t == nil {
		t = &statusTwin{PropertyName: prop}
		p.twins[prop] = t
	}
	return t
}

// publish sends a payload to MQTT through eventbus.
func (m *Module) publish(ctx context.Context, topic string, v any) {
	if msg, ok := m.build(topic, v); ok {
		m.send(ctx, msg)
	}
}

// build encodes a publication now (so it holds no reference to state Handle changes later).
func (m *Module) build(topic string, v any) (sdk.Message, bool) {
	msg, err := message.New(Name, "twin", message.OpPublish, topic).WithContent(v)
	if err != nil {
		m.metrics.dropped.WithLabelValues("eventbus").Inc()
		m.log.Error("not published: payload does not encode", "topic", topic, "err", err)
		return msg, false
	}
	return msg, true
}

// send hands a built publication to eventbus.
func (m *Module) send(ctx context.Context, msg sdk.Message) {
	if err := m.host.Send(ctx, m.EventBus, msg); err != nil {
		m.metrics.dropped.WithLabelValues("eventbus").Inc()
		m.log.Warn("not published", "topic", msg.Route.Resource, "err", err)
	}
}

func nowMS() int64 { return time.Now().UnixMilli() }

func msString(ms int64) string { return strconv.FormatInt(ms, 10) }
