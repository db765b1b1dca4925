package devicecontroller

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	"github.com/kedge-io/kedge/sdk/message"
)

// KubeEdge's edgecore (v1.23) on Kedge's cloud. Observed between upstream cloudcore and edgecore
// (testdata/kubeedge-v1.23.1-device-flow.json): Devices and DeviceModels go to the edge exactly as
// Kedge sends them (group resource, <ns>/device/<name> insert/update/delete, the object as content,
// its resourceVersion in the header); the membership is KubeEdge's own update and the edge's
// devicetwin reports in its own paths, which cloudhub renames for this module (cloudhub
// kubeedge_devices.go):
const (
	// TypeKubeEdgeMembershipDetail: default/membership_detail/<node>, KubeEdge's membership/detail
	// get (its devicetwin at start). KubeEdge's cloud leaves it unanswered; Kedge acknowledges it
	// and sends the node's whole membership again.
	TypeKubeEdgeMembershipDetail = "membership_detail"
	// TypeKubeEdgeTwinEdgeUpdated: <ns>/twin_edge_updated/<name>, KubeEdge's
	// device/<ns>/<name>/twin/edge_updated (content DeviceTwinUpdate); answered "OK" on resource twin.
	TypeKubeEdgeTwinEdgeUpdated = "twin_edge_updated"
	// TypeKubeEdgeStateUpdate: <ns>/state_update/<name>, KubeEdge's device/<ns>/<name>/state/update.
	TypeKubeEdgeStateUpdate = "state_update"
	// kubeEdgeMembershipResource is where KubeEdge's membership update goes: its edge resource is
	// "membership" (cloudhub passes node/<node>/membership through for it).
	kubeEdgeMembershipResource = "membership"
	// kubeEdgeAnswerResource is the resource of KubeEdge's answer to a device report.
	kubeEdgeAnswerResource = "twin"
)

// KubeEdgeMembershipUpdate is KubeEdge's membership update to an edge (group twin, operation update,
// resource membership): the devices added to and removed from the node since the last one.
type KubeEdgeMembershipUpdate struct {
	EventID        string           `json:"event_id"`
	Timestamp      int64            `json:"timestamp"`
	AddDevices     []KubeEdgeDevice `json:"added_devices"`
	RemovedDevices []KubeEdgeDevice `json:"removed_devices"`
}

// KubeEdgeDevice names a device in a membership update: id is <namespace>/<name> (also the device
// ID on the edge's MQTT topics in v1.23), name the Device's name.
type KubeEdgeDevice struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// KubeEdgeTwinUpdate is the content of KubeEdge's twin/edge_updated (and of its MQTT twin/update).
type KubeEdgeTwinUpdate struct {
	EventID   string                   `json:"event_id"`
	Timestamp int64                    `json:"timestamp"`
	Twin      map[string]*KubeEdgeTwin `json:"twin"`
}

// KubeEdgeTwin is one property's twin in KubeEdge's messages.
type KubeEdgeTwin struct {
	Expected        *KubeEdgeTwinValue   `json:"expected,omitempty"`
	Actual          *KubeEdgeTwinValue   `json:"actual,omitempty"`
	Optional        *bool                `json:"optional,omitempty"`
	Metadata        *KubeEdgeTypeMeta    `json:"metadata,omitempty"`
	ExpectedVersion *KubeEdgeTwinVersion `json:"expected_version,omitempty"`
	ActualVersion   *KubeEdgeTwinVersion `json:"actual_version,omitempty"`
}

// KubeEdgeTwinValue is a twin value with its time (milliseconds).
type KubeEdgeTwinValue struct {
	Value    *string `json:"value,omitempty"`
	Metadata *struct {
		Timestamp int64 `json:"timestamp,omitempty"`
	} `json:"metadata,omitempty"`
}

// KubeEdgeTypeMeta is a twin's type ("float", ...).
type KubeEdgeTypeMeta struct {
	Type string `json:"type,omitempty"`
}

// KubeEdgeTwinVersion is a twin value's version counters.
type KubeEdgeTwinVersion struct {
	CloudVersion int64 `json:"cloud"`
	EdgeVersion  int64 `json:"edge"`
}

