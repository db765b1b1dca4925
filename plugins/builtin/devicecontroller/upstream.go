package devicecontroller

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	"github.com/kedge-io/kedge/sdk/kube/controller"
	"github.com/kedge-io/kedge/sdk/message"
)

// DeviceStatusReport is the content of a devicestatus update from the edge: the twins that changed,
// and the device's state and last online time when known. Omitted fields are left as they are.
type DeviceStatusReport struct {
	Twins          []v1beta1.Twin `json:"twins,omitempty"`
	State          string         `json:"state,omitempty"`
	LastOnlineTime string         `json:"lastOnlineTime,omitempty"`
	// Condition is the device's Healthy condition as the edge decided it (a Kedge addition: sent by
	// Kedge's devicetwin when it changes; KubeEdge's edgecore sends none): set in Device.status.conditions.
	Condition *ReportCondition `json:"condition,omitempty"`
}

// ReportCondition is a condition the edge reports; devicecontroller sets its lastTransitionTime.
type ReportCondition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// reasonPattern is metav1.Condition's reason rule (the CRD refuses others).
var reasonPattern = regexp.MustCompile(`^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`)

// maxConditionMessage bounds a condition message (metav1.Condition allows 32768).
const maxConditionMessage = 4096

// MetaTimestamp is the twin metadata key holding milliseconds since the epoch, as a decimal string.
const MetaTimestamp = "timestamp"

// errForbidden and errInvalid sort a failed report (controller.Outcome).
var (
	errForbidden = controller.ErrForbidden
	errInvalid   = controller.ErrInvalid
)

// conflictRetries bounds the re-reads after a Device changed between read and status write.
const conflictRetries = 8

func (m *Module) handleUp(ctx context.Context, node string, msg sdk.Message) {
	res, err := message.ParseCloud(msg.Route.Resource)
	result := "ok"
	if err == nil {
		result, err = m.fromEdge(ctx, node, res, msg)
	}
	if err != nil {
		result = controller.Outcome(m.host.Logger(), node, msg, err)
	}
	if result == "forbidden" {
		m.metrics.denied.WithLabelValues(res.Type, msg.Route.Operation).Inc()
	}
	m.metrics.upstream.WithLabelValues(res.Type, result).Inc()
	controller.Answer(ctx, m.host, Name, node, msg, "OK", err, func(reply *sdk.Message) {
		if isKubeEdgeReport(res.Type) {
			reply.Route.Resource = kubeEdgeAnswerResource // KubeEdge's cloud answers on resource "twin"
		}
	})
}

// fromEdge handles one report of an edge node and returns its result label.
func (m *Module) fromEdge(ctx context.Context, node string, res message.Resource, msg sdk.Message) (string, error) {
	op := msg.Route.Operation
	if isKubeEdgeReport(res.Type) {
		return m.fromKubeEdge(ctx, node, res, msg)
	}
	if res.Type == TypeDeviceStatus && (op == message.OpUpdate || op == message.OpInsert || op == message.OpPatch) {
		if res.Name == "" {
			return "", fmt.Errorf("%w: devicestatus needs a device name (<namespace>/devicestatus/<name>)", errInvalid)
		}
		return m.deviceStatus(ctx, node, res, msg.Content)
	}
	return "", fmt.Errorf("%w: %s of %s from an edge node is not something the device controller handles (it takes update of devicestatus)", errInvalid, op, res.Type)
}

// boundDevice returns the device res names if it is bound to node.
func (m *Module) boundDevice(ctx context.Context, node string, res message.Resource) (*v1beta1.Device, error) {
	dev := m.device(res.Namespace, res.Name)
	if dev == nil { // the informer may lag behind a device just created: ask the API
		got, err := m.get(ctx, res.Namespace, res.Name)
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%w: no device %s/%s", errInvalid, res.Namespace, res.Name)
		}
		if err != nil {
			return nil, err
		}
		dev = got
	}
	if dev.Spec.NodeName != node {
		return nil, fmt.Errorf("%w: device %s/%s is not bound to node %s", errForbidden, res.Namespace, res.Name, node)
	}
	return dev, nil
}

func (m *Module) get(ctx context.Context, ns, name string) (*v1beta1.Device, error) {
	dev := &v1beta1.Device{}
	err := m.rest.Get().Namespace(ns).Resource(v1beta1.ResourceDevices).Name(name).Do(ctx).Into(dev)
	return dev, err
}

