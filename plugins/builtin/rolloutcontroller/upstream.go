package rolloutcontroller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/apis/kedge/v1alpha1"
	"github.com/kedge-io/kedge/sdk/inventory"
	"github.com/kedge-io/kedge/sdk/kube/controller"
	"github.com/kedge-io/kedge/sdk/message"
)

// TypePluginStatus is the resource type of the edge's reports (<namespace>/pluginstatus/<name>).
const TypePluginStatus = "pluginstatus"

// StatusReport is the content of a pluginstatus update from the edge.
type StatusReport struct {
	Rollout    string `json:"rollout"` // <namespace>/<name>, the same as the resource path
	Generation int64  `json:"generation"`
	Version    string `json:"version"`
	State      string `json:"state"` // Installing, Updated, Failed or RolledBack
	Message    string `json:"message,omitempty"`
}

// errForbidden and errInvalid sort a failed report (controller.Outcome); errStale marks a report
// about a generation the rollout moved past.
var (
	errForbidden = controller.ErrForbidden
	errInvalid   = controller.ErrInvalid
	errStale     = errors.New("stale")
)

func (m *Module) handleUp(ctx context.Context, node string, msg sdk.Message) {
	res, err := message.ParseCloud(msg.Route.Resource)
	result := "ok"
	switch {
	case err == nil && res.Type == inventory.Type:
		result, err = m.nodeInventory(ctx, node, res, msg) // nodeinventory.go
	case err == nil:
		result, err = m.fromEdge(ctx, node, res, msg)
	}
	if errors.Is(err, errStale) {
		result, err = "stale", nil // answered OK: the edge need not resend a report the rollout moved past
		m.host.Logger().Info("edge node report about an earlier generation ignored", "node", node, "resource", msg.Route.Resource)
	}
	if err != nil {
		result = controller.Outcome(m.host.Logger(), node, msg, err)
	}
	if result == "forbidden" {
		m.metrics.denied.Inc()
	}
	m.metrics.upstream.WithLabelValues(result).Inc()
	controller.Answer(ctx, m.host, Name, node, msg, "OK", err, nil)
}

// fromEdge handles one report of an edge node and returns its result label.
func (m *Module) fromEdge(ctx context.Context, node string, res message.Resource, msg sdk.Message) (string, error) {
	op := msg.Route.Operation
	if res.Type != TypePluginStatus || (op != message.OpUpdate && op != message.OpInsert) {
		return "", fmt.Errorf("%w: %s of %s from an edge node is not something the rollout controller handles (it takes update of pluginstatus)", errInvalid, op, res.Type)
	}
	if res.Name == "" {
		return "", fmt.Errorf("%w: pluginstatus needs a rollout name (<namespace>/pluginstatus/<name>)", errInvalid)
	}
	rep, err := decodeReport(msg.Content, res)
	if err != nil {
		return "", err
	}
	result := "ok"
	err = m.mutate(ctx, res.Namespace, res.Name, true, func(ro *v1alpha1.PluginRollout) error {
		changed, err := apply(ro, node, rep, m.now())
		if err == nil && !changed {
			result = "unchanged"
		}
		return err
	})
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("%w: no pluginrollout %s/%s", errInvalid, res.Namespace, res.Name)
	}
	return result, err
}

// decodeReport decodes and checks a report: well-formed JSON of the right shape, naming the rollout
// of its resource path, a generation, a known state, a version when updated.
func decodeReport(raw []byte, res message.Resource) (StatusReport, error) {
	var rep StatusReport
	if len(bytes.TrimSpace(raw)) == 0 {
		return rep, fmt.Errorf("%w: empty content: want {\"rollout\", \"generation\", \"version\", \"state\", \"message\"}", errInvalid)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		return rep, fmt.Errorf("%w: content is not a plugin status report: %v", errInvalid, err)
	}
	if want := res.Namespace + "/" + res.Name; rep.Rollout != want {
		return rep, fmt.Errorf("%w: rollout %q in the content, but the report is about %s", errInvalid, rep.Rollout, want)
	}
	if rep.Generation <= 0 {
		return rep, fmt.Errorf("%w: generation %d: want the generation of the rollout message being reported on", errInvalid, rep.Generation)
	}
	switch rep.State {
	case v1alpha1.NodeInstalling, v1alpha1.NodeFailed, v1alpha1.NodeRolledBack:
	case v1alpha1.NodeUpdated:
		if rep.Version == "" {
			return rep, fmt.Errorf("%w: state Updated without the version now running", errInvalid)
		}
	default:
		return rep, fmt.Errorf("%w: state %q: want Installing, Updated, Failed or RolledBack", errInvalid, rep.State)
	}
	return rep, nil
}

// apply writes rep into node's entry of ro's status; it reports whether anything changed.
func apply(ro *v1alpha1.PluginRollout, node string, rep StatusReport, now metav1.Time) (bool, error) {
	i := -1
	for j, n := range ro.Status.Nodes {
		if n.Name == node {
			i = j
		}
	}
	if i < 0 {
		return false, fmt.Errorf("%w: node %s is not part of pluginrollout %s/%s", errForbidden, node, ro.Namespace, ro.Name)
	}
	if gen, _, _ := rolloutGeneration(ro); rep.Generation != gen {
		return false, fmt.Errorf("%w: the report is about generation %d, the rollout is at %d", errStale, rep.Generation, gen)
	}
	if rep.State == v1alpha1.NodeUpdated && rep.Version != ro.Spec.Version {
		return false, fmt.Errorf("%w: node reports version %s updated, but the rollout is of %s", errInvalid, rep.Version, ro.Spec.Version)
	}
	n := &ro.Status.Nodes[i]
	if n.State == rep.State && n.Message == rep.Message && (rep.Version == "" || n.Version == rep.Version) {
		return false, nil
	}
	n.State, n.Message, n.UpdatedAt = rep.State, rep.Message, &now
	if rep.Version != "" {
		n.Version = rep.Version
	}
	return true, nil
}
