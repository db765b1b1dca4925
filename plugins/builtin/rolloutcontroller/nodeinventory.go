package rolloutcontroller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/inventory"
	"github.com/kedge-io/kedge/sdk/message"
)

// The node inventory (sdk/inventory): pluginmanager reports the node's modules, outbox depth,
// version and class, batched (on a change, else every inventory.interval); this controller checks
// the report and keeps it as the Node annotation kedge.io/inventory, written with one merge patch and
// only when it differs from what the annotation holds (apart from its time), so the console of every
// replica reads it from its Node informer and nothing ever asks a node.

// invMetrics counts inventory reports by result.
type invMetrics struct {
	once    sync.Once
	results *prometheus.CounterVec
}

func (m *Module) invCount(result string) {
	m.inv.once.Do(func() {
		m.inv.results = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kedge_rolloutcontroller_inventory_total",
			Help: "Node inventory reports from edge nodes, by result (written: the Node annotation was patched; unchanged: it already said so; invalid: malformed, oversized or another version; forbidden: about another node; error: the API refused the patch)."},
			[]string{"result"})
		if err := m.host.Metrics().Register(m.inv.results); err != nil {
			m.host.Logger().Warn("inventory metrics not registered", "err", err)
		}
	})
	m.inv.results.WithLabelValues(result).Inc()
}

// nodeInventory handles a nodeinventory update from node (the node of the connection's certificate,
// never the message's): its result label for the upstream metric (ok, unchanged), or an error
// wrapping errInvalid or errForbidden.
func (m *Module) nodeInventory(ctx context.Context, node string, res message.Resource, msg sdk.Message) (result string, err error) {
	defer func() {
		switch {
		case errors.Is(err, errInvalid):
			m.invCount("invalid")
		case errors.Is(err, errForbidden):
			m.invCount("forbidden")
		case err != nil:
			m.invCount("error")
		case result == "ok":
			m.invCount("written")
		default:
			m.invCount(result)
		}
	}()
	if op := msg.Route.Operation; op != message.OpUpdate && op != message.OpInsert {
		return "", fmt.Errorf("%w: %s of %s: an inventory is sent as update", errInvalid, op, inventory.Type)
	}
	if res.Name != node {
		return "", fmt.Errorf("%w: node %s sent the inventory of %q: a node reports only its own", errForbidden, node, res.Name)
	}
	rep, err := inventory.Decode(msg.Content)
	if err != nil {
		return "", fmt.Errorf("%w: %v", errInvalid, err)
	}
	if rep.Node != node {
		return "", fmt.Errorf("%w: node %s sent an inventory naming node %q: a node reports only its own", errForbidden, node, rep.Node)
	}
	val, err := json.Marshal(rep)
	if err != nil {
		return "", err
	}
	cur, err := m.nodeAnnotation(ctx, node)
	if err != nil {
		return "", err
	}
	if sameInventory(cur, rep) {
		return "unchanged", nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{inventory.Annotation: string(val)}}})
	if err != nil {
		return "", err
	}
	if _, err := m.kube.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kedge-rolloutcontroller"}); err != nil {
		if apierrors.IsNotFound(err) {
			return "", fmt.Errorf("%w: no Node %s", errInvalid, node)
		}
		return "", fmt.Errorf("patch Node %s annotation %s: %w", node, inventory.Annotation, err)
	}
	return "ok", nil
}

// nodeAnnotation is node's current inventory annotation: from the edge-node informer, else (a Node
// the informer has not seen yet) from the API.
func (m *Module) nodeAnnotation(ctx context.Context, node string) (string, error) {
	var n *corev1.Node
	if got, err := m.nodes.Get(node); err == nil {
		n = got
	} else if n, err = m.kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		return "", fmt.Errorf("%w: no Node %s", errInvalid, node)
	} else if err != nil {
		return "", err
	}
	return n.Annotations[inventory.Annotation], nil
}

// sameInventory says whether the annotation cur holds rep apart from rep's time.
func sameInventory(cur string, rep inventory.Report) bool {
	if cur == "" {
		return false
	}
	old, err := inventory.Parse(cur)
	if err != nil {
		return false // unreadable (an older format): replaced
	}
	old.At, rep.At = time.Time{}, time.Time{}
	a, _ := json.Marshal(old)
	b, _ := json.Marshal(rep)
	return bytes.Equal(a, b)
}