// decodeReport decodes and checks a report against the device: well-formed JSON of the right shape,
// something to report, known properties, numeric timestamps, an RFC 3339 lastOnlineTime.
func decodeReport(raw []byte, dev *v1beta1.Device) (DeviceStatusReport, error) {
	var rep DeviceStatusReport
	if len(bytes.TrimSpace(raw)) == 0 {
		return rep, fmt.Errorf("%w: empty content: want {\"twins\": [...], \"state\": ..., \"lastOnlineTime\": ...}", errInvalid)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&rep); err != nil {
		return rep, fmt.Errorf("%w: content is not a device status report: %v", errInvalid, err)
	}
	if len(rep.Twins) == 0 && rep.State == "" && rep.LastOnlineTime == "" && rep.Condition == nil {
		return rep, fmt.Errorf("%w: the report carries no twins, state, lastOnlineTime or condition", errInvalid)
	}
	if c := rep.Condition; c != nil {
		switch {
		case c.Type != v1beta1.ConditionHealthy:
			return rep, fmt.Errorf("%w: condition.type %q: the edge reports only %q", errInvalid, c.Type, v1beta1.ConditionHealthy)
		case c.Status != string(metav1.ConditionTrue) && c.Status != string(metav1.ConditionFalse) && c.Status != string(metav1.ConditionUnknown):
			return rep, fmt.Errorf("%w: condition.status %q is not True, False or Unknown", errInvalid, c.Status)
		case !reasonPattern.MatchString(c.Reason) || len(c.Reason) > 1024:
			return rep, fmt.Errorf("%w: condition.reason %q is not a CamelCase word (%s)", errInvalid, c.Reason, reasonPattern)
		}
		if len(c.Message) > maxConditionMessage {
			c.Message = c.Message[:maxConditionMessage-3] + "..."
		}
	}
	known := map[string]bool{}
	for _, p := range dev.Spec.Properties {
		known[p.Name] = true
	}
	seen := map[string]bool{}
	for i, t := range rep.Twins {
		switch {
		case t.PropertyName == "":
			return rep, fmt.Errorf("%w: twins[%d].propertyName is empty", errInvalid, i)
		case !known[t.PropertyName]:
			return rep, fmt.Errorf("%w: twins[%d]: device %s/%s has no property %q", errInvalid, i, dev.Namespace, dev.Name, t.PropertyName)
		case seen[t.PropertyName]:
			return rep, fmt.Errorf("%w: twins[%d]: property %q reported twice", errInvalid, i, t.PropertyName)
		}
		seen[t.PropertyName] = true
		for what, tp := range map[string]v1beta1.TwinProperty{"reported": t.Reported, "observedDesired": t.ObservedDesired} {
			if s, ok := tp.Metadata[MetaTimestamp]; ok {
				if _, err := strconv.ParseInt(s, 10, 64); err != nil {
					return rep, fmt.Errorf("%w: twins[%d].%s.metadata.timestamp %q is not milliseconds since the epoch", errInvalid, i, what, s)
				}
			}
		}
	}
	if rep.LastOnlineTime != "" {
		if _, err := parseOnline(rep.LastOnlineTime); err != nil {
			return rep, fmt.Errorf("%w: lastOnlineTime %q is neither KubeEdge's \"2006-01-02 15:04:05\" nor RFC 3339", errInvalid, rep.LastOnlineTime)
		}
	}
	return rep, nil
}

// deviceStatus merges a report into the Device status and writes it, guarded by resourceVersion
// (re-read and re-merged on conflict). Returns "unchanged" when the status already held it all.
func (m *Module) deviceStatus(ctx context.Context, node string, res message.Resource, raw []byte) (string, error) {
	dev, err := m.boundDevice(ctx, node, res)
	if err != nil {
		return "", err
	}
	rep, err := decodeReport(raw, dev)
	if err != nil {
		return "", fmt.Errorf("status of device %s/%s: %w", res.Namespace, res.Name, err)
	}
	if c := rep.Condition; c != nil {
		m.metrics.conditions.WithLabelValues(c.Status, c.Reason).Inc()
		if c.Status == string(metav1.ConditionFalse) {
			defer func() { m.warn(ctx, dev, c.Reason, c.Message) }()
		}
	}
	for attempt := 0; ; attempt++ {
		status, changed, older := merge(dev.Status, rep)
		if !changed {
			m.metrics.olderTwins.Add(float64(older))
			m.mirror(ctx, dev, status)
			return "unchanged", nil
		}
		patch, err := json.Marshal(map[string]any{
			"metadata": map[string]any{"uid": dev.UID, "resourceVersion": dev.ResourceVersion},
			"status":   status,
		})
		if err != nil {
			return "", err
		}
		err = m.rest.Patch(types.MergePatchType).Namespace(res.Namespace).Resource(v1beta1.ResourceDevices).Name(res.Name).
			SubResource("status").Param("fieldManager", "kedge-devicecontroller").Body(patch).Do(ctx).Error()
		if err == nil {
			m.metrics.olderTwins.Add(float64(older))
			m.mirror(ctx, dev, status)
			return "ok", nil
		}
		if !apierrors.IsConflict(err) || attempt >= conflictRetries {
			return "", fmt.Errorf("status of device %s/%s: %w", res.Namespace, res.Name, err)
		}
		m.metrics.conflicts.Inc()
		if dev, err = m.get(ctx, res.Namespace, res.Name); err != nil {
			return "", fmt.Errorf("status of device %s/%s: %w", res.Namespace, res.Name, err)
		}
		if dev.Spec.NodeName != node {
			return "", fmt.Errorf("%w: device %s/%s is not bound to node %s", errForbidden, res.Namespace, res.Name, node)
		}
	}
}

