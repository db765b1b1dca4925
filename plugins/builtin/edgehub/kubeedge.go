package edgehub

import (
	"encoding/json"
	"fmt"
	"maps"
	"runtime"
	"time"

	"github.com/kedge-io/kedge/sdk/message"
)

// The KubeEdge cloud adapter: what changes about Kedge's upstream messages when the cloud is KubeEdge's
// cloudcore (the JSON lane), kept in this one place. KubeEdge's cloud expects the edge to act as its
// edged (a kubelet) does:
//
//   - the edge registers its own Node: an insert of <ns>/node/<name> (group meta, source edged) whose
//     content is the whole Node, labelled node-role.kubernetes.io/edge (KubeEdge's cloud sends pods only
//     to nodes with that label), before any status of it; until then cloudcore answers every status
//     report with "node <name> not found";
//   - node status is an update of <ns>/nodestatus/<name> whose content is KubeEdge's NodeStatusRequest,
//     {"UID", "Status": a Kubernetes NodeStatus, "ExtendResources"}, replacing the Node's status: so it
//     carries the Ready condition, which KubeEdge's cloud leaves to the edge (Kedge's own cloud sets
//     Ready itself from the reports).
//
// Kedge's nodestatus module reports its own shape (nodeReport); this adapter turns it into the two
// messages above. Everything else passes unchanged: Kedge's pod status ({"uid","name","status"} on
// <ns>/podstatus/<name>) is already KubeEdge's PodStatusRequest, and queries, pods and ConfigMaps
// travel in KubeEdge's paths on both lanes.

