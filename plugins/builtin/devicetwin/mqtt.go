package devicetwin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/kedge-io/kedge/sdk"
	devicesv1beta1 "github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
)

// requestError is a refused request: its code (HTTP-like, as KubeEdge's results carry) and reason.
type requestError struct {
	code   int
	reason string
}

func (e *requestError) Error() string { return e.reason }

func refuse(code int, format string, args ...any) *requestError {
	return &requestError{code: code, reason: fmt.Sprintf(format, args...)}
}

// rawMarker is how eventbus marks a payload that was not JSON.
const rawMarker = "mqtt/raw"

// handleMQTT dispatches a message eventbus received on a device topic.
func (m *Module) handleMQTT(ctx context.Context, msg sdk.Message) {
	topic := msg.Route.Resource
	req, perr := parseTopic(topic) // topic.go
	if errors.Is(perr, errNotRequest) {
		// Results, deltas, documents, membership/updated: what devicetwin itself publishes.
		m.metrics.requests.WithLabelValues("other", "ignored").Inc()
		return
	}
	var handle func(ctx context.Context, req deviceRequest, payload []byte) (any, *requestError)
	switch req.kind {
	case kindTwinUpdate:
		handle = m.twinUpdate
	case kindTwinGet:
		handle = m.twinGet
	case kindStateUpdate:
		handle = m.stateUpdate
	case kindMembershipGet:
		handle = m.membershipGet
	case kindDataUpdate:
		handle = m.dataUpdate
	}
	kind, resultTopic := req.kind, req.result
	if perr != nil {
		kind, resultTopic = "bad_topic", topic+"/result"
		m.log.Warn("MQTT request on a malformed topic refused", "topic", topic, "err", perr)
	}
	var base baseMessage
	var rerr *requestError
	var out any
	payload := []byte(msg.Content)
	switch {
	case perr != nil:
		_ = json.Unmarshal(payload, &base)
		rerr = refuse(http.StatusBadRequest, "%v", perr)
	case strings.HasPrefix(msg.Header.Type, rawMarker):
		var s string
		_ = json.Unmarshal(msg.Content, &s)
		rerr = refuse(http.StatusBadRequest, "malformed JSON on %s: the payload is not a JSON document (starts %q)", topic, preview(s))
	case len(payload) == 0:
		rerr = refuse(http.StatusBadRequest, "empty payload on %s: want a JSON document", topic)
	default:
		if err := json.Unmarshal(payload, &base); err != nil {
			rerr = refuse(http.StatusBadRequest, "malformed payload on %s: %v", topic, err)
		} else {
			out, rerr = handle(ctx, req, payload)
		}
	}
	// Every answer goes through the commit queue, so answers keep the order of the requests and an
	// answer to a write (and the reply to a sync request) comes after the write is on disk.
	w, _ := out.(*write)
	if w == nil {
		w = &write{}
	}
	w.kind, w.topic, w.event = kind, resultTopic, base.EventID
	if msg.Header.Sync && !msg.IsReply() {
		req := msg
		w.reply = &req
	}
	switch {
	case rerr != nil:
		m.log.Debug("MQTT request refused", "topic", topic, "code", rerr.code, "reason", rerr.reason)
		*w = write{kind: w.kind, topic: w.topic, event: w.event, reply: w.reply, failed: rerr}
		if r, ok := m.build(resultTopic, errorResult{baseMessage: baseMessage{EventID: base.EventID, Timestamp: nowMS()},
			Code: rerr.code, Reason: rerr.reason}); ok {
			w.result = &r
		}
	case out == nil:
	default:
		res := out
		if w == out {
			res = w.answer
		}
		if res != nil {
			if r, ok := m.build(resultTopic, res); ok {
				w.result = &r
			}
		}
	}
	m.enqueue(w)
}

