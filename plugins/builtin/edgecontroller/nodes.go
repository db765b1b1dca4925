package edgecontroller

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"strconv"
	"sync"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

var labelsEverything = labels.Everything()

// NodeReport is the content of a nodestatus update from the edge (written by the nodestatus module).
type NodeReport struct {
	NodeName      string            `json:"nodeName"`
	Capacity      map[string]string `json:"capacity"`
	KernelVersion string            `json:"kernelVersion"`
	OS            string            `json:"operatingSystem"`
	Architecture  string            `json:"architecture"`
	OSImage       string            `json:"osImage"`
	Addresses     []string          `json:"addresses"`
	BootTime      time.Time         `json:"bootTime"`
	ReportedAt    time.Time         `json:"reportedAt"`

	// Added later; an older edge leaves them out and the Node keeps what it had.
	Allocatable             map[string]string `json:"allocatable,omitempty"`
	Conditions              []ReportCondition `json:"conditions,omitempty"`
	MachineID               string            `json:"machineID,omitempty"`
	BootID                  string            `json:"bootID,omitempty"`
	ContainerRuntimeVersion string            `json:"containerRuntimeVersion,omitempty"`
	Version                 string            `json:"kedgeVersion,omitempty"`
}

// ReportCondition is a node condition the edge measured (MemoryPressure, DiskPressure, PIDPressure).
type ReportCondition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// reportedConditions are the condition types the edge may set; Ready stays the cloud's.
var reportedConditions = map[corev1.NodeConditionType]bool{
	corev1.NodeMemoryPressure: true, corev1.NodeDiskPressure: true, corev1.NodePIDPressure: true,
}

const leaseNamespace = "kube-node-lease"

// register creates the Node of an edge node on its first connection, or labels an existing Node of
// that name as an edge node (the node proved its name with a certificate the cluster CA issued).
func (m *Module) register(ctx context.Context, node string) error {
	if n, err := m.nodes.Get(node); err == nil {
		if _, ok := n.Labels[EdgeLabel]; ok {
			return nil // known from the informer: a reconnect (or a storm of them) costs the API nothing
		}
	}
	n, err := m.client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = m.client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name:   node,
			Labels: map[string]string{EdgeLabel: "", "kubernetes.io/hostname": node},
		}}, metav1.CreateOptions{FieldManager: "kedge-edgecontroller"})
		if err == nil {
			m.metrics.registered.Inc()
			m.host.Logger().Info("edge node registered", "node", node)
		}
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	}
	if err != nil {
		return err
	}
	if _, ok := n.Labels[EdgeLabel]; ok {
		return nil
	}
	patch := fmt.Appendf(nil, `{"metadata":{"labels":{%q:""}}}`, EdgeLabel)
	_, err = m.client.CoreV1().Nodes().Patch(ctx, node, "application/merge-patch+json", patch, metav1.PatchOptions{FieldManager: "kedge-edgecontroller"})
	return err
}

