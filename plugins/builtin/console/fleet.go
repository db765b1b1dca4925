package console

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// EdgeLabel marks edge nodes (edgecontroller puts it on every node that joins).
const EdgeLabel = "node-role.kubernetes.io/edge"

var (
	deviceGVR  = schema.GroupVersionResource{Group: "devices.kubeedge.io", Version: "v1beta1", Resource: "devices"}
	rolloutGVR = schema.GroupVersionResource{Group: "kedge.io", Version: "v1alpha1", Resource: "pluginrollouts"}
)

// ownershipLabel marks cloudhub's ownership Leases (kedge-node-<node>: holderIdentity is the replica
// holding the node).
const ownershipLabel = "kedge.io/ownership"

// link is what this replica's cloudhub said last about a node.
type link struct {
	up bool
	at time.Time
}

// fleet keeps the edge nodes, their pods and devices (informers) and their link state (cloudhub's
// events), and tells open pages when any of it changed.
type fleet struct {
	client   kubernetes.Interface
	dyn      dynamic.Interface
	log      *slog.Logger
	interval time.Duration

	leaseNS  string // namespace of cloudhub's ownership Leases
	pageSize int

	nodes, pods, devices cache.Indexer // devices nil when the Device CRD is not served
	rollouts, leases     cache.Indexer // rollouts nil when the PluginRollout CRD is not served
	synced               []cache.InformerSynced

	mu         sync.Mutex
	reconnects map[string][]time.Time // per node: when this replica saw it connect again after a disconnect (the last hour)
	history    map[string][]float64   // device twin property (ns/name/property) → last reported numeric values
	stamps     map[string]string      // the report timestamp of the last value kept per property
	links      map[string]link
	edges      edgeCache // parsed inventory annotations (inventory.go)
	version    uint64
	notify     chan struct{} // closed and replaced on every published change
	kick       chan struct{}
}

func newFleet(c kubernetes.Interface, d dynamic.Interface, log *slog.Logger, interval time.Duration, leaseNS string, pageSize int) *fleet {
	return &fleet{client: c, dyn: d, log: log, interval: interval, leaseNS: leaseNS, pageSize: pageSize,
		links: map[string]link{}, reconnects: map[string][]time.Time{}, history: map[string][]float64{}, stamps: map[string]string{},
		notify: make(chan struct{}), kick: make(chan struct{}, 1)}
}

