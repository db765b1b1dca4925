package edgemark

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
	"github.com/kedge-io/kedge/plugins/builtin/edgecontroller"
	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
)

// Message sources, as Kedge's edge modules name themselves.
const (
	srcNodeStatus = "nodestatus"
	srcEdged      = "edged"
	srcMeta       = "metamanager"
	srcHub        = "edgehub"
	srcTwin       = "devicetwin"
)

// node is one hollow edge node.
type node struct {
	s      *Sim
	index  int
	name   string
	recent *hub.Recent // IDs of the cloud's messages taken, to acknowledge a resend without acting twice
	boot   time.Time

	mu       sync.Mutex
	conn     *hub.Conn           // nil while disconnected
	pending  map[string]*pending // upstream messages waiting for the cloud's acknowledgement, by ID
	seq      int64
	pods     map[string]*pod   // edge resource <ns>/pod/<name> -> pod
	objs     map[string]uint64 // other objects held (ConfigMaps, Secrets, Services, the Node): resource -> version
	reported bool              // the cloud acknowledged a node status once
	onLink   bool              // ... on the current link
}

type pending struct {
	seq   int64
	msg   message.Message
	sent  time.Time // last sent; zero: not sent yet
	first time.Time
	tries int
	kind  string // nodestatus, podstatus, poddelete, twin
	// superseded: a newer node status (twin report) was queued; this one is not resent, its answer still counts.
	superseded bool
	pod        string // the pod's resource, for podstatus and poddelete
	uid        types.UID
}

type pod struct {
	uid      types.UID
	rv       uint64
	received time.Time // when the pod (this uid) first arrived
	running  bool      // the cloud acknowledged its Running status
	reported bool      // a Running status was queued for this uid
	deleting bool      // its deletion was confirmed (queued)
}

func newNode(s *Sim, i int, name string) *node {
	return &node{s: s, index: i, name: name, recent: hub.NewRecent(64), pending: map[string]*pending{},
		pods: map[string]*pod{}, objs: map[string]uint64{}, boot: time.Now().Add(-time.Hour).Truncate(time.Second)}
}

// run joins if needed, then keeps a link to the cloud until ctx ends, redialing with backoff and
// full jitter (a healthy link — one the cloud sent something on — resets the backoff).
func (n *node) run(ctx context.Context) {
	o := n.s.o
	bound := o.BackoffMin
	wait := func() bool {
		t := time.NewTimer(jitter(bound))
		defer t.Stop()
		bound = min(bound*2, o.BackoffMax)
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	var cfg *tls.Config
	for {
		if err := n.s.limiter.Wait(ctx); err != nil {
			return
		}
		var err error
		if cfg, err = n.s.credentials(ctx, n); err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		n.s.m.joinErrors.Inc()
		o.Logger.Warn("edgemark: node has no certificate yet; trying again", "node", n.name, "err", err)
		if !wait() {
			return
		}
	}
	n.s.stats.joined.Add(1)
	bound = o.BackoffMin
	// --rate paces the ramp (first connections) only: a redial is paced by the jittered backoff alone,
	// as each real edge redials on its own.
	for ctx.Err() == nil {
		start := time.Now()
		conn, err := hub.Dial(ctx, hub.DialOptions{URL: "wss://" + o.HubAddress + "/", TLS: cfg, NodeID: n.name,
			HandshakeTimeout: 30 * time.Second, Options: hub.Options{Heartbeat: o.Heartbeat, Logger: quiet}})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			n.s.stats.dialErrors.Add(1)
			n.s.m.dialErrors.Inc()
			if n.s.stats.dialErrors.Load()%1000 == 1 {
				o.Logger.Warn("edgemark: dial failed (every 1000th logged)", "node", n.name, "err", err)
			}
			if !wait() {
				return
			}
			continue
		}
		n.s.m.dialSeconds.Observe(time.Since(start).Seconds())
		n.s.stats.connects.Add(1)
		n.s.stats.connected.Add(1)
		healthy := n.serve(ctx, conn)
		n.s.stats.connected.Add(-1)
		n.s.stats.disconnects.Add(1)
		if ctx.Err() != nil {
			return
		}
		if healthy {
			bound = o.BackoffMin
		}
		if !wait() {
			return
		}
	}
}

