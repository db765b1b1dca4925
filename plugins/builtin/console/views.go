package console

import (
	"fmt"
	"html/template"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/cache"
)

// sparkPoints is how many reported values per twin property the sparkline shows.
const sparkPoints = 30

// Pager is one page of a long list: which page is shown and the links to its neighbours.
type Pager struct {
	Page, Pages, Total, From, To int
	Prev, Next                   string // query strings ("?page=2&label=..."); empty at the ends
}

// paginate cuts n rows into pages of size and returns page's (clamped to the last page) bounds;
// keep holds the other query parameters the links carry.
func paginate(n, page, size int, keep url.Values) (Pager, int, int) {
	pages := max(1, (n+size-1)/size)
	page = min(max(page, 1), pages)
	lo, hi := (page-1)*size, min(page*size, n)
	p := Pager{Page: page, Pages: pages, Total: n, From: lo + 1, To: hi}
	if n == 0 {
		p.From = 0
	}
	link := func(to int) string {
		q := url.Values{}
		for k, v := range keep {
			if len(v) > 0 && v[0] != "" {
				q.Set(k, v[0])
			}
		}
		if to > 1 {
			q.Set("page", strconv.Itoa(to))
		}
		return "?" + q.Encode()
	}
	if page > 1 {
		p.Prev = link(page - 1)
	}
	if page < pages {
		p.Next = link(page + 1)
	}
	return p, lo, hi
}

// holder is the replica holding node (its ownership Lease's holderIdentity) and since when.
func (f *fleet) holder(node string) (string, string) {
	h, since, _ := f.ownership(node)
	return h, since
}

// ownership is the node's ownership Lease: holder, since when, and how often the node moved between
// replicas (leaseTransitions).
func (f *fleet) ownership(node string) (string, string, int32) {
	o, ok, _ := f.leases.GetByKey(f.leaseNS + "/" + nodeLeaseName(node))
	if !ok {
		return "", "", 0
	}
	l, _ := o.(*coordv1.Lease)
	if l == nil {
		return "", "", 0
	}
	var moves int32
	if l.Spec.LeaseTransitions != nil {
		moves = *l.Spec.LeaseTransitions
	}
	if l.Spec.HolderIdentity == nil {
		return "", "", moves
	}
	since := ""
	if l.Spec.AcquireTime != nil {
		since = l.Spec.AcquireTime.UTC().Format(time.RFC3339)
	}
	return *l.Spec.HolderIdentity, since, moves
}

// nodeLeaseName is cloudhub's name of a node's ownership Lease (cloudhub.NodeLeaseName; modules do
// not import each other).
func nodeLeaseName(node string) string {
	if n := "kedge-node-" + node; len(n) <= 253 {
		return n
	}
	return "kedge-node-" + tokenKey(node)[:40]
}

// record keeps the numeric reported values of a Device's twins for the sparklines.
func (f *fleet) record(o any) {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return
	}
	twins, _, _ := unstructured.NestedSlice(u.Object, "status", "twins")
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range twins {
		tm, _ := t.(map[string]any)
		prop, _, _ := unstructured.NestedString(tm, "propertyName")
		val, ok, _ := unstructured.NestedString(tm, "reported", "value")
		if prop == "" || !ok {
			continue
		}
		ts, _, _ := unstructured.NestedString(tm, "reported", "metadata", "timestamp")
		k := u.GetNamespace() + "/" + u.GetName() + "/" + prop
		mark := k + "\x00at"
		x, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		// a value is new when its report is (the timestamp), or, without one, when the value changed
		if last := f.stamps[mark]; ts != "" && ts == last {
			continue
		} else if ts == "" && len(f.history[k]) > 0 && f.history[k][len(f.history[k])-1] == x {
			continue
		}
		f.stamps[mark] = ts
		h := append(f.history[k], x)
		if len(h) > sparkPoints {
			h = h[len(h)-sparkPoints:]
		}
		f.history[k] = h
	}
}

// forget drops a deleted Device's history.
func (f *fleet) forget(o any) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return
	}
	pre := u.GetNamespace() + "/" + u.GetName() + "/"
	f.mu.Lock()
	defer f.mu.Unlock()
	for k := range f.history {
		if strings.HasPrefix(k, pre) {
			delete(f.history, k)
			delete(f.stamps, k+"\x00at")
		}
	}
}

// Condition is one Node or Device condition.
type Condition struct {
	Type, Status, Reason, Message, Since string
}