// KubeEdgeStateUpdate is the content of KubeEdge's state/update: the device's state and last online
// time (RFC 3339 on this path, observed).
type KubeEdgeStateUpdate struct {
	EventID   string `json:"event_id"`
	Timestamp int64  `json:"timestamp"`
	Device    struct {
		Name           string `json:"name"`
		State          string `json:"state"`
		LastOnlineTime string `json:"lastOnlineTime"`
	} `json:"device"`
}

// decodeKubeEdgeJSON decodes content strictly enough to name what is wrong.
func decodeKubeEdgeJSON(raw []byte, what string, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		return fmt.Errorf("%w: empty content: want KubeEdge's %s", errInvalid, what)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: content is not KubeEdge's %s: %v", errInvalid, what, err)
	}
	return nil
}

// ReportFromKubeEdgeTwin turns KubeEdge's twin/edge_updated content into a device status report:
// actual values become reported, expected values observedDesired, each with its timestamp and the
// twin's type in metadata (what KubeEdge's cloud writes). Properties dev does not have are dropped
// and returned (KubeEdge's cloud ignores them too).
func ReportFromKubeEdgeTwin(raw []byte, dev *v1beta1.Device) (DeviceStatusReport, []string, error) {
	var up KubeEdgeTwinUpdate
	if err := decodeKubeEdgeJSON(raw, "twin update {event_id, timestamp, twin: {<property>: {actual, expected, metadata}}}", &up); err != nil {
		return DeviceStatusReport{}, nil, err
	}
	if len(up.Twin) == 0 {
		return DeviceStatusReport{}, nil, fmt.Errorf("%w: KubeEdge twin update without twins", errInvalid)
	}
	known := map[string]bool{}
	if dev != nil {
		for _, p := range dev.Spec.Properties {
			known[p.Name] = true
		}
	}
	var rep DeviceStatusReport
	var dropped []string
	for _, name := range sortedKeys(up.Twin) {
		t := up.Twin[name]
		if t == nil {
			return rep, nil, fmt.Errorf("%w: twin %q is null", errInvalid, name)
		}
		if dev != nil && !known[name] {
			dropped = append(dropped, name)
			continue
		}
		conv := func(v *KubeEdgeTwinValue) v1beta1.TwinProperty {
			if v == nil || v.Value == nil {
				return v1beta1.TwinProperty{}
			}
			p := v1beta1.TwinProperty{Value: *v.Value, Metadata: map[string]string{}}
			if v.Metadata != nil && v.Metadata.Timestamp != 0 {
				p.Metadata[MetaTimestamp] = strconv.FormatInt(v.Metadata.Timestamp, 10)
			}
			if t.Metadata != nil && t.Metadata.Type != "" {
				p.Metadata["type"] = t.Metadata.Type
			}
			return p
		}
		tw := v1beta1.Twin{PropertyName: name, Reported: conv(t.Actual), ObservedDesired: conv(t.Expected)}
		if tw.Reported.Value == "" && tw.ObservedDesired.Value == "" {
			continue // nothing but versions or a type
		}
		rep.Twins = append(rep.Twins, tw)
	}
	return rep, dropped, nil
}