// serve runs one link: inventory, then node status every StatusPeriod and resends of what is not
// acknowledged, while a reader handles what the cloud sends. It returns whether the link was healthy.
func (n *node) serve(ctx context.Context, conn *hub.Conn) bool {
	ctx, cancel := context.WithCancel(ctx)
	var heard atomic.Bool
	var got sync.WaitGroup
	defer func() {
		cancel()
		_ = conn.Close()
		got.Wait()
	}()
	got.Go(func() {
		defer cancel()
		for {
			msg, err := conn.Receive(ctx)
			if err != nil {
				return
			}
			heard.Store(true)
			n.s.stats.msgsIn.Add(1)
			if msg.IsReply() {
				n.acked(msg)
				continue
			}
			n.down(ctx, conn, msg)
		}
	})

	n.mu.Lock()
	n.conn, n.onLink = conn, false
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		if n.onLink {
			n.onLink = false
			n.s.stats.reportedOnLink.Add(-1)
		}
		n.conn = nil
		for id, p := range n.pending {
			if p.superseded {
				delete(n.pending, id) // its answer will not come on another link
				continue
			}
			p.sent = time.Time{} // sent again on the next link
		}
		n.mu.Unlock()
	}()

	if err := n.send(ctx, conn, n.inventory()); err != nil {
		return false
	}
	n.queueStatus()
	// The first report goes at once (the node is Ready as soon as the cloud writes it); the next at a
	// random point of the first period, so nodes that connected together (a ramp, a reconnect storm)
	// do not report in lockstep ever after.
	status := time.NewTimer(jitter(n.s.o.StatusPeriod))
	defer status.Stop()
	var twin *time.Timer
	var twinC <-chan time.Time
	if n.s.o.TwinPeriod > 0 { // device traffic: a twin report at a random point of the first period, then every period
		twin = time.NewTimer(jitter(n.s.o.TwinPeriod))
		defer twin.Stop()
		twinC = twin.C
	}
	resend := time.NewTicker(max(n.s.o.AckTimeout/4, 50*time.Millisecond))
	defer resend.Stop()
	for {
		if err := n.flush(ctx, conn); err != nil {
			return heard.Load()
		}
		select {
		case <-ctx.Done():
			return heard.Load()
		case <-status.C:
			n.queueStatus()
			status.Reset(n.s.o.StatusPeriod)
		case <-twinC:
			n.queueTwin()
			twin.Reset(n.s.o.TwinPeriod)
		case <-resend.C:
		}
	}
}

var quiet = slogDiscard()

// inventory is what the node holds, as metamanager reports it on connect.
func (n *node) inventory() message.Message {
	n.mu.Lock()
	items := make([]edgecontroller.InventoryItem, 0, len(n.pods)+len(n.objs))
	for res, p := range n.pods {
		items = append(items, edgecontroller.InventoryItem{Resource: res, ResourceVersion: p.rv})
	}
	for res, rv := range n.objs {
		items = append(items, edgecontroller.InventoryItem{Resource: res, ResourceVersion: rv})
	}
	n.mu.Unlock()
	m, _ := message.New(srcHub, "hub", message.OpInventory, "").WithContent(items)
	return m
}