// PodRow is one pod on a node.
type PodRow struct {
	Namespace, Name, Phase string
	Ready                  string
	Restarts               int32
}

// ModuleRow is one module a PluginRollout put on a node.
type ModuleRow struct {
	Module, Plugin, Runtime, Target, Version, State, Message, Rollout string
}

// EventRow is one recent Event about a node.
type EventRow struct {
	Type, Reason, Message, Last string
	Count                       int32
}

// Node is the node view's data.
type Node struct {
	Name, Version, OS, Arch, Labels string
	Found, Synced                   bool
	Connected                       bool
	LinkSource, LinkSince           string
	Heartbeat                       string
	Replica, ReplicaSince           string
	Moves                           int32 // moves between replicas (the ownership Lease's leaseTransitions)
	Reconnects                      int   // reconnects this replica saw in the last hour
	Conditions                      []Condition
	Pods                            []PodRow
	Devices                         []DeviceRow
	Modules                         []ModuleRow
	Edge                            EdgeReport // what the node reported (its inventory annotation)
	ShowPods, ShowDevices           bool
	ShowModules, ShowReplica        bool
	DevicesServed, RolloutsServed   bool
}

// node builds the node view for u.
func (f *fleet) node(name string, u *user) Node {
	out := Node{Name: name, Synced: f.hasSynced(), ShowPods: u.Pods, ShowDevices: u.Devices && f.devices != nil, DevicesServed: f.devices != nil,
		ShowModules: u.Rollouts && f.rollouts != nil, RolloutsServed: f.rollouts != nil, ShowReplica: u.Leases}
	o, ok, _ := f.nodes.GetByKey(name)
	n, _ := o.(*corev1.Node)
	if !ok || n == nil {
		return out
	}
	out.Found = true
	out.Version, out.OS, out.Arch, out.Labels = n.Status.NodeInfo.KubeletVersion, n.Status.NodeInfo.OperatingSystem, n.Status.NodeInfo.Architecture, labelString(n.Labels)
	out.Edge = f.edges.report(n)
	for _, c := range n.Status.Conditions {
		out.Conditions = append(out.Conditions, Condition{Type: string(c.Type), Status: string(c.Status), Reason: c.Reason, Message: c.Message,
			Since: rfc3339(c.LastTransitionTime.Time)})
		if c.Type == corev1.NodeReady {
			out.Connected, out.LinkSource, out.LinkSince, out.Heartbeat = c.Status == corev1.ConditionTrue, "Ready condition", rfc3339(c.LastTransitionTime.Time), rfc3339(c.LastHeartbeatTime.Time)
		}
	}
	f.mu.Lock()
	if l, ok := f.links[name]; ok {
		out.Connected, out.LinkSource, out.LinkSince = l.up, "cloudhub", rfc3339(l.at)
	}
	out.Reconnects = len(recent(f.reconnects[name], time.Now()))
	f.mu.Unlock()
	if u.Leases {
		out.Replica, out.ReplicaSince, out.Moves = f.ownership(name)
	}
	if out.ShowPods {
		ps, _ := f.pods.ByIndex("node", name)
		for _, o := range ps {
			p := o.(*corev1.Pod)
			ready, total := 0, len(p.Spec.Containers)
			var restarts int32
			for _, cs := range p.Status.ContainerStatuses {
				if cs.Ready {
					ready++
				}
				restarts += cs.RestartCount
			}
			out.Pods = append(out.Pods, PodRow{Namespace: p.Namespace, Name: p.Name, Phase: string(p.Status.Phase),
				Ready: fmt.Sprintf("%d/%d", ready, total), Restarts: restarts})
		}
		sort.Slice(out.Pods, func(i, j int) bool {
			return out.Pods[i].Namespace+"/"+out.Pods[i].Name < out.Pods[j].Namespace+"/"+out.Pods[j].Name
		})
	}
	if out.ShowDevices {
		ds, _ := f.devices.ByIndex("node", name)
		out.Devices = f.deviceRows(ds)
	}
	if out.ShowModules {
		for _, o := range f.rollouts.List() {
			r, ok := o.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			nodes, _, _ := unstructured.NestedSlice(r.Object, "status", "nodes")
			for _, x := range nodes {
				nm, _ := x.(map[string]any)
				if s, _, _ := unstructured.NestedString(nm, "name"); s != name {
					continue
				}
				str := func(o map[string]any, f ...string) string { s, _, _ := unstructured.NestedString(o, f...); return s }
				out.Modules = append(out.Modules, ModuleRow{Module: str(r.Object, "spec", "module"), Plugin: str(r.Object, "spec", "plugin"),
					Runtime: str(r.Object, "spec", "runtime"), Target: str(r.Object, "spec", "version"), Version: str(nm, "version"),
					State: str(nm, "state"), Message: str(nm, "message"), Rollout: r.GetNamespace() + "/" + r.GetName()})
			}
		}
		sort.Slice(out.Modules, func(i, j int) bool {
			return out.Modules[i].Module+out.Modules[i].Rollout < out.Modules[j].Module+out.Modules[j].Rollout
		})
	}
	return out
}

