package devicetwin

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// KubeEdge's cloudcore (v1.23) sends an edge its membership as a change, not a list: group twin,
// operation update, resource "membership", content {"event_id", "timestamp", "added_devices":
// [{"id": "<ns>/<name>", "name"}], "removed_devices": [...]} (observed: plugins/builtin/
// devicecontroller/testdata/kubeedge-v1.23.1-device-flow.json). devicetwin applies it to the node's
// membership list as if Kedge's cloud had sent the whole list.

// kubeEdgeMembershipResource is the resource of KubeEdge's membership update.
const kubeEdgeMembershipResource = "membership"

type kubeEdgeMembership struct {
	Added   []kubeEdgeMember `json:"added_devices"`
	Removed []kubeEdgeMember `json:"removed_devices"`
}

type kubeEdgeMember struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// ref is the namespace/name an entry names: its id is <namespace>/<name> (v1.23); an id without a
// namespace is taken in "default".
func (k kubeEdgeMember) ref() (memberRef, error) {
	ns, name, ok := strings.Cut(k.ID, "/")
	if !ok {
		ns, name = "default", k.ID
	}
	if name == "" || ns == "" || strings.Contains(name, "/") {
		return memberRef{}, fmt.Errorf("membership device id %q is not <namespace>/<name>", k.ID)
	}
	return memberRef{Namespace: ns, Name: name}, nil
}

// applyKubeEdgeMembership applies KubeEdge's membership change to this node's membership.
func (m *Module) applyKubeEdgeMembership(ctx context.Context, msg sdk.Message) error {
	var up kubeEdgeMembership
	if err := msg.DecodeContent(&up); err != nil {
		return fmt.Errorf("KubeEdge membership update: %w", err)
	}
	node := m.host.NodeName()
	cur := slices.Clone(m.membership[node])
	for _, d := range up.Removed {
		r, err := d.ref()
		if err != nil {
			return fmt.Errorf("KubeEdge membership update: removed_devices: %w", err)
		}
		cur = slices.DeleteFunc(cur, func(x memberRef) bool { return x == r })
	}
	for _, d := range up.Added {
		r, err := d.ref()
		if err != nil {
			return fmt.Errorf("KubeEdge membership update: added_devices: %w", err)
		}
		if !slices.Contains(cur, r) {
			cur = append(cur, r)
		}
	}
	raw, err := json.Marshal(membershipContent{Devices: cur})
	if err != nil {
		return err
	}
	list := message.New(msg.Route.Source, msg.Route.Group, message.OpUpdate, "")
	list.Content = raw
	err = m.applyCloud(ctx, list, message.Resource{Namespace: "default", Type: typeMembership, Name: node})
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.metrics.requests.WithLabelValues(typeMembership, result).Inc()
	return err
}