// reportNode writes an edge node's report into its Node status and renews its Lease.
func (m *Module) reportNode(ctx context.Context, node string, rep NodeReport) error {
	capacity, err := resourceList(node, "capacity", rep.Capacity)
	if err != nil {
		return err
	}
	if _, ok := capacity[corev1.ResourcePods]; !ok {
		capacity[corev1.ResourcePods] = resource.MustParse("110")
	}
	allocatable := capacity.DeepCopy()
	if rep.Allocatable != nil {
		if allocatable, err = resourceList(node, "allocatable", rep.Allocatable); err != nil {
			return err
		}
		for k, q := range capacity { // what the edge did not say is all allocatable
			if _, ok := allocatable[k]; !ok {
				allocatable[k] = q
			}
		}
	}
	for _, c := range rep.Conditions {
		if !reportedConditions[corev1.NodeConditionType(c.Type)] {
			return fmt.Errorf("node status of %s: condition %q is not one the edge reports (MemoryPressure, DiskPressure, PIDPressure)", node, c.Type)
		}
		if s := corev1.ConditionStatus(c.Status); s != corev1.ConditionTrue && s != corev1.ConditionFalse && s != corev1.ConditionUnknown {
			return fmt.Errorf("node status of %s: condition %s has status %q (want True, False or Unknown)", node, c.Type, c.Status)
		}
	}
	ep := m.streamEndpoint(ctx)
	st := m.nodeState(node)
	now := time.Now()
	m.mu.Lock()
	st.unknownSet = false
	m.mu.Unlock()
	apply := func(n *corev1.Node) {
		n.Status.Capacity = capacity
		n.Status.Allocatable = allocatable.DeepCopy()
		n.Status.NodeInfo.KernelVersion = rep.KernelVersion
		n.Status.NodeInfo.OperatingSystem = rep.OS
		n.Status.NodeInfo.Architecture = rep.Architecture
		n.Status.NodeInfo.OSImage = rep.OSImage
		addrs := []corev1.NodeAddress{}
		for _, ip := range rep.Addresses {
			addrs = append(addrs, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
		}
		n.Status.Addresses = append(addrs, corev1.NodeAddress{Type: corev1.NodeHostName, Address: node})
		if ep.Address != "" { // the API server reaches this node's kubelet API at cloudstream
			n.Status.Addresses = append(addrs, corev1.NodeAddress{Type: corev1.NodeHostName, Address: ep.Address})
			n.Status.DaemonEndpoints.KubeletEndpoint.Port = ep.Port
		}
		if rep.MachineID != "" {
			n.Status.NodeInfo.MachineID = rep.MachineID
		}
		if rep.BootID != "" {
			n.Status.NodeInfo.BootID = rep.BootID
		}
		if rep.ContainerRuntimeVersion != "" {
			n.Status.NodeInfo.ContainerRuntimeVersion = rep.ContainerRuntimeVersion
		}
		if rep.Version != "" {
			n.Status.NodeInfo.KubeletVersion = "kedge-" + rep.Version
		} else if n.Status.NodeInfo.KubeletVersion == "" {
			n.Status.NodeInfo.KubeletVersion = "kedge"
		}
		for _, c := range rep.Conditions {
			setCondition(n, corev1.NodeConditionType(c.Type), corev1.ConditionStatus(c.Status), c.Reason, c.Message)
		}
		setReady(n, corev1.ConditionTrue, "EdgecoreReady", "kedge edgecore is connected and reporting")
	}
	// A report that changes nothing the Node shows, for a node Ready in the informer's copy with a
	// heartbeat younger than nodeStatusUpdateFrequency, costs the API nothing (as the kubelet's
	// nodeStatusReportFrequency): liveness is the Lease's job.
	fp := rep.fingerprint(ep)
	m.mu.Lock()
	wroteRV, shown := st.statusRV, st.shown
	m.mu.Unlock()
	cur, curErr := m.nodes.Get(node)
	if curErr == nil && !m.statusDue(cur, wroteRV, shown == (shownReport{cur.ResourceVersion, fp}), apply, now) {
		m.mu.Lock()
		st.shown = shownReport{cur.ResourceVersion, fp}
		m.mu.Unlock()
		m.metrics.statusWrites.WithLabelValues("skipped").Inc()
	} else {
		// The informer's copy, when it is at least as new as this cloudcore's last write, is the base of
		// the update (no read first); a conflict reads the Node and tries again.
		base := cur
		if curErr != nil || (wroteRV != "" && cur.ResourceVersion != wroteRV) {
			base = nil
		}
		err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if base != nil {
				n := base.DeepCopy()
				base = nil
				apply(n)
				updated, err := m.client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{FieldManager: "kedge-edgecontroller"})
				if err == nil {
					m.mu.Lock()
					st.statusRV, st.shown = updated.ResourceVersion, shownReport{updated.ResourceVersion, fp}
					m.mu.Unlock()
				}
				if !apierrors.IsNotFound(err) {
					return err
				}
			}
			n, err := m.client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				if err := m.register(ctx, node); err != nil {
					return err
				}
				n, err = m.client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			}
			if err != nil {
				return err
			}
			apply(n)
			updated, err := m.client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{FieldManager: "kedge-edgecontroller"})
			if err == nil {
				m.mu.Lock()
				st.statusRV, st.shown = updated.ResourceVersion, shownReport{updated.ResourceVersion, fp}
				m.mu.Unlock()
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("node status of %s: %w", node, err)
		}
		m.metrics.statusWrites.WithLabelValues("written").Inc()
	}
	return nil
}