// merge applies rep to cur: twins by propertyName, a reported (or observedDesired) value replacing
// the held one unless the held one has a newer metadata.timestamp; state when given; lastOnlineTime
// unless the held one is later. It returns the new status, whether anything changed, and how many
// values were older than what the status holds.
func merge(cur v1beta1.DeviceInstanceStatus, rep DeviceStatusReport) (v1beta1.DeviceInstanceStatus, bool, int) {
	out := *cur.DeepCopy()
	changed, older := false, 0
	idx := map[string]int{}
	for i, t := range out.Twins {
		idx[t.PropertyName] = i
	}
	take := func(held *v1beta1.TwinProperty, in v1beta1.TwinProperty) {
		if in.Value == "" && len(in.Metadata) == 0 {
			return // not reported
		}
		if !newer(in, *held) {
			older++
			return
		}
		if held.Value == in.Value && maps.Equal(held.Metadata, in.Metadata) {
			return
		}
		*held = *in.DeepCopy()
		changed = true
	}
	for _, t := range rep.Twins {
		i, ok := idx[t.PropertyName]
		if !ok {
			out.Twins = append(out.Twins, v1beta1.Twin{PropertyName: t.PropertyName})
			i = len(out.Twins) - 1
			idx[t.PropertyName] = i
		}
		take(&out.Twins[i].Reported, t.Reported)
		take(&out.Twins[i].ObservedDesired, t.ObservedDesired)
	}
	if rep.State != "" && rep.State != out.State {
		out.State, changed = rep.State, true
	}
	if c := rep.Condition; c != nil {
		if meta.SetStatusCondition(&out.Conditions, metav1.Condition{Type: c.Type, Status: metav1.ConditionStatus(c.Status),
			Reason: c.Reason, Message: c.Message, LastTransitionTime: metav1.Now()}) {
			changed = true
		}
	}
	if rep.LastOnlineTime != "" && rep.LastOnlineTime != out.LastOnlineTime {
		in, _ := parseOnline(rep.LastOnlineTime)
		held, err := parseOnline(out.LastOnlineTime)
		if err != nil || !in.Before(held) {
			out.LastOnlineTime, changed = rep.LastOnlineTime, true
		}
	}
	return out, changed, older
}

// newer reports whether in may replace held: held has no timestamp, in has none (its arrival order
// is all there is), or in's is not older.
func newer(in, held v1beta1.TwinProperty) bool {
	hs, ok := held.Metadata[MetaTimestamp]
	if !ok {
		return true
	}
	is, ok := in.Metadata[MetaTimestamp]
	if !ok {
		return true
	}
	h, err1 := strconv.ParseInt(hs, 10, 64)
	i, err2 := strconv.ParseInt(is, 10, 64)
	if err1 != nil || err2 != nil {
		return true
	}
	return i >= h
}

// mirror writes the DeviceStatus object after Device.status was written; a failure is logged (the
// report itself succeeded) and the next report or sync of the Device writes it again.
func (m *Module) mirror(ctx context.Context, dev *v1beta1.Device, st v1beta1.DeviceInstanceStatus) {
	if err := m.mirrorStatus(ctx, dev, st); err != nil {
		m.host.Logger().Warn("DeviceStatus object not updated (Device.status is); retried at the next report or sync", "device", dev.Namespace+"/"+dev.Name, "err", err)
	}
}

// parseOnline reads a lastOnlineTime as KubeEdge v1.23.1's devicetwin writes it (RFC 3339, UTC; so
// does Kedge's) or as "2006-01-02 15:04:05" (what an earlier Kedge wrote; the edge's local
// time, read here as UTC: reports of one device compare consistently).
func parseOnline(s string) (time.Time, error) {
	if t, err := time.Parse("2006-01-02 15:04:05", s); err == nil {
		return t, nil
	}
	return time.Parse(time.RFC3339, s)
}