// ReportFromKubeEdgeState turns KubeEdge's state/update content into a device status report.
func ReportFromKubeEdgeState(raw []byte) (DeviceStatusReport, error) {
	var up KubeEdgeStateUpdate
	if err := decodeKubeEdgeJSON(raw, `state update {event_id, timestamp, device: {name, state, lastOnlineTime}}`, &up); err != nil {
		return DeviceStatusReport{}, err
	}
	if up.Device.State == "" && up.Device.LastOnlineTime == "" {
		return DeviceStatusReport{}, fmt.Errorf("%w: KubeEdge state update without device.state or device.lastOnlineTime", errInvalid)
	}
	return DeviceStatusReport{State: up.Device.State, LastOnlineTime: up.Device.LastOnlineTime}, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// fromKubeEdge handles a KubeEdge devicetwin report (res.Type one of the TypeKubeEdge* types).
func (m *Module) fromKubeEdge(ctx context.Context, node string, res message.Resource, msg sdk.Message) (string, error) {
	switch res.Type {
	case TypeKubeEdgeMembershipDetail:
		m.sendMu.Lock()
		m.syncMembership(ctx, node, true)
		m.sendMu.Unlock()
		return "ok", nil
	case TypeKubeEdgeTwinEdgeUpdated:
		dev, err := m.boundDevice(ctx, node, res)
		if err != nil {
			return "", err
		}
		rep, dropped, err := ReportFromKubeEdgeTwin(msg.Content, dev)
		if err != nil {
			return "", fmt.Errorf("twin of device %s/%s: %w", res.Namespace, res.Name, err)
		}
		if len(dropped) > 0 {
			m.host.Logger().Warn("KubeEdge twin update names properties the device does not have; ignored", "node", node, "device", res.Namespace+"/"+res.Name, "properties", dropped)
		}
		if len(rep.Twins) == 0 {
			return "unchanged", nil
		}
		return m.report(ctx, node, res, rep)
	case TypeKubeEdgeStateUpdate:
		rep, err := ReportFromKubeEdgeState(msg.Content)
		if err != nil {
			return "", fmt.Errorf("state of device %s/%s: %w", res.Namespace, res.Name, err)
		}
		return m.report(ctx, node, res, rep)
	}
	return "", fmt.Errorf("%w: %s is not a KubeEdge device report", errInvalid, res.Type)
}

// report writes a converted report as a devicestatus update of Kedge's own edge would be.
func (m *Module) report(ctx context.Context, node string, res message.Resource, rep DeviceStatusReport) (string, error) {
	raw, err := json.Marshal(rep)
	if err != nil {
		return "", err
	}
	return m.deviceStatus(ctx, node, message.Resource{Node: res.Node, Namespace: res.Namespace, Type: TypeDeviceStatus, Name: res.Name}, raw)
}

func isKubeEdgeReport(typ string) bool {
	return typ == TypeKubeEdgeMembershipDetail || typ == TypeKubeEdgeTwinEdgeUpdated || typ == TypeKubeEdgeStateUpdate
}

// KubeEdgeMembershipChange is KubeEdge's membership update from prev to cur: the devices cur adds
// and those it no longer has (all of cur when prev is empty).
func KubeEdgeMembershipChange(prev, cur Membership, now time.Time) KubeEdgeMembershipUpdate {
	had := map[MemberRef]bool{}
	for _, r := range prev.Devices {
		had[r] = true
	}
	up := KubeEdgeMembershipUpdate{EventID: message.NewID(), Timestamp: now.UnixMilli()}
	for _, r := range cur.Devices {
		if !had[r] {
			up.AddDevices = append(up.AddDevices, KubeEdgeDevice{ID: r.Namespace + "/" + r.Name, Name: r.Name})
		}
		delete(had, r)
	}
	for _, r := range prev.Devices {
		if had[r] {
			up.RemovedDevices = append(up.RemovedDevices, KubeEdgeDevice{ID: r.Namespace + "/" + r.Name, Name: r.Name})
		}
	}
	return up
}

// kubeEdgeMembershipMessage is the message carrying up to node: group twin, update of membership.
func kubeEdgeMembershipMessage(node string, up KubeEdgeMembershipUpdate) (message.Message, error) {
	return message.New(Name, "twin", message.OpUpdate, "node/"+node+"/"+kubeEdgeMembershipResource).WithContent(up)
}

// sendKubeEdgeMembership sends a KubeEdge edge the devices added to and removed from its membership
// since prev (all of cur when prev is empty).
func (m *Module) sendKubeEdgeMembership(ctx context.Context, node string, prev, cur Membership) {
	up := KubeEdgeMembershipChange(prev, cur, time.Now())
	if len(up.AddDevices) == 0 && len(up.RemovedDevices) == 0 {
		return
	}
	msg, err := kubeEdgeMembershipMessage(node, up)
	if err != nil {
		m.host.Logger().Error("membership not encodable for the edge", "node", node, "err", err)
		return
	}
	if err := m.host.Send(ctx, m.HubModule, msg); err != nil {
		m.host.Logger().Warn("message for the edge not queued", "node", node, "resource", msg.Route.Resource, "err", err)
		return
	}
	m.metrics.downstream.WithLabelValues(TypeMembership, message.OpUpdate).Inc()
}