func (f *fleet) start(ctx context.Context, wg *sync.WaitGroup) error {
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { f.changed() },
		UpdateFunc: func(any, any) { f.changed() },
		DeleteFunc: func(any) { f.changed() },
	}
	nf := informers.NewSharedInformerFactoryWithOptions(f.client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = EdgeLabel }))
	ni := nf.Core().V1().Nodes().Informer()
	if _, err := ni.AddEventHandler(h); err != nil {
		return err
	}
	pf := informers.NewSharedInformerFactory(f.client, 0)
	pi := pf.Core().V1().Pods().Informer()
	if err := pi.AddIndexers(cache.Indexers{"node": func(o any) ([]string, error) {
		if p, ok := o.(*corev1.Pod); ok && p.Spec.NodeName != "" {
			return []string{p.Spec.NodeName}, nil
		}
		return nil, nil
	}}); err != nil {
		return err
	}
	if _, err := pi.AddEventHandler(h); err != nil {
		return err
	}
	lf := informers.NewSharedInformerFactoryWithOptions(f.client, 0, informers.WithNamespace(f.leaseNS),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = ownershipLabel }))
	li := lf.Coordination().V1().Leases().Informer()
	if _, err := li.AddEventHandler(h); err != nil {
		return err
	}
	wg.Go(func() { f.publish(ctx) })
	f.nodes, f.pods, f.leases = ni.GetIndexer(), pi.GetIndexer(), li.GetIndexer()
	f.synced = []cache.InformerSynced{ni.HasSynced, pi.HasSynced, li.HasSynced}
	nf.Start(ctx.Done())
	pf.Start(ctx.Done())
	lf.Start(ctx.Done())
	if f.dyn == nil {
		return nil
	}
	df := dynamicinformer.NewDynamicSharedInformerFactory(f.dyn, 0)
	if _, err := f.client.Discovery().ServerResourcesForGroupVersion(deviceGVR.GroupVersion().String()); err == nil {
		di := df.ForResource(deviceGVR).Informer()
		if err := di.AddIndexers(cache.Indexers{"node": func(o any) ([]string, error) {
			if u, ok := o.(*unstructured.Unstructured); ok {
				if n, _, _ := unstructured.NestedString(u.Object, "spec", "nodeName"); n != "" {
					return []string{n}, nil
				}
			}
			return nil, nil
		}}); err != nil {
			return err
		}
		if _, err := di.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { f.record(o); f.changed() },
			UpdateFunc: func(_, o any) { f.record(o); f.changed() },
			DeleteFunc: func(o any) { f.forget(o); f.changed() },
		}); err != nil {
			return err
		}
		f.devices = di.GetIndexer()
		f.synced = append(f.synced, di.HasSynced)
	} else {
		f.log.Info("Device CRD not served: the console shows no devices", "groupVersion", deviceGVR.GroupVersion().String(), "err", err)
	}
	if _, err := f.client.Discovery().ServerResourcesForGroupVersion(rolloutGVR.GroupVersion().String()); err == nil {
		ri := df.ForResource(rolloutGVR).Informer()
		if _, err := ri.AddEventHandler(h); err != nil {
			return err
		}
		f.rollouts = ri.GetIndexer()
		f.synced = append(f.synced, ri.HasSynced)
	} else {
		f.log.Info("PluginRollout CRD not served: the console shows no rollouts", "groupVersion", rolloutGVR.GroupVersion().String(), "err", err)
	}
	df.Start(ctx.Done())
	return nil
}

// changed asks for a push; changes within one interval go out together.
func (f *fleet) changed() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

func (f *fleet) publish(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.kick:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(f.interval):
		}
		f.mu.Lock()
		f.version++
		close(f.notify)
		f.notify = make(chan struct{})
		f.mu.Unlock()
	}
}

// watch returns a channel closed at the next published change, and the version published last.
func (f *fleet) watch() (<-chan struct{}, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.notify, f.version
}

// reconnectWindow is how far back the reconnects of a node are counted.
const reconnectWindow = time.Hour

func (f *fleet) setLink(node string, up bool, at time.Time) {
	f.mu.Lock()
	if prev, ok := f.links[node]; ok && up && !prev.up {
		f.reconnects[node] = append(recent(f.reconnects[node], at), at)
	}
	f.links[node] = link{up: up, at: at}
	f.mu.Unlock()
	f.changed()
}

// recent keeps the times within reconnectWindow before now.
func recent(ts []time.Time, now time.Time) []time.Time {
	i := 0
	for i < len(ts) && now.Sub(ts[i]) > reconnectWindow {
		i++
	}
	return ts[i:]
}

func (f *fleet) hasSynced() bool {
	for _, s := range f.synced {
		if !s() {
			return false
		}
	}
	return true
}

// Row is one edge node in the fleet view.
type Row struct {
	Name       string
	Connected  bool
	LinkSource string // "cloudhub" (this replica saw it) or "Ready condition"
	LinkSince  string
	Heartbeat  string
	Version    string
	Edge       EdgeReport // what the node reported (its inventory annotation)
	Labels     string
	Replica    string // the cloudcore replica holding the node (its ownership Lease)
	Reconnects int    // reconnects this replica saw in the last hour
	PodsRun    int
	PodsFail   int
	DevOnline  int
	DevOffline int

	node *corev1.Node
}

// Fleet is the fleet view's data for one user and filter.
type Fleet struct {
	Rows                      []Row
	Nodes, Connected, Offline int
	PodsRun, PodsFail         int
	DevOnline, DevOffline     int
	ShowPods, ShowDevices     bool
	ShowReplica               bool
	DevicesServed             bool
	Synced                    bool
	Pager                     Pager
}