// shownReport says that the Node at resourceVersion rv shows the report with fingerprint fp (it was
// written from it, or compared equal to it).
type shownReport struct {
	rv string
	fp uint64
}

// fingerprint hashes what a node's status is made of: the report but for its time (each report has
// its own), and the stream endpoint.
func (r NodeReport) fingerprint(ep streamEndpoint) uint64 {
	// One buffer hashed once, maps summed entry by entry (order-free, no sorting): a report a node
	// sends every few seconds costs no allocation here.
	var buf [512]byte
	b := buf[:0]
	for _, s := range [...]string{r.NodeName, r.KernelVersion, r.OS, r.Architecture, r.OSImage, r.MachineID, r.BootID,
		r.ContainerRuntimeVersion, r.Version, ep.Address} {
		b = appendField(b, s)
	}
	b = strconv.AppendInt(b, int64(ep.Port), 10)
	b = strconv.AppendInt(append(b, 0), r.BootTime.Unix(), 10)
	b = strconv.AppendInt(append(b, 0), int64(r.BootTime.Nanosecond()), 10)
	b = appendMap(append(b, 0), r.Capacity)
	b = strconv.AppendBool(b, r.Allocatable != nil)
	b = appendMap(b, r.Allocatable)
	b = strconv.AppendInt(b, int64(len(r.Addresses)), 10)
	for _, a := range r.Addresses {
		b = appendField(b, a)
	}
	b = strconv.AppendInt(b, int64(len(r.Conditions)), 10)
	for _, c := range r.Conditions {
		b = appendField(appendField(appendField(appendField(b, c.Type), c.Status), c.Reason), c.Message)
	}
	return maphash.Bytes(fingerprintSeed, b)
}

var fingerprintSeed = maphash.MakeSeed()

func appendField(b []byte, s string) []byte { return append(append(b, s...), 0) }

// appendMap appends m's size and the sum of its entries' hashes (the same whatever the order).
func appendMap(b []byte, m map[string]string) []byte {
	var h maphash.Hash
	h.SetSeed(fingerprintSeed)
	var sum uint64
	for k, v := range m {
		h.Reset()
		h.WriteString(k)
		h.WriteByte(0)
		h.WriteString(v)
		sum += h.Sum64()
	}
	return binary.LittleEndian.AppendUint64(strconv.AppendInt(b, int64(len(m)), 10), sum)
}

// statusDue says whether a report must be written to the Node: the informer's copy cur is not
// Ready=True, its Ready heartbeat is nodeStatusUpdateFrequency old, or the report changes it. A copy
// older than this cloudcore's last write (wroteRV; the informer lags behind writes) is no basis for
// skipping: comparing with it could drop a change — so it writes. shown says cur is known to show
// this very report already (the comparison, a deep copy and a deep comparison of the Node status, is
// skipped: most reports of an idle fleet repeat the last one).
func (m *Module) statusDue(cur *corev1.Node, wroteRV string, shown bool, apply func(*corev1.Node), now time.Time) bool {
	if wroteRV != "" && cur.ResourceVersion != wroteRV {
		return true
	}
	var ready *corev1.NodeCondition
	for i := range cur.Status.Conditions {
		if cur.Status.Conditions[i].Type == corev1.NodeReady {
			ready = &cur.Status.Conditions[i]
		}
	}
	if ready == nil || ready.Status != corev1.ConditionTrue || now.Sub(ready.LastHeartbeatTime.Time) >= m.NodeStatusUpdateFrequency {
		return true
	}
	if shown {
		return false
	}
	want := cur.DeepCopy()
	apply(want)
	for i := range want.Status.Conditions { // heartbeats move with every write; they are not a change
		for _, c := range cur.Status.Conditions {
			if c.Type == want.Status.Conditions[i].Type {
				want.Status.Conditions[i].LastHeartbeatTime = c.LastHeartbeatTime
				want.Status.Conditions[i].LastTransitionTime = c.LastTransitionTime
			}
		}
	}
	return !equality.Semantic.DeepEqual(cur.Status, want.Status)
}