// nodeReport is the content of the nodestatus module's report (nodestatus.Status); fields are only
// ever added there, so unknown ones are ignored here.
type nodeReport struct {
	NodeName                string            `json:"nodeName"`
	Capacity                map[string]string `json:"capacity"`
	Allocatable             map[string]string `json:"allocatable"`
	KernelVersion           string            `json:"kernelVersion"`
	OS                      string            `json:"operatingSystem"`
	Architecture            string            `json:"architecture"`
	OSImage                 string            `json:"osImage"`
	Addresses               []string          `json:"addresses"`
	MachineID               string            `json:"machineID"`
	BootID                  string            `json:"bootID"`
	ContainerRuntimeVersion string            `json:"containerRuntimeVersion"`
	Version                 string            `json:"kedgeVersion"`
	Conditions              []struct {
		Type    string `json:"type"`
		Status  string `json:"status"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	} `json:"conditions"`
}

// nodeStatusRequest is KubeEdge's content of a nodestatus update (its edgeapi.NodeStatusRequest).
type nodeStatusRequest struct {
	UID             string         `json:"UID"`
	Status          nodeStatus     `json:"Status"`
	ExtendResources map[string]any `json:"ExtendResources"`
}

// kubeEdgeNodeSource is the module KubeEdge's cloud sees as the sender of node registration and status.
const kubeEdgeNodeSource = "edged"

// kubeEdgeCloud is the adapter for one connection to a KubeEdge cloudcore.
type kubeEdgeCloud struct {
	node string
	// registered: cloudcore answered this connection's Node insert (created, or already there).
	registered bool
	// insertID is the ID of the Node insert awaiting its answer.
	insertID string
	// since keeps each condition's last transition: type -> status and when it became that.
	since map[string]condSince
}

type condSince struct {
	status string
	at     kubeTime
}

func newKubeEdgeCloud(node string) *kubeEdgeCloud {
	return &kubeEdgeCloud{node: node, since: map[string]condSince{}}
}

// isNodeStatus reports whether msg is the nodestatus module's report of this node.
func (k *kubeEdgeCloud) isNodeStatus(msg message.Message) bool {
	if msg.Route.Operation != message.OpUpdate {
		return false
	}
	r, err := message.ParseEdge(msg.Route.Resource)
	return err == nil && r.Type == "nodestatus" && r.Name == k.node
}

// translate returns what to send KubeEdge's cloudcore for msg: msg itself, or for a node status report
// the Node insert (until cloudcore answered one on this connection) or KubeEdge's nodestatus update.
func (k *kubeEdgeCloud) translate(msg message.Message, now time.Time) (message.Message, error) {
	if !k.isNodeStatus(msg) {
		return msg, nil
	}
	var rep nodeReport
	if err := json.Unmarshal(msg.Content, &rep); err != nil {
		return message.Message{}, fmt.Errorf("node status report of %s for KubeEdge's cloud: %w", k.node, err)
	}
	st, err := k.nodeStatus(rep, now)
	if err != nil {
		return message.Message{}, err
	}
	r, _ := message.ParseEdge(msg.Route.Resource)
	if !k.registered {
		n := node{
			Kind: "Node", APIVersion: "v1",
			Metadata: objectMeta{Name: k.node, Labels: map[string]string{
				"kubernetes.io/hostname": k.node, "kubernetes.io/os": osOf(rep), "kubernetes.io/arch": archOf(rep),
				"beta.kubernetes.io/os": osOf(rep), "beta.kubernetes.io/arch": archOf(rep),
				"node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/agent": "",
			}},
			Status: st,
		}
		ins, err := message.New(kubeEdgeNodeSource, "meta", message.OpInsert, message.Resource{Namespace: r.Namespace, Type: "node", Name: k.node}.Edge()).WithContent(n)
		if err != nil {
			return message.Message{}, err
		}
		ins.Header.Sync = true
		k.insertID = ins.Header.ID
		return ins, nil
	}
	up, err := message.New(kubeEdgeNodeSource, "meta", message.OpUpdate, msg.Route.Resource).WithContent(nodeStatusRequest{Status: st})
	if err != nil {
		return message.Message{}, err
	}
	up.Header.ID = msg.Header.ID
	return up, nil
}

// answered takes cloudcore's answer to a message this adapter sent; true if it was the Node insert
// (then the Node exists, created now or before, and status updates follow).
func (k *kubeEdgeCloud) answered(resp message.Message) bool {
	if k.insertID == "" || resp.Header.ParentID != k.insertID {
		return false
	}
	k.insertID, k.registered = "", true
	return true
}

// nodeStatus is the Kubernetes NodeStatus of a report, with the Ready condition KubeEdge's edged
// would post: the edge is up and reporting.
func (k *kubeEdgeCloud) nodeStatus(rep nodeReport, now time.Time) (nodeStatus, error) {
	capacity, err := quantities(k.node, "capacity", rep.Capacity)
	if err != nil {
		return nodeStatus{}, err
	}
	if _, ok := capacity["pods"]; !ok {
		capacity["pods"] = "110"
	}
	allocatable := maps.Clone(capacity)
	if rep.Allocatable != nil {
		a, err := quantities(k.node, "allocatable", rep.Allocatable)
		if err != nil {
			return nodeStatus{}, err
		}
		maps.Copy(allocatable, a)
	}
	kubelet := "kedge"
	if rep.Version != "" {
		kubelet = "kedge-" + rep.Version
	}
	st := nodeStatus{
		Capacity: capacity, Allocatable: allocatable, Phase: "Running",
		NodeInfo: nodeSystemInfo{
			MachineID: rep.MachineID, BootID: rep.BootID, KernelVersion: rep.KernelVersion, OSImage: rep.OSImage,
			ContainerRuntimeVersion: rep.ContainerRuntimeVersion, KubeletVersion: kubelet,
			OperatingSystem: osOf(rep), Architecture: archOf(rep),
		},
	}
	for _, ip := range rep.Addresses {
		st.Addresses = append(st.Addresses, nodeAddress{Type: "InternalIP", Address: ip})
	}
	st.Addresses = append(st.Addresses, nodeAddress{Type: "Hostname", Address: k.node})
	beat := kubeTime(now.Truncate(time.Second))
	cond := func(t, status, reason, msg string) {
		prev, ok := k.since[t]
		if !ok || prev.status != status {
			prev = condSince{status: status, at: beat}
			k.since[t] = prev
		}
		st.Conditions = append(st.Conditions, nodeCondition{Type: t, Status: status,
			LastHeartbeatTime: beat, LastTransitionTime: prev.at, Reason: reason, Message: msg})
	}
	for _, c := range rep.Conditions {
		if s := c.Status; s != "True" && s != "False" && s != "Unknown" {
			return nodeStatus{}, fmt.Errorf("node status report of %s: condition %s has status %q (want True, False or Unknown)", k.node, c.Type, c.Status)
		}
		cond(c.Type, c.Status, c.Reason, c.Message)
	}
	cond("Ready", "True", "KubeletReady", "kedge edgecore is posting ready status")
	return st, nil
}

func quantities(node, field string, in map[string]string) (map[string]string, error) {
	out := map[string]string{}
	for name, v := range in {
		if !quantityRE.MatchString(v) {
			return nil, fmt.Errorf("node status report of %s: %s %s=%q is not a quantity (a number with an optional suffix: m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent e<n>)", node, field, name, v)
		}
		out[name] = v
	}
	return out, nil
}

func osOf(rep nodeReport) string {
	if rep.OS != "" {
		return rep.OS
	}
	return runtime.GOOS
}

func archOf(rep nodeReport) string {
	if rep.Architecture != "" {
		return rep.Architecture
	}
	return runtime.GOARCH
}