// queueStatus queues a node status report, replacing one not yet acknowledged: only the newest
// matters (each report is the whole status), so a slow cloud gets one report per node, not a backlog.
func (n *node) queueStatus() {
	rep := edgecontroller.NodeReport{NodeName: n.name, Capacity: n.s.o.Capacity, KernelVersion: "6.1.0-hollow",
		OS: "linux", Architecture: "amd64", OSImage: "edgemark hollow node", Addresses: []string{n.ip()},
		BootTime: n.boot, ReportedAt: time.Now().UTC().Truncate(time.Second), ContainerRuntimeVersion: "hollow://0",
		MachineID: fmt.Sprintf("%032x", n.index), BootID: fmt.Sprintf("hollow-%d", n.index), Version: "edgemark",
		Allocatable: n.s.o.Capacity, Conditions: hollowConditions}
	res := message.Resource{Namespace: "default", Type: edgecontroller.TypeNodeStat, Name: n.name}
	m, err := message.New(srcNodeStatus, "meta", message.OpUpdate, res.Edge()).WithContent(rep)
	if err != nil {
		panic(err) // a NodeReport always encodes
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, p := range n.pending {
		if p.kind == "nodestatus" {
			if p.sent.IsZero() {
				delete(n.pending, id) // never sent: the new report takes its place
			} else {
				p.superseded = true // on the wire: its answer still counts, but it is not sent again
			}
		}
	}
	n.queueLocked(&pending{msg: m, kind: "nodestatus"})
}

// hollowConditions are the pressure conditions a real edgecore reports (nodestatus) on a box with
// plenty of everything, so a hollow report is as big as a real one and the cloud handles them too.
var hollowConditions = []edgecontroller.ReportCondition{
	{Type: "MemoryPressure", Status: "False", Reason: "EdgeHasSufficientMemory", Message: "edge has memory available at or above the pressure threshold (100Mi of 4Gi)"},
	{Type: "DiskPressure", Status: "False", Reason: "EdgeHasNoDiskPressure", Message: "edge has disk space available at or above the pressure threshold (10% of 64Gi)"},
	{Type: "PIDPressure", Status: "False", Reason: "EdgeHasSufficientPID", Message: "edge has PIDs available at or above the pressure threshold (5% of 4194304)"},
}

// TwinProperty is the device property a hollow node reports (see Options.TwinPeriod).
const TwinProperty = "temperature"

// queueTwin queues a devicestatus update of the node's device, as devicetwin sends one when its
// mapper reports a new value: the twin's reported value with its timestamp (ms). A newer report
// replaces one not sent yet (devicetwin sends the latest of each device per flush).
func (n *node) queueTwin() {
	now := time.Now()
	rep := devicecontroller.DeviceStatusReport{Twins: []v1beta1.Twin{{PropertyName: TwinProperty,
		Reported: v1beta1.TwinProperty{Value: strconv.FormatFloat(20+float64(now.UnixMilli()%1000)/100, 'f', 2, 64),
			Metadata: map[string]string{devicecontroller.MetaTimestamp: strconv.FormatInt(now.UnixMilli(), 10)}}}}}
	res := message.Resource{Namespace: n.s.o.TwinNamespace, Type: devicecontroller.TypeDeviceStatus, Name: n.name}
	m, err := message.New(srcTwin, "twin", message.OpUpdate, res.Edge()).WithContent(rep)
	if err != nil {
		panic(err) // a DeviceStatusReport always encodes
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, p := range n.pending {
		if p.kind == "twin" {
			if p.sent.IsZero() {
				delete(n.pending, id)
			} else {
				p.superseded = true
			}
		}
	}
	n.queueLocked(&pending{msg: m, kind: "twin"})
	n.s.stats.twinsSent.Add(1)
}

func (n *node) queueLocked(p *pending) {
	n.seq++
	p.seq, p.first = n.seq, time.Now()
	n.pending[p.msg.Header.ID] = p
}

// ip is the node's made-up address, from 10.0.0.0/8 by index.
func (n *node) ip() string {
	i := n.index + 1
	return fmt.Sprintf("10.%d.%d.%d", (i>>16)&0xff, (i>>8)&0xff, i&0xff)
}

// flush sends, in order, what is queued and not sent yet, and again what was not acknowledged
// within AckTimeout (each further resend waiting twice as long, up to 16 times).
func (n *node) flush(ctx context.Context, conn *hub.Conn) error {
	now := time.Now()
	n.mu.Lock()
	var due []*pending
	for _, p := range n.pending {
		if p.superseded {
			continue
		}
		if p.sent.IsZero() || now.Sub(p.sent) >= n.s.o.AckTimeout<<min(p.tries, 4) {
			if !p.sent.IsZero() {
				p.tries++
				n.s.stats.resent.Add(1)
			}
			p.sent = now
			due = append(due, p)
		}
	}
	n.mu.Unlock()
	slices.SortFunc(due, func(a, b *pending) int { return int(a.seq - b.seq) })
	for _, p := range due {
		if err := n.send(ctx, conn, p.msg); err != nil {
			return err
		}
	}
	return nil
}

func (n *node) send(ctx context.Context, conn *hub.Conn, m message.Message) error {
	if err := conn.Send(ctx, m); err != nil {
		return err
	}
	n.s.stats.msgsOut.Add(1)
	return nil
}

// wake makes the node's sender flush now (a pod status was queued by the reader).
func (n *node) sendNow(ctx context.Context) {
	n.mu.Lock()
	conn := n.conn
	n.mu.Unlock()
	if conn != nil {
		_ = n.flush(ctx, conn) // a failed send closes the link; serve notices
	}
}

// acked settles the upstream message the cloud answered.
func (n *node) acked(resp message.Message) {
	n.mu.Lock()
	p, ok := n.pending[resp.Header.ParentID]
	if !ok {
		n.mu.Unlock()
		return // an answer to a resend already settled
	}
	delete(n.pending, resp.Header.ParentID)
	firstReport, firstOnLink := false, false
	var started time.Time
	if resp.Route.Operation != message.OpError {
		switch p.kind {
		case "nodestatus":
			if !n.reported {
				n.reported, firstReport = true, true
			}
			if !n.onLink && n.conn != nil {
				n.onLink, firstOnLink = true, true
			}
		case "podstatus":
			if pd, ok := n.pods[p.pod]; ok && pd.uid == p.uid && !pd.running {
				pd.running = true
				started = pd.received
			}
		case "poddelete":
			n.s.stats.podsDeleted.Add(1)
		case "twin":
			n.s.stats.twinsAcked.Add(1)
		}
	}
	n.mu.Unlock()
	n.s.m.ackSeconds.WithLabelValues(p.kind).Observe(time.Since(p.first).Seconds())
	if resp.Route.Operation == message.OpError {
		n.s.stats.refused.Add(1)
		n.s.m.refused.WithLabelValues(p.kind).Inc()
		n.s.o.Logger.Warn("edgemark: the cloud refused an upstream message", "node", n.name, "kind", p.kind, "msg", p.msg.String(), "reason", string(resp.Content))
		return
	}
	if firstReport {
		n.s.stats.reported.Add(1)
	}
	if firstOnLink {
		n.s.stats.reportedOnLink.Add(1)
	}
	if !started.IsZero() {
		n.s.stats.podsRunning.Add(1)
		n.s.m.podStartSeconds.Observe(time.Since(started).Seconds())
	}
}

// down handles one message from the cloud and acknowledges it, as metamanager does once the object
// is stored: pods are "started" at once (their Running status queued), other objects are kept.
func (n *node) down(ctx context.Context, conn *hub.Conn, msg message.Message) {
	ack, _ := msg.Reply(srcMeta, "OK")
	if !n.recent.Claim(msg.Header.ID) {
		_ = n.send(ctx, conn, ack) // a resend of what was taken: acknowledge again, act once
		return
	}
	res, err := message.ParseEdge(msg.Route.Resource)
	if err != nil {
		_ = n.send(ctx, conn, msg.ErrorReply(srcHub, err))
		return
	}
	rv, _ := strconv.ParseUint(msg.Header.ResourceVersion, 10, 64)
	wake := false
	switch {
	case res.Type == edgecontroller.TypePod && msg.Route.Operation == message.OpDelete:
		n.mu.Lock()
		if _, ok := n.pods[msg.Route.Resource]; ok {
			delete(n.pods, msg.Route.Resource)
			n.s.stats.podsHeld.Add(-1)
		}
		n.mu.Unlock()
	case res.Type == edgecontroller.TypePod:
		var p corev1.Pod
		if err := json.Unmarshal(msg.Content, &p); err != nil {
			_ = n.send(ctx, conn, msg.ErrorReply(srcMeta, fmt.Errorf("pod %s: %w", msg.Route.Resource, err)))
			return
		}
		wake = n.podUpdate(msg.Route.Resource, rv, &p)
	case msg.Route.Operation == message.OpDelete:
		n.mu.Lock()
		delete(n.objs, msg.Route.Resource)
		n.mu.Unlock()
	default:
		n.mu.Lock()
		n.objs[msg.Route.Resource] = rv
		n.mu.Unlock()
	}
	_ = n.send(ctx, conn, ack)
	if wake {
		n.sendNow(ctx)
	}
}

// podUpdate keeps a pod and queues what its state calls for: a Running status for a new pod, a
// deletion confirmation for a pod being deleted. It returns whether something was queued.
func (n *node) podUpdate(res string, rv uint64, p *corev1.Pod) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	pd, ok := n.pods[res]
	if !ok || pd.uid != p.UID {
		if !ok {
			n.s.stats.podsHeld.Add(1)
		}
		pd = &pod{uid: p.UID, received: time.Now()}
		n.pods[res] = pd
	}
	pd.rv = max(pd.rv, rv)
	if p.DeletionTimestamp != nil {
		if pd.deleting {
			return false
		}
		pd.deleting = true
		m, _ := message.New(srcEdged, "resource", message.OpDelete, res).WithContent(edgecontroller.PodDeleted{UID: p.UID})
		n.queueLocked(&pending{msg: m, kind: "poddelete", pod: res, uid: p.UID})
		return true
	}
	if pd.reported {
		return false
	}
	pd.reported = true
	n.s.stats.podsReported.Add(1)
	r, _ := message.ParseEdge(res)
	statusRes := message.Resource{Namespace: r.Namespace, Type: edgecontroller.TypePodStatus, Name: r.Name}
	m, err := message.New(srcEdged, "resource", message.OpUpdate, statusRes.Edge()).WithContent(
		edgecontroller.PodStatusReport{UID: p.UID, Name: p.Name, Status: n.runningStatus(p)})
	if err != nil {
		panic(err) // a PodStatus always encodes
	}
	n.queueLocked(&pending{msg: m, kind: "podstatus", pod: res, uid: p.UID})
	return true
}

// runningStatus is the status a kubelet reports for a pod whose containers all started.
func (n *node) runningStatus(p *corev1.Pod) corev1.PodStatus {
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	ip := n.ip()
	st := corev1.PodStatus{Phase: corev1.PodRunning, HostIP: ip, HostIPs: []corev1.HostIP{{IP: ip}},
		PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, StartTime: &now}
	for _, t := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	for _, c := range p.Spec.Containers {
		started := true
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image,
			ImageID: "hollow://" + c.Image, ContainerID: "hollow://" + string(p.UID) + "/" + c.Name, Ready: true, Started: &started,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}})
	}
	return st
}