// streamModule is the cloud module that serves the kubelet API of edge nodes (cloudstream).
const streamModule = "cloudstream"

// streamEndpoint is where the kube-apiserver reaches the kubelet API of edge nodes: cloudstream's
// advertised address and port, asked of cloudstream itself (its advertiseAddress setting), so the
// setting lives in one place. No cloudstream running, or no advertiseAddress: the zero value, and
// node addresses stay as the edge reports them.
func (m *Module) streamEndpoint(ctx context.Context) streamEndpoint {
	if c := m.endpoint.Load(); c != nil && time.Since(c.at) < streamEndpointTTL {
		return c.ep
	}
	ep, ok := m.askStreamEndpoint(ctx)
	if ok {
		m.endpoint.Store(&cachedEndpoint{ep: ep, at: time.Now()})
	}
	return ep
}

// streamEndpointTTL is how long cloudstream's answer is used before it is asked again: every node
// reports every few seconds, and the answer changes only with cloudstream's settings.
const streamEndpointTTL = 30 * time.Second

type cachedEndpoint struct {
	ep streamEndpoint
	at time.Time
}

// askStreamEndpoint asks cloudstream; ok is false when it gave no answer worth keeping.
func (m *Module) askStreamEndpoint(ctx context.Context) (streamEndpoint, bool) {
	q := message.New(Name, "stream", message.OpQuery, streamEndpointResource)
	resp, err := m.host.SendSync(ctx, streamModule, q, 5*time.Second)
	if err != nil {
		if !errors.Is(err, sdk.ErrUnknownModule) {
			m.host.Logger().Warn("stream endpoint not known; node addresses left as reported", "err", err)
			return streamEndpoint{}, false
		}
		// No cloudstream: kept when the host says it runs none (not one being swapped or started).
		sw, ok := m.host.(sdk.StartWaiter)
		return streamEndpoint{}, ok && !sw.Planned(streamModule)
	}
	var ep streamEndpoint
	if resp.Route.Operation != message.OpError && resp.DecodeContent(&ep) == nil && ep.Address == "" {
		return streamEndpoint{}, true // cloudstream runs without advertiseAddress: off
	}
	if resp.Route.Operation == message.OpError || ep.Port <= 0 || ep.Port > 65535 {
		m.host.Logger().Warn("cloudstream answered no usable stream endpoint", "content", string(resp.Content))
		return streamEndpoint{}, false
	}
	return ep, true
}

// streamEndpointResource and streamEndpoint are cloudstream's query and answer (cloudstream.Endpoint).
const streamEndpointResource = "streamendpoint"

type streamEndpoint struct {
	Address string `json:"address"`
	Port    int32  `json:"port"`
}

// resourceList parses a map of quantities from the edge's report.
func resourceList(node, field string, in map[string]string) (corev1.ResourceList, error) {
	out := corev1.ResourceList{}
	for k, v := range in {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return nil, fmt.Errorf("node status of %s: %s %s=%q is not a quantity: %w", node, field, k, v, err)
		}
		out[corev1.ResourceName(k)] = q
	}
	return out, nil
}

// setReady sets the Ready condition, moving its transition time only when the status changes.
func setReady(n *corev1.Node, status corev1.ConditionStatus, reason, msg string) {
	setCondition(n, corev1.NodeReady, status, reason, msg)
}

// setCondition sets one node condition, moving its transition time only when the status changes;
// the heartbeat moves with every report that is not Unknown.
func setCondition(n *corev1.Node, typ corev1.NodeConditionType, status corev1.ConditionStatus, reason, msg string) {
	now := metav1.Now()
	for i := range n.Status.Conditions {
		c := &n.Status.Conditions[i]
		if c.Type != typ {
			continue
		}
		if c.Status != status {
			c.LastTransitionTime = now
		}
		c.Status, c.Reason, c.Message = status, reason, msg
		if status != corev1.ConditionUnknown {
			c.LastHeartbeatTime = now
		}
		return
	}
	n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: typ, Status: status,
		Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now})
}