// TwinRow is one twin property of a device.
type TwinRow struct {
	Property, Desired, Reported, ReportedAt string
	Differs                                 bool
	Spark                                   template.HTML // an inline SVG polyline of the last reported values, or empty
	Points                                  int
}

// DeviceRow is one Device.
type DeviceRow struct {
	Namespace, Name, Node, Model, State, LastOnline string
	Online                                          bool
	Twins                                           []TwinRow
	Conditions                                      []Condition
}

// Devices is the devices view's data.
type Devices struct {
	Rows          []DeviceRow
	Node          string
	Online        int
	Offline       int
	DevicesServed bool
	Synced        bool
	Pager         Pager
}

// deviceList builds the devices view (devices on node, or every device), page of it.
func (f *fleet) deviceList(node string, page int) Devices {
	out := Devices{Node: node, DevicesServed: f.devices != nil, Synced: f.hasSynced()}
	if f.devices == nil {
		out.Pager, _, _ = paginate(0, 1, f.pageSize, nil)
		return out
	}
	var objs []any
	if node != "" {
		objs, _ = f.devices.ByIndex("node", node)
	} else {
		objs = f.devices.List()
	}
	rows := f.deviceRows(objs)
	for _, r := range rows {
		if r.Online {
			out.Online++
		} else {
			out.Offline++
		}
	}
	var lo, hi int
	out.Pager, lo, hi = paginate(len(rows), page, f.pageSize, url.Values{"node": {node}})
	out.Rows = rows[lo:hi]
	return out
}

func (f *fleet) deviceRows(objs []any) []DeviceRow {
	f.mu.Lock()
	defer f.mu.Unlock()
	var rows []DeviceRow
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		str := func(o map[string]any, f ...string) string { s, _, _ := unstructured.NestedString(o, f...); return s }
		r := DeviceRow{Namespace: u.GetNamespace(), Name: u.GetName(), Node: str(u.Object, "spec", "nodeName"),
			Model: str(u.Object, "spec", "deviceModelRef", "name"), State: str(u.Object, "status", "state"),
			LastOnline: str(u.Object, "status", "lastOnlineTime")}
		r.Online = r.State == "online" || r.State == "OK"
		desired := map[string]string{}
		props, _, _ := unstructured.NestedSlice(u.Object, "spec", "properties")
		var order []string
		for _, p := range props {
			pm, _ := p.(map[string]any)
			name := str(pm, "name")
			if name == "" {
				continue
			}
			order = append(order, name)
			desired[name] = str(pm, "desired", "value")
		}
		reported := map[string][2]string{}
		twins, _, _ := unstructured.NestedSlice(u.Object, "status", "twins")
		for _, t := range twins {
			tm, _ := t.(map[string]any)
			name := str(tm, "propertyName")
			if name == "" {
				continue
			}
			if _, ok := desired[name]; !ok {
				order = append(order, name)
				desired[name] = ""
			}
			reported[name] = [2]string{str(tm, "reported", "value"), str(tm, "reported", "metadata", "timestamp")}
		}
		for _, p := range order {
			rep := reported[p]
			tr := TwinRow{Property: p, Desired: desired[p], Reported: rep[0], ReportedAt: rep[1],
				Differs: desired[p] != "" && rep[0] != "" && desired[p] != rep[0]}
			h := f.history[u.GetNamespace()+"/"+u.GetName()+"/"+p]
			tr.Points = len(h)
			tr.Spark = sparkline(h)
			r.Twins = append(r.Twins, tr)
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			cm, _ := c.(map[string]any)
			r.Conditions = append(r.Conditions, Condition{Type: str(cm, "type"), Status: str(cm, "status"), Reason: str(cm, "reason"),
				Message: str(cm, "message"), Since: str(cm, "lastTransitionTime")})
		}
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Namespace+"/"+rows[i].Name < rows[j].Namespace+"/"+rows[j].Name })
	return rows
}

