package edgehub

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/kedge-io/kedge/sdk/message"
)

// Device reports for KubeEdge's cloudcore. Kedge's devicetwin reports a device as an update of
// <ns>/devicestatus/<name> (group twin) whose content is {"twins": [{"propertyName", "reported":
// {"value", "metadata": {"timestamp", "type"}}, "observedDesired": {...}}], "state",
// "lastOnlineTime", "condition"}. KubeEdge's cloudcore (v1.23.1, observed between its own cloudcore
// and edgecore: plugins/builtin/devicecontroller/testdata/kubeedge-v1.23.1-device-flow.json) takes
// what its devicetwin sends instead, in group resource from source twin:
//
//   - device/<ns>/<name>/twin/edge_updated, content {"event_id", "timestamp", "twin": {<property>:
//     {"actual": {"value", "metadata": {"timestamp"}}, "expected": {...}, "metadata": {"type"}}}};
//   - device/<ns>/<name>/state/update, content {"event_id", "timestamp", "device": {"name", "state",
//     "lastOnlineTime"}}.
//
// It answers each "OK" on resource twin. The Healthy condition (a Kedge addition) has no place there
// and is not sent.

// kedgeDeviceStatus is the content of devicetwin's devicestatus report (the fields KubeEdge takes).
type kedgeDeviceStatus struct {
	Twins []struct {
		PropertyName    string        `json:"propertyName"`
		Reported        *kedgeTwinVal `json:"reported,omitempty"`
		ObservedDesired *kedgeTwinVal `json:"observedDesired,omitempty"`
	} `json:"twins"`
	State          string `json:"state"`
	LastOnlineTime string `json:"lastOnlineTime"`
}

type kedgeTwinVal struct {
	Value    string            `json:"value"`
	Metadata map[string]string `json:"metadata"`
}

// keTwinUpdate is KubeEdge's twin/edge_updated content.
type keTwinUpdate struct {
	EventID   string             `json:"event_id"`
	Timestamp int64              `json:"timestamp"`
	Twin      map[string]*keTwin `json:"twin"`
}

type keTwin struct {
	Expected *keTwinValue `json:"expected,omitempty"`
	Actual   *keTwinValue `json:"actual,omitempty"`
	Optional *bool        `json:"optional,omitempty"`
	Metadata *keTypeMeta  `json:"metadata,omitempty"`
}

type keTwinValue struct {
	Value    *string      `json:"value,omitempty"`
	Metadata *keValueMeta `json:"metadata,omitempty"`
}

type keValueMeta struct {
	Timestamp int64 `json:"timestamp,omitempty"`
}

type keTypeMeta struct {
	Type string `json:"type,omitempty"`
}

// keStateUpdate is KubeEdge's state/update content.
type keStateUpdate struct {
	EventID   string `json:"event_id"`
	Timestamp int64  `json:"timestamp"`
	Device    struct {
		Name           string `json:"name"`
		State          string `json:"state"`
		LastOnlineTime string `json:"lastOnlineTime,omitempty"`
	} `json:"device"`
}

// kubeEdgeOnlineTime writes devicetwin's last online time ("2006-01-02 15:04:05", the node's local
// time) as KubeEdge's edgecore sends it on state/update: RFC 3339 in UTC (observed). Anything else is
// passed as it is.
func kubeEdgeOnlineTime(s string) string {
	if t, err := time.ParseInLocation("2006-01-02 15:04:05", s, time.Local); err == nil {
		return t.UTC().Format(time.RFC3339)
	}
	return s
}

// kubeEdgeDeviceSource is the module KubeEdge's cloud sees as the sender of device reports.
const kubeEdgeDeviceSource = "twin"

// isDeviceStatus reports whether msg is devicetwin's report of a device, and which.
func isDeviceStatus(msg message.Message) (message.Resource, bool) {
	if msg.Route.Operation != message.OpUpdate && msg.Route.Operation != message.OpInsert && msg.Route.Operation != message.OpPatch {
		return message.Resource{}, false
	}
	r, err := message.ParseEdge(msg.Route.Resource)
	return r, err == nil && r.Type == "devicestatus" && r.Name != ""
}