// renewLeases renews the Lease of every Kedge edge node connected to this replica once it is
// leaseRenewInterval old. The link is the node's liveness, as the kubelet's lease loop is its: cloudhub
// drops a link whose heartbeats stop, and a node whose link is down is not renewed (the leader marks
// it Unknown after the grace period). Reports carry status, not liveness, so an idle edge may report
// rarely (nodestatus unchangedInterval) without its Lease expiring. KubeEdge's edgecore renews its
// own Lease; this leaves it alone. At most Workers renewals are in flight; a slow API server delays
// the next ones instead of piling them up.
func (m *Module) renewLeases(ctx context.Context) {
	tick := time.NewTicker(max(min(m.LeaseRenewInterval/4, 5*time.Second), 50*time.Millisecond))
	defer tick.Stop()
	slots := make(chan struct{}, max(m.Workers, 1))
	var wg sync.WaitGroup
	defer wg.Wait()
	var due []string
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		due = m.leasesDue(due[:0], time.Now())
		for _, node := range due {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			st := m.nodeState(node)
			wg.Go(func() {
				defer func() { <-slots }()
				if err := m.renewLease(ctx, node, st, time.Now()); err != nil && ctx.Err() == nil {
					m.host.Logger().Warn("lease not renewed", "node", node, "err", err)
				}
				m.mu.Lock()
				st.renewing = false
				m.mu.Unlock()
			})
		}
	}
}

// leasesDue appends the connected Kedge nodes whose Lease is due (or unknown to this replica) and
// marks them renewing.
func (m *Module) leasesDue(due []string, now time.Time) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, st := range m.state {
		if st.Connected && !st.KubeEdge && !st.renewing && now.Sub(st.leaseRenewed) >= m.LeaseRenewInterval {
			st.renewing = true
			due = append(due, name)
		}
	}
	return due
}

// renewLease keeps kube-node-lease/<node> fresh, as the kubelet does; it is owned by the Node. It
// writes at most once per leaseRenewInterval per node, as one merge patch of renewTime (no read, and no
// copy of the Lease kept per node: only when it was renewed). The first renewal after this cloudcore
// started takes the renewTime from the Lease informer and leaves a fresh Lease alone, so a reconnect
// storm is neither a read storm nor a write storm.
func (m *Module) renewLease(ctx context.Context, node string, st *nodeState, now time.Time) error {
	secs := int32(m.LeaseDuration / time.Second)
	m.mu.Lock()
	renewed := st.leaseRenewed
	m.mu.Unlock()
	if renewed.IsZero() && m.leaseLister != nil {
		if l, err := m.leaseLister.Leases(leaseNamespace).Get(node); err == nil && l.Spec.RenewTime != nil &&
			l.Spec.LeaseDurationSeconds != nil && *l.Spec.LeaseDurationSeconds == secs {
			renewed = l.Spec.RenewTime.Time
		}
	}
	if now.Sub(renewed) < m.LeaseRenewInterval {
		m.mu.Lock()
		if st.leaseRenewed.IsZero() {
			st.leaseRenewed = renewed
		}
		m.mu.Unlock()
		m.metrics.leaseWrites.WithLabelValues("skipped").Inc()
		return nil
	}
	leases := m.client.CoordinationV1().Leases(leaseNamespace)
	micro := metav1.NewMicroTime(now)
	done := func() error {
		m.mu.Lock()
		st.leaseRenewed = now
		m.mu.Unlock()
		m.metrics.leaseWrites.WithLabelValues("written").Inc()
		return nil
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"renewTime": micro, "leaseDurationSeconds": secs}})
	if err != nil {
		return fmt.Errorf("lease of %s: %w", node, err)
	}
	_, err = leases.Patch(ctx, node, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kedge-edgecontroller"})
	if err == nil {
		return done()
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("lease of %s: %w", node, err)
	}
	var uid types.UID
	if n, err := m.nodes.Get(node); err == nil {
		uid = n.UID
	} else {
		n, err := m.client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("lease of %s: %w", node, err)
		}
		uid = n.UID
	}
	holder := node
	_, err = leases.Create(ctx, &coordv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: node, Namespace: leaseNamespace, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "v1", Kind: "Node", Name: node, UID: uid,
		}}},
		Spec: coordv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs, RenewTime: &micro},
	}, metav1.CreateOptions{FieldManager: "kedge-edgecontroller"})
	if apierrors.IsNotFound(err) { // the namespace is made by the API server's own controllers; be sure
		_, _ = m.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: leaseNamespace}}, metav1.CreateOptions{})
	}
	if err == nil {
		return done()
	}
	if apierrors.IsAlreadyExists(err) {
		return nil // created meanwhile (another replica): renewed on the next report
	}
	return fmt.Errorf("lease of %s: %w", node, err)
}