// sparkline draws values as an inline SVG polyline, 100×20 (no script, no style: the CSP allows it).
func sparkline(h []float64) template.HTML {
	if len(h) == 0 {
		return ""
	}
	lo, hi := h[0], h[0]
	for _, v := range h {
		lo, hi = min(lo, v), max(hi, v)
	}
	var b strings.Builder
	for i, v := range h {
		x := 0.0
		if len(h) > 1 {
			x = float64(i) * 100 / float64(len(h)-1)
		}
		y := 10.0
		if hi > lo {
			y = 19 - (v-lo)*18/(hi-lo)
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f,%.1f", x, y)
	}
	// numbers only: nothing from a report reaches the markup but parsed floats
	return template.HTML(fmt.Sprintf(`<svg class="spark" viewBox="-1 -1 102 22" width="100" height="20" role="img" aria-label="last %d reported values"><polyline fill="none" stroke="currentColor" stroke-width="1.5" points="%s"/></svg>`, len(h), b.String()))
}

// RolloutRow is one PluginRollout.
type RolloutRow struct {
	Namespace, Name, Plugin, Version, Runtime, Module string
	Phase, PauseReason, Message                       string
	Paused                                            bool
	Desired                                           int
	States                                            []StateCount // per-node states, for the bar
	Bar                                               template.HTML
	Nodes                                             []ModuleRow
	MayPatch                                          bool
}

// StateCount is how many nodes of a rollout are in one state.
type StateCount struct {
	State string
	Count int
}

// rolloutStates in bar order.
var rolloutStates = []string{"Updated", "Installing", "Pending", "Failed", "RolledBack"}

// Rollouts is the rollouts view's data.
type Rollouts struct {
	Rows           []RolloutRow
	RolloutsServed bool
	Synced         bool
	CSRF           string
}

func (f *fleet) rolloutList() Rollouts {
	out := Rollouts{RolloutsServed: f.rollouts != nil, Synced: f.hasSynced()}
	if f.rollouts == nil {
		return out
	}
	for _, o := range f.rollouts.List() {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		str := func(o map[string]any, f ...string) string { s, _, _ := unstructured.NestedString(o, f...); return s }
		paused, _, _ := unstructured.NestedBool(u.Object, "spec", "paused")
		desired, _, _ := unstructured.NestedInt64(u.Object, "status", "desired")
		r := RolloutRow{Namespace: u.GetNamespace(), Name: u.GetName(), Plugin: str(u.Object, "spec", "plugin"), Version: str(u.Object, "spec", "version"),
			Runtime: str(u.Object, "spec", "runtime"), Module: str(u.Object, "spec", "module"), Phase: str(u.Object, "status", "phase"),
			PauseReason: str(u.Object, "status", "pauseReason"), Message: str(u.Object, "status", "message"), Paused: paused, Desired: int(desired)}
		counts := map[string]int{}
		nodes, _, _ := unstructured.NestedSlice(u.Object, "status", "nodes")
		for _, x := range nodes {
			nm, _ := x.(map[string]any)
			st := str(nm, "state")
			counts[st]++
			r.Nodes = append(r.Nodes, ModuleRow{Rollout: str(nm, "name"), Version: str(nm, "version"), State: st, Message: str(nm, "message")})
		}
		total := max(int(desired), len(nodes))
		for _, s := range rolloutStates {
			r.States = append(r.States, StateCount{s, counts[s]})
		}
		r.Bar = progressBar(r.States, total)
		out.Rows = append(out.Rows, r)
	}
	sort.Slice(out.Rows, func(i, j int) bool {
		return out.Rows[i].Namespace+"/"+out.Rows[i].Name < out.Rows[j].Namespace+"/"+out.Rows[j].Name
	})
	return out
}

// progressBar draws the per-node states of a rollout as one stacked SVG bar (classes colour it).
func progressBar(states []StateCount, total int) template.HTML {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="bar" viewBox="0 0 200 12" width="200" height="12" role="img" aria-label="rollout progress">`)
	b.WriteString(`<rect class="bar-bg" x="0" y="0" width="200" height="12"/>`)
	x := 0.0
	for _, s := range states {
		if s.Count == 0 || total == 0 {
			continue
		}
		w := float64(s.Count) * 200 / float64(total)
		fmt.Fprintf(&b, `<rect class="bar-%s" x="%.1f" y="0" width="%.1f" height="12"/>`, strings.ToLower(s.State), x, w)
		x += w
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // state names are from the fixed list above; numbers are computed
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