// kubeEdgeDeviceReports returns KubeEdge's messages for a devicestatus report: a twin/edge_updated when
// it carries twins, a state/update when it carries a state or last online time (the first keeps the
// report's ID and sync flag, so an answer reaches whoever waits for it).
func kubeEdgeDeviceReports(msg message.Message, r message.Resource, now time.Time) ([]message.Message, error) {
	var st kedgeDeviceStatus
	if err := json.Unmarshal(msg.Content, &st); err != nil {
		return nil, fmt.Errorf("device status report of %s/%s for KubeEdge's cloud: %w", r.Namespace, r.Name, err)
	}
	var out []message.Message
	prefix := "device/" + r.Namespace + "/" + r.Name
	if len(st.Twins) > 0 {
		up := keTwinUpdate{EventID: message.NewID(), Timestamp: now.UnixMilli(), Twin: map[string]*keTwin{}}
		for _, t := range st.Twins {
			if t.PropertyName == "" {
				return nil, fmt.Errorf("device status report of %s/%s for KubeEdge's cloud: a twin without propertyName", r.Namespace, r.Name)
			}
			kt := &keTwin{}
			conv := func(v *kedgeTwinVal) (*keTwinValue, error) {
				if v == nil || (v.Value == "" && len(v.Metadata) == 0) {
					return nil, nil
				}
				val := v.Value
				out := &keTwinValue{Value: &val}
				if s := v.Metadata["timestamp"]; s != "" {
					ms, err := strconv.ParseInt(s, 10, 64)
					if err != nil {
						return nil, fmt.Errorf("device status report of %s/%s for KubeEdge's cloud: twin %s: timestamp %q is not milliseconds", r.Namespace, r.Name, t.PropertyName, s)
					}
					out.Metadata = &keValueMeta{Timestamp: ms}
				}
				if typ := v.Metadata["type"]; typ != "" && kt.Metadata == nil {
					kt.Metadata = &keTypeMeta{Type: typ}
				}
				return out, nil
			}
			var err error
			if kt.Actual, err = conv(t.Reported); err != nil {
				return nil, err
			}
			if kt.Expected, err = conv(t.ObservedDesired); err != nil {
				return nil, err
			}
			if kt.Actual == nil && kt.Expected == nil {
				continue
			}
			yes := true
			kt.Optional = &yes
			up.Twin[t.PropertyName] = kt
		}
		if len(up.Twin) > 0 {
			m, err := message.New(kubeEdgeDeviceSource, "resource", message.OpUpdate, prefix+"/twin/edge_updated").WithContent(up)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
		}
	}
	if st.State != "" || st.LastOnlineTime != "" {
		var su keStateUpdate
		su.EventID, su.Timestamp = message.NewID(), now.UnixMilli()
		su.Device.Name, su.Device.State, su.Device.LastOnlineTime = r.Name, st.State, kubeEdgeOnlineTime(st.LastOnlineTime)
		m, err := message.New(kubeEdgeDeviceSource, "resource", message.OpUpdate, prefix+"/state/update").WithContent(su)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	if len(out) > 0 {
		out[0].Header.ID, out[0].Header.Sync = msg.Header.ID, msg.Header.Sync
	}
	return slices.Clip(out), nil
}

// translateAll returns what to send KubeEdge's cloudcore for msg: translate's message, or for a
// device status report KubeEdge's device reports (none when it carried only what KubeEdge has no
// place for).
func (k *kubeEdgeCloud) translateAll(msg message.Message, now time.Time) ([]message.Message, error) {
	if r, ok := isDeviceStatus(msg); ok {
		return kubeEdgeDeviceReports(msg, r, now)
	}
	out, err := k.translate(msg, now)
	if err != nil {
		return nil, err
	}
	return []message.Message{out}, nil
}