// monitorNodes turns the Ready condition of an edge node whose Lease nobody renewed for the grace
// period to Unknown, once per silence (as the node lifecycle controller does for kubelets) — on the
// leader only, whichever replica held the node (see leader.go).
func (m *Module) monitorNodes(ctx context.Context) {
	tick := time.NewTicker(max(min(m.NodeGracePeriod/4, 5*time.Second), 50*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		m.refreshTokens()
		if !m.elector.Leading() {
			continue
		}
		for _, name := range m.staleNodes() {
			if !m.elector.Leading() {
				break // lost the Lease meanwhile: the new leader decides
			}
			m.noteMarked(name, true)
			if err := m.markUnknown(ctx, name); err != nil {
				m.host.Logger().Warn("node status not set to Unknown", "node", name, "err", err)
				m.noteMarked(name, false) // try again next tick
				continue
			}
			m.metrics.unknown.Inc()
			m.host.Logger().Warn("edge node silent past the grace period: Ready is Unknown", "node", name, "grace", m.NodeGracePeriod)
		}
	}
}

// markConnected turns Ready back to True for a node that connects while its Node says Unknown (it
// was marked after a disconnection outlasted the grace period). The pressure conditions stay
// Unknown until its next report says what they are.
func (m *Module) markConnected(ctx context.Context, node string) error {
	if n, err := m.nodes.Get(node); err == nil && readyIs(n, corev1.ConditionTrue) {
		return nil // a reconnect within the grace period (a storm of them) costs the API nothing
	}
	return m.writeStatus(ctx, node, func(n *corev1.Node) bool {
		if !readyIs(n, corev1.ConditionUnknown) {
			return false // no Ready yet (its first report sets it), or Ready already
		}
		setReady(n, corev1.ConditionTrue, "EdgecoreReady", "kedge edgecore is connected and reporting")
		return true
	})
}

func readyIs(n *corev1.Node, s corev1.ConditionStatus) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == s
		}
	}
	return false
}

func (m *Module) markUnknown(ctx context.Context, node string) error {
	return m.writeStatus(ctx, node, func(n *corev1.Node) bool {
		setReady(n, corev1.ConditionUnknown, "NodeStatusUnknown", "edge node disconnected from cloudcore; its edgecore keeps running its pods offline")
		for _, c := range n.Status.Conditions { // as the node lifecycle controller does: what is not reported is not known
			if reportedConditions[c.Type] {
				setCondition(n, c.Type, corev1.ConditionUnknown, "NodeStatusUnknown", "edge node disconnected from cloudcore")
			}
		}
		return true
	})
}

// writeStatus reads node's Node, lets change edit its status (false: nothing to write) and writes it,
// again on a conflict; a missing Node is nothing to do.
func (m *Module) writeStatus(ctx context.Context, node string, change func(*corev1.Node) bool) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := m.client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil || !change(n) {
			return err
		}
		updated, err := m.client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{FieldManager: "kedge-edgecontroller"})
		if err == nil {
			// The next report compares the informer's copy with this write: a copy from before it
			// (as the informer may still hold it) must not make that report look redundant.
			st := m.nodeState(node)
			m.mu.Lock()
			st.statusRV = updated.ResourceVersion
			m.mu.Unlock()
		}
		return err
	})
}