// view builds the fleet for user u, nodes matching sel, the rows of page (1-based) only; the counts
// are over every matching node.
func (f *fleet) view(sel labels.Selector, u *user, page int, label string) Fleet {
	showPods, showDevices := u.Pods, u.Devices
	out := Fleet{ShowPods: showPods, ShowDevices: showDevices && f.devices != nil, DevicesServed: f.devices != nil, Synced: f.hasSynced(),
		ShowReplica: u.Leases}
	now := time.Now()
	f.mu.Lock()
	links := make(map[string]link, len(f.links))
	for k, v := range f.links {
		links[k] = v
	}
	reconnects := make(map[string]int, len(f.reconnects))
	for k, v := range f.reconnects {
		if n := len(recent(v, now)); n > 0 {
			reconnects[k] = n
		}
	}
	f.mu.Unlock()
	for _, o := range f.nodes.List() {
		n, ok := o.(*corev1.Node)
		if !ok || !sel.Matches(labels.Set(n.Labels)) {
			continue
		}
		r := Row{Name: n.Name, node: n}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				r.Connected = c.Status == corev1.ConditionTrue
			}
		}
		if l, ok := links[n.Name]; ok {
			r.Connected = l.up
		}
		if showPods {
			ps, _ := f.pods.ByIndex("node", n.Name)
			for _, o := range ps {
				switch o.(*corev1.Pod).Status.Phase {
				case corev1.PodRunning:
					r.PodsRun++
				case corev1.PodFailed:
					r.PodsFail++
				}
			}
		}
		if out.ShowDevices {
			ds, _ := f.devices.ByIndex("node", n.Name)
			for _, o := range ds {
				u, _ := o.(*unstructured.Unstructured)
				if u == nil {
					continue
				}
				if st, _, _ := unstructured.NestedString(u.Object, "status", "state"); st == "online" || st == "OK" {
					r.DevOnline++
				} else {
					r.DevOffline++
				}
			}
		}
		out.Rows = append(out.Rows, r)
		out.Nodes++
		if r.Connected {
			out.Connected++
		} else {
			out.Offline++
		}
		out.PodsRun += r.PodsRun
		out.PodsFail += r.PodsFail
		out.DevOnline += r.DevOnline
		out.DevOffline += r.DevOffline
	}
	sort.Slice(out.Rows, func(i, j int) bool { return out.Rows[i].Name < out.Rows[j].Name })
	f.edges.prune(func() int { return len(f.nodes.ListKeys()) }, func(name string) bool { _, ok, _ := f.nodes.GetByKey(name); return ok })
	var lo, hi int
	out.Pager, lo, hi = paginate(len(out.Rows), page, f.pageSize, url.Values{"label": {label}})
	out.Rows = out.Rows[lo:hi]
	for i := range out.Rows { // the details only for the rows shown: a page costs its rows, not the fleet
		r, n := &out.Rows[i], out.Rows[i].node
		r.Version, r.Labels, r.Edge = n.Status.NodeInfo.KubeletVersion, labelString(n.Labels), f.edges.report(n)
		if u.Leases {
			r.Replica, _ = f.holder(n.Name)
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				r.LinkSource, r.Heartbeat, r.LinkSince = "Ready condition", rfc3339(c.LastHeartbeatTime.Time), rfc3339(c.LastTransitionTime.Time)
			}
		}
		if l, ok := links[n.Name]; ok {
			r.LinkSource, r.LinkSince = "cloudhub", rfc3339(l.at)
		}
		r.Reconnects = reconnects[n.Name]
	}
	return out
}

func labelString(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	s := ""
	for i, k := range keys {
		if i > 0 {
			s += ", "
		}
		if l[k] == "" {
			s += k
		} else {
			s += fmt.Sprintf("%s=%s", k, l[k])
		}
	}
	return s
}
