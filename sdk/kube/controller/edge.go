package controller

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// Errors a controller wraps to sort a failed edge request (Outcome).
var (
	// ErrForbidden: the NodeRestriction rule refuses the request (the node may not touch that object).
	ErrForbidden = errors.New("forbidden")
	// ErrInvalid: the request is malformed, names nothing that exists, or is not one the controller takes.
	ErrInvalid = errors.New("invalid")
)

// InventoryItem is one object an edge node holds, as its metamanager reports it on connect (the
// content of the hub's inventory event is a JSON list of them). This is the wire shape edgecore sends;
// it does not change.
type InventoryItem struct {
	Resource        string `json:"resource"` // <namespace>/<type>/<name>
	ResourceVersion uint64 `json:"resourceVersion"`
}

// DecodeInventory reads the content of an inventory event.
func DecodeInventory(raw []byte) ([]InventoryItem, error) {
	var inv []InventoryItem
	if err := json.Unmarshal(raw, &inv); err != nil {
		return nil, err
	}
	return inv, nil
}

// Plan compares what a node holds (inv) with what it should hold (want: edge resource
// <namespace>/<type>/<name> -> the resourceVersion from which the node's copy is current) and returns
// what to send — wanted objects the node lacks or holds at an older version — and what to delete —
// held objects of a type managed says is the caller's that are not wanted — each in resource order.
// Inventory entries that are not resource paths are skipped (another module's business).
func Plan(inv []InventoryItem, want map[string]uint64, managed func(typ string) bool) (send, remove []message.Resource) {
	have := make(map[string]uint64, len(inv))
	for _, i := range inv {
		have[i.Resource] = i.ResourceVersion
	}
	for res, rv := range want {
		if held, ok := have[res]; ok && held >= rv {
			continue
		}
		if r, err := message.ParseEdge(res); err == nil {
			send = append(send, r)
		}
	}
	for res := range have {
		if _, ok := want[res]; ok {
			continue
		}
		if r, err := message.ParseEdge(res); err == nil && r.Name != "" && managed(r.Type) {
			remove = append(remove, r)
		}
	}
	byPath := func(a, b message.Resource) int { return strings.Compare(a.Edge(), b.Edge()) }
	slices.SortFunc(send, byPath)
	slices.SortFunc(remove, byPath)
	return send, remove
}

// ConnectedKubeEdge reads the content of a connected event: whether the node runs KubeEdge's
// edgecore (which sends no inventory). No content (an older cloudhub): a Kedge edge.
func ConnectedKubeEdge(content []byte) bool {
	var hello struct {
		KubeEdge bool `json:"kubeedge"`
	}
	_ = json.Unmarshal(content, &hello)
	return hello.KubeEdge
}

// Link is a node's connection and inventory as a controller follows them. Embed it in the
// controller's per-node state; the controller's lock guards it.
type Link struct {
	Connected   bool
	Inventoried bool   // the node's inventory was reconciled since this controller started
	KubeEdge    bool   // the node's last connection was KubeEdge's edgecore (it sends no inventory)
	Gen         uint64 // counts connections; a wait for the inventory ends with a newer one
}

// Connect notes a connection (call with the lock held); AwaitInventory follows.
func (l *Link) Connect(kubeedge bool) {
	l.Connected, l.KubeEdge = true, kubeedge
	l.Gen++
}

// AwaitInventory is what a controller does after Connect: nothing when the node's inventory was
// reconciled already; for a KubeEdge edge (which sends none) reconcile (from nothing) at once;
// otherwise, after wait, reconcile from nothing unless the inventory came meanwhile, the node went
// away or connected again, or ctx ended. mu is the lock that guards l.
func AwaitInventory(ctx context.Context, log *slog.Logger, mu sync.Locker, l *Link, node string, wait time.Duration, reconcile func()) {
	mu.Lock()
	gen, inventoried, kubeedge := l.Gen, l.Inventoried, l.KubeEdge
	mu.Unlock()
	switch {
	case inventoried:
		return
	case kubeedge:
		log.Info("KubeEdge edge node connected (it sends no inventory); sending everything it should hold", "node", node)
		reconcile()
		return
	}
	time.AfterFunc(wait, func() {
		mu.Lock()
		waiting := !l.Inventoried && l.Gen == gen && l.Connected
		mu.Unlock()
		if waiting && ctx.Err() == nil {
			log.Info("edge node sent no inventory; sending everything it should hold", "node", node, "waited", wait)
			reconcile()
		}
	})
}

// Ready says (under mu) whether the node's inventory was reconciled: until then a controller sends
// it nothing (count what it holds back), as the reconcile sends what the node lacks.
func Ready(mu sync.Locker, l *Link) bool {
	mu.Lock()
	defer mu.Unlock()
	return l.Inventoried
}

// Entry returns the state of key in states, creating it (under mu) when there is none.
func Entry[S any](mu sync.Locker, states map[string]*S, key string) *S {
	mu.Lock()
	defer mu.Unlock()
	st := states[key]
	if st == nil {
		st = new(S)
		states[key] = st
	}
	return st
}

// Outcome sorts the result of an edge request — "ok" (nil), "forbidden" (ErrForbidden), "invalid"
// (ErrInvalid) or "error" — and logs a failure with the node, operation and resource.
func Outcome(log *slog.Logger, node string, msg sdk.Message, err error) string {
	var result, what string
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrForbidden):
		result, what = "forbidden", "edge node request refused"
	case errors.Is(err, ErrInvalid):
		result, what = "invalid", "edge node request invalid"
	default:
		result, what = "error", "edge node request failed"
	}
	log.Warn(what, "node", node, "operation", msg.Route.Operation, "resource", msg.Route.Resource, "err", err)
	return result
}

// Answer answers a sync request of an edge node (nothing for one that waits for no answer): content
// from source, or err as an error reply. edit, if set, adjusts a successful reply (a resourceVersion,
// KubeEdge's answer resource). The answer acknowledges the message to the edge.
func Answer(ctx context.Context, h sdk.Host, source, node string, msg sdk.Message, content any, err error, edit func(*sdk.Message)) {
	if !msg.Header.Sync {
		return
	}
	var reply sdk.Message
	if err == nil {
		if reply, err = msg.Reply(source, content); err == nil && edit != nil {
			edit(&reply)
		}
	}
	if err != nil {
		reply = msg.ErrorReply(source, err)
	}
	if err := h.Reply(ctx, reply); err != nil && !errors.Is(err, sdk.ErrNoWaiter) {
		h.Logger().Warn("answer to the edge not delivered", "node", node, "err", err)
	}
}