func preview(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// lookup finds the device a request names. The namespaced form ($hw/events/device/<ns>/<name>/...,
// KubeEdge v1.23's) names it exactly; the short form ($hw/events/device/<name>/...) by its name,
// which must then be unique on the node: a name held in two namespaces is refused as ambiguous.
func (m *Module) lookup(req deviceRequest) (ns string, d *devicesv1beta1.Device, rerr *requestError) {
	if req.namespace != "" {
		if d := m.devices[req.namespace+"/"+req.name]; d != nil {
			return req.namespace, d, nil
		}
		return "", nil, refuse(http.StatusNotFound, "device %q is not on this node", req.id())
	}
	id := req.name
	nss := m.byName[id]
	switch len(nss) {
	case 0:
		return "", nil, refuse(http.StatusNotFound, "device %q is not on this node", id)
	case 1:
		return nss[0], m.devices[nss[0]+"/"+id], nil
	default:
		return "", nil, refuse(http.StatusConflict, "device name %q is ambiguous on this node: it is in namespaces %s (use $hw/events/device/<namespace>/%s/...)", id, strings.Join(nss, ", "), id)
	}
}

// twinUpdate validates, stores and answers $hw/events/device/<id>/twin/update.
func (m *Module) twinUpdate(ctx context.Context, rq deviceRequest, payload []byte) (any, *requestError) {
	id := rq.name
	var req twinUpdate
	if err := json.Unmarshal(payload, &req); err != nil {
		return nil, refuse(http.StatusBadRequest, "malformed twin update for device %q: %v", id, err)
	}
	ns, dev, rerr := m.lookup(rq)
	if rerr != nil {
		return nil, rerr
	}
	if len(req.Twin) == 0 {
		return nil, refuse(http.StatusBadRequest, "twin update for device %q names no property (want {\"twin\": {\"<property>\": {\"actual\": {\"value\": \"...\"}}}})", id)
	}
	model, modelName := m.modelOf(ns, dev)
	if model == nil {
		return nil, refuse(http.StatusConflict, "device %q: its model %q is not on this node yet; values cannot be checked", id, modelName)
	}
	k := ns + "/" + id
	now := nowMS()
	type change struct {
		prop                   string
		old, cur               *msgTwin
		actualSet, expectedSet bool
	}
	props := make([]string, 0, len(req.Twin))
	for p := range req.Twin {
		props = append(props, p)
	}
	slices.Sort(props) // the first error found does not depend on map order
	changes := make([]change, 0, len(props))
	for _, p := range props {
		in := req.Twin[p]
		if in == nil || (in.Expected == nil && in.Actual == nil) {
			return nil, refuse(http.StatusBadRequest, "device %q property %q: neither an expected nor an actual value", id, p)
		}
		mp := modelProperty(model, p)
		if mp == nil {
			return nil, refuse(http.StatusBadRequest, "device %q: property %q is not in model %q", id, p, modelName)
		}
		if in.Expected != nil && mp.AccessMode == devicesv1beta1.ReadOnly {
			return nil, refuse(http.StatusForbidden, "device %q: property %q is ReadOnly; its expected value cannot be written", id, p)
		}
		old := m.twins[k][p]
		cur := old.clone()
		if cur == nil {
			cur = &msgTwin{}
		}
		cur.Metadata = &typeMetadata{Type: strings.ToLower(string(mp.Type))}
		if in.Optional != nil {
			cur.Optional = in.Optional
		}
		for _, side := range []struct {
			name   string
			in     *twinValue
			inVer  *twinVersion
			old    *twinValue
			oldVer *twinVersion
			set    func(*twinValue, *twinVersion)
		}{
			{"expected", in.Expected, in.ExpectedVersion, old.side(true), old.version(true), func(v *twinValue, ver *twinVersion) { cur.Expected, cur.ExpectedVersion = v, ver }},
			{"actual", in.Actual, in.ActualVersion, old.side(false), old.version(false), func(v *twinValue, ver *twinVersion) { cur.Actual, cur.ActualVersion = v, ver }},
		} {
			if side.in == nil {
				continue
			}
			if side.in.Value == nil {
				return nil, refuse(http.StatusBadRequest, "device %q property %q: the %s value is missing", id, p, side.name)
			}
			if err := checkValue(mp, *side.in.Value); err != nil {
				if side.name == "actual" {
					m.readingRefused(ns, id, p, err.Error())
				}
				return nil, refuse(http.StatusBadRequest, "device %q: %v", id, err)
			}
			ts := side.in.ts()
			if ts == 0 {
				ts = now
			}
			if side.old != nil && ts < side.old.ts() {
				return nil, refuse(http.StatusConflict, "device %q property %q: stale %s value ignored: its timestamp %d is older than the stored %d",
					id, p, side.name, ts, side.old.ts())
			}
			ver := twinVersion{}
			if side.oldVer != nil {
				ver = *side.oldVer
			}
			if side.inVer != nil {
				if side.oldVer != nil && (side.inVer.Edge < side.oldVer.Edge || side.inVer.Cloud < side.oldVer.Cloud) {
					return nil, refuse(http.StatusConflict, "device %q property %q: stale %s value ignored: version {cloud %d, edge %d} is older than the stored {cloud %d, edge %d}",
						id, p, side.name, side.inVer.Cloud, side.inVer.Edge, side.oldVer.Cloud, side.oldVer.Edge)
				}
				ver = *side.inVer
			} else {
				ver.Edge++
			}
			v := *side.in.Value
			side.set(&twinValue{Value: &v, Metadata: &valueMetadata{Timestamp: ts}}, &ver)
		}
		changes = append(changes, change{prop: p, old: old, cur: cur, actualSet: in.Actual != nil, expectedSet: in.Expected != nil})
	}

	w := &write{objs: make([]sdk.Object, 0, len(changes)), values: len(changes)}
	for _, c := range changes {
		raw, err := json.Marshal(c.cur)
		if err != nil {
			return nil, refuse(http.StatusInternalServerError, "device %q: encode twin %q: %v", id, c.prop, err)
		}
		w.objs = append(w.objs, sdk.Object{Key: sdk.Key{Type: typeTwin, Namespace: ns, Name: id + "/" + c.prop}, Value: raw})
	}
	// The memory changes now (the next request is checked against it); the store, the answers and the
	// upstream batch follow the group commit.
	if m.twins[k] == nil {
		m.twins[k] = map[string]*msgTwin{}
	}
	result := twinResult{baseMessage: baseMessage{EventID: req.EventID, Timestamp: now}, Twin: map[string]*msgTwin{}}
	doc := twinDocument{baseMessage: baseMessage{EventID: req.EventID, Timestamp: now}, Twin: map[string]*twinDoc{}}
	for _, c := range changes {
		m.twins[k][c.prop] = c.cur
		result.Twin[c.prop] = updateResultTwin(c.cur, c.expectedSet, c.actualSet) // wire.go: KubeEdge's shapes
		doc.Twin[c.prop] = &twinDoc{Last: noVersions(c.old), Current: noVersions(c.cur)}
	}
	w.answer = result
	w.after = func() {
		var accepted []string
		m.pend(ns, id, func(ps *pendingStatus) {
			for _, c := range changes {
				if c.actualSet {
					ps.twin(c.prop).Reported = m.withReadErrorLocked(k, c.prop, reportedOf(c.cur)) // propfail.go
					accepted = append(accepted, c.prop)
				}
			}
		})
		m.readingAccepted(ns, id, accepted)
	}
	if d, ok := m.build(rq.base+"/twin/update/document", doc); ok {
		w.msgs = append(w.msgs, d)
	}
	if d, ok := m.delta(ns, id, rq.base); ok {
		w.msgs = append(w.msgs, d)
	}
	return w, nil
}

func (t *msgTwin) side(expected bool) *twinValue {
	if t == nil {
		return nil
	}
	if expected {
		return t.Expected
	}
	return t.Actual
}

func (t *msgTwin) version(expected bool) *twinVersion {
	if t == nil {
		return nil
	}
	if expected {
		return t.ExpectedVersion
	}
	return t.ActualVersion
}

// twinGet answers $hw/events/device/<id>/twin/get with every twin of the device (model properties
// without a value yet show their type only).
func (m *Module) twinGet(_ context.Context, rq deviceRequest, payload []byte) (any, *requestError) {
	id := rq.name
	var base baseMessage
	_ = json.Unmarshal(payload, &base)
	ns, dev, rerr := m.lookup(rq)
	if rerr != nil {
		return nil, rerr
	}
	twins := map[string]*msgTwin{}
	if model, _ := m.modelOf(ns, dev); model != nil {
		for _, p := range model.Spec.Properties {
			twins[p.Name] = &msgTwin{Metadata: &typeMetadata{Type: strings.ToLower(string(p.Type))}}
		}
	}
	for p, t := range m.twins[ns+"/"+id] {
		twins[p] = noVersions(t) // wire.go
	}
	return twinResult{baseMessage: baseMessage{EventID: base.EventID, Timestamp: nowMS()}, Twin: twins}, nil
}

// membershipGet answers $hw/events/node/<node>/membership/get with the node's devices.
func (m *Module) membershipGet(_ context.Context, rq deviceRequest, payload []byte) (any, *requestError) {
	node := rq.name
	var base baseMessage
	_ = json.Unmarshal(payload, &base)
	if node != m.host.NodeName() {
		return nil, refuse(http.StatusNotFound, "node %q: this is node %q", node, m.host.NodeName())
	}
	out := membershipGetResult{baseMessage: baseMessage{EventID: base.EventID, Timestamp: nowMS()}, Devices: []memberDevice{}}
	if refs, ok := m.membership[node]; ok {
		for _, r := range refs {
			out.Devices = append(out.Devices, m.describe(r.Namespace, r.Name))
		}
	} else { // no membership received yet: the devices the cloud sent here
		keys := make([]string, 0, len(m.devices))
		for k := range m.devices {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			ns, name, _ := strings.Cut(k, "/")
			out.Devices = append(out.Devices, m.describe(ns, name))
		}
	}
	return out, nil
}

// Device states a mapper may report.
var validStates = []string{"online", "offline", "unknown"}

// stateAliases are the states KubeEdge's mapper framework reports, taken as their meaning here.
var stateAliases = map[string]string{"ok": "online", "disconnected": "offline", "unhealthy": "unknown"}

// stateUpdate stores $hw/events/device/<id>/state/update and sends it upstream.
func (m *Module) stateUpdate(ctx context.Context, rq deviceRequest, payload []byte) (any, *requestError) {
	id := rq.name
	var req stateUpdate
	if err := json.Unmarshal(payload, &req); err != nil {
		return nil, refuse(http.StatusBadRequest, "malformed state update for device %q: %v", id, err)
	}
	ns, _, rerr := m.lookup(rq)
	if rerr != nil {
		return nil, rerr
	}
	state := strings.ToLower(strings.TrimSpace(req.State))
	if alias, ok := stateAliases[state]; ok {
		state = alias
	}
	if !slices.Contains(validStates, state) {
		return nil, refuse(http.StatusBadRequest, "device %q: state %q is not one of %s", id, req.State, strings.Join(validStates, ", "))
	}
	k := ns + "/" + id
	s := m.states[k]
	s.State = state
	if state == "online" {
		s.LastOnlineTime = time.Now().UTC().Format(LastOnlineLayout)
	}
	raw, _ := json.Marshal(s)
	m.states[k] = s
	w := &write{objs: []sdk.Object{{Key: sdk.Key{Type: typeDeviceState, Namespace: ns, Name: id}, Value: raw}}}
	w.answer = stateResult{baseMessage: baseMessage{EventID: req.EventID, Timestamp: nowMS()},
		Device: stateDevice{Name: id, Namespace: ns, State: s.State, LastOnlineTime: s.LastOnlineTime}} // KubeEdge's: name, state, lastOnlineTime
	var held map[string]*statusProperty // the device's reported values, read here (Handle owns the twins)
	if req.PropertyErrors != nil {
		held = m.heldReported(k)
	}
	w.after = func() {
		m.pend(ns, id, func(ps *pendingStatus) {
			ps.state = s.State
			if state == "online" {
				ps.lastOnlineTime = s.LastOnlineTime
			}
		})
		m.stateChanged(ns, id, state, req.OfflineReason)
		if req.PropertyErrors != nil {
			m.propertyErrors(ns, id, *req.PropertyErrors, held) // propfail.go
		}
	}
	return w, nil
}

// dataUpdate takes $ke/events/device/<id>/data/update: values of properties with reportToCloud go
// upstream as reported values (not stored as twins); others are ignored. Errors are published on
// .../data/update/result (a Kedge addition: KubeEdge has no result topic here).
func (m *Module) dataUpdate(_ context.Context, rq deviceRequest, payload []byte) (any, *requestError) {
	id := rq.name
	var req dataUpdate
	if err := json.Unmarshal(payload, &req); err != nil {
		return nil, refuse(http.StatusBadRequest, "malformed data update for device %q: %v", id, err)
	}
	ns, dev, rerr := m.lookup(rq)
	if rerr != nil {
		return nil, rerr
	}
	model, modelName := m.modelOf(ns, dev)
	report := map[string]bool{}
	for _, p := range dev.Spec.Properties {
		report[p.Name] = p.ReportToCloud
	}
	type item struct {
		prop, value, typ string
		ts               int64
	}
	var items []item
	props := make([]string, 0, len(req.Data))
	for p := range req.Data {
		props = append(props, p)
	}
	slices.Sort(props)
	for _, p := range props {
		v := req.Data[p]
		if !report[p] {
			continue
		}
		if v == nil || v.Value == nil {
			return nil, refuse(http.StatusBadRequest, "device %q property %q: no value", id, p)
		}
		mp := modelProperty(model, p)
		if mp == nil {
			return nil, refuse(http.StatusBadRequest, "device %q: property %q is not in model %q", id, p, modelName)
		}
		if err := checkValue(mp, *v.Value); err != nil {
			m.readingRefused(ns, id, p, err.Error())
			return nil, refuse(http.StatusBadRequest, "device %q: %v", id, err)
		}
		ts := v.ts()
		if ts == 0 {
			ts = nowMS()
		}
		items = append(items, item{p, *v.Value, string(mp.Type), ts})
	}
	if len(items) > 0 {
		accepted := make([]string, 0, len(items))
		m.pend(ns, id, func(ps *pendingStatus) {
			for _, it := range items {
				ps.twin(it.prop).Reported = &statusProperty{Value: it.value, Metadata: map[string]string{"timestamp": msString(it.ts), "type": it.typ}}
				accepted = append(accepted, it.prop)
			}
		})
		m.readingAccepted(ns, id, accepted)
	}
	return nil, nil // no answer on success
}
