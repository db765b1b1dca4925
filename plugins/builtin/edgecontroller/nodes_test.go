package edgecontroller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/plugins/builtin/edgecontroller"
	"github.com/kedge-io/kedge/sdk/message"
	"github.com/kedge-io/kedge/test/ctrlrig"
)

// fullReport is what a current nodestatus sends: allocatable, the pressure conditions and node info.
func fullReport(node string, memory, disk, pid string) edgecontroller.NodeReport {
	cond := func(typ, status, reason string) edgecontroller.ReportCondition {
		return edgecontroller.ReportCondition{Type: typ, Status: status, Reason: reason, Message: "edge says " + reason}
	}
	reason := func(status, ok, bad string) string {
		if status == "True" {
			return bad
		}
		return ok
	}
	return edgecontroller.NodeReport{NodeName: node, OS: "linux", Architecture: "amd64", KernelVersion: "6.1",
		Capacity:    map[string]string{"cpu": "2", "memory": "2Gi", "pods": "20", "ephemeral-storage": "10Gi"},
		Allocatable: map[string]string{"cpu": "1900m", "memory": "1792Mi", "pods": "20", "ephemeral-storage": "9Gi"},
		Conditions: []edgecontroller.ReportCondition{
			cond("MemoryPressure", memory, reason(memory, "EdgeHasSufficientMemory", "EdgeHasMemoryPressure")),
			cond("DiskPressure", disk, reason(disk, "EdgeHasNoDiskPressure", "EdgeHasDiskPressure")),
			cond("PIDPressure", pid, reason(pid, "EdgeHasSufficientPID", "EdgeHasPIDPressure")),
		},
		MachineID: "4f1d0c0e9a", BootID: "0d6c1b8e", ContainerRuntimeVersion: "containerd://1.6.20", Version: "v1.2.3"}
}

func (r *rig) report(node string, rep edgecontroller.NodeReport) reportReply {
	r.T.Helper()
	resp := r.request(node, message.OpUpdate, "default", "nodestatus", node, rep)
	out := reportReply{op: resp.Route.Operation, content: string(resp.Content)}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(resp.Content, &e) == nil && e.Error != "" {
		out.content = e.Error
	}
	return out
}

type reportReply struct{ op, content string }

func getNode(t *testing.T, name string) *corev1.Node {
	t.Helper()
	n, err := ctrlrig.Env.Client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func condition(n *corev1.Node, typ corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == typ {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

func TestNodeReportSetsAllocatablePressureConditionsAndNodeInfo(t *testing.T) {
	r := newRig(t)
	node := r.Node("n1")
	r.join(node)
	if resp := r.report(node, fullReport(node, "False", "True", "False")); resp.op == message.OpError {
		t.Fatalf("report refused: %s", resp.content)
	}
	n := getNode(t, node)
	for name, want := range map[corev1.ResourceName]string{"cpu": "1900m", "memory": "1792Mi", "pods": "20", "ephemeral-storage": "9Gi"} {
		if got := n.Status.Allocatable[name]; got.Cmp(resource.MustParse(want)) != 0 {
			t.Errorf("allocatable %s = %s, want %s", name, got.String(), want)
		}
	}
	if got := n.Status.Capacity[corev1.ResourceEphemeralStorage]; got.Cmp(resource.MustParse("10Gi")) != 0 {
		t.Errorf("capacity ephemeral-storage = %s", got.String())
	}
	for typ, want := range map[corev1.NodeConditionType][2]string{
		corev1.NodeMemoryPressure: {"False", "EdgeHasSufficientMemory"},
		corev1.NodeDiskPressure:   {"True", "EdgeHasDiskPressure"},
		corev1.NodePIDPressure:    {"False", "EdgeHasSufficientPID"},
		corev1.NodeReady:          {"True", "EdgecoreReady"},
	} {
		c := condition(n, typ)
		if c == nil || string(c.Status) != want[0] || c.Reason != want[1] || c.LastTransitionTime.IsZero() || c.LastHeartbeatTime.IsZero() {
			t.Errorf("condition %s = %+v, want %s %s with times", typ, c, want[0], want[1])
		}
	}
	info := n.Status.NodeInfo
	if info.MachineID != "4f1d0c0e9a" || info.BootID != "0d6c1b8e" || info.ContainerRuntimeVersion != "containerd://1.6.20" || info.KubeletVersion != "kedge-v1.2.3" {
		t.Errorf("node info = %+v", info)
	}
}

func TestPressureConditionTransitionTimeMovesOnlyWhenItsStatusChanges(t *testing.T) {
	old := metav1.NewTime(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC))
	tests := []struct {
		name       string
		next       string // MemoryPressure status of the second report (the first is False)
		wantMoved  bool
		wantReason string
	}{
		{"same status keeps the transition time", "False", false, "EdgeHasSufficientMemory"},
		{"a new status moves the transition time", "True", true, "EdgeHasMemoryPressure"},
	}
	r := newRig(t) // one rig (its namespace is named after the test), a node per case
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node := r.Node(fmt.Sprint("n", i))
			r.join(node)
			if resp := r.report(node, fullReport(node, "False", "False", "False")); resp.op == message.OpError {
				t.Fatalf("report refused: %s", resp.content)
			}
			// Age the transition time so a move is visible without waiting for the clock.
			n := getNode(t, node)
			c := condition(n, corev1.NodeMemoryPressure)
			c.LastTransitionTime = old
			if _, err := ctrlrig.Env.Client.CoreV1().Nodes().UpdateStatus(context.Background(), n, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			if resp := r.report(node, fullReport(node, tt.next, "False", "False")); resp.op == message.OpError {
				t.Fatalf("report refused: %s", resp.content)
			}
			c = condition(getNode(t, node), corev1.NodeMemoryPressure)
			if moved := !c.LastTransitionTime.Equal(&old); moved != tt.wantMoved || c.Reason != tt.wantReason || string(c.Status) != tt.next {
				t.Fatalf("MemoryPressure = %+v; transition moved %v, want %v", c, moved, tt.wantMoved)
			}
			if !c.LastHeartbeatTime.After(old.Time) {
				t.Fatalf("heartbeat %s did not move", c.LastHeartbeatTime)
			}
		})
	}
}

func TestReportWithoutTheNewFieldsKeepsConditionsAndAllocatableIsCapacity(t *testing.T) {
	r := newRig(t)
	node := r.Node("n1")
	r.join(node)
	if resp := r.report(node, fullReport(node, "True", "False", "False")); resp.op == message.OpError {
		t.Fatalf("report refused: %s", resp.content)
	}
	r.join(node) // an older edge: capacity only
	n := getNode(t, node)
	if c := condition(n, corev1.NodeMemoryPressure); c == nil || c.Status != corev1.ConditionTrue {
		t.Errorf("MemoryPressure after an older report = %+v, want it kept", c)
	}
	if got := n.Status.Allocatable[corev1.ResourceMemory]; got.Cmp(resource.MustParse("2Gi")) != 0 {
		t.Errorf("allocatable memory = %s, want the capacity 2Gi", got.String())
	}
	if n.Status.NodeInfo.ContainerRuntimeVersion != "containerd://1.6.20" {
		t.Errorf("runtime version lost: %+v", n.Status.NodeInfo)
	}
}

func TestDisconnectedNodeTurnsPressureConditionsUnknownToo(t *testing.T) {
	r := newRig(t)
	node := r.Node("n1")
	r.join(node)
	if resp := r.report(node, fullReport(node, "False", "False", "False")); resp.op == message.OpError {
		t.Fatalf("report refused: %s", resp.content)
	}
	r.Event(node, message.OpDisconnected, nil)
	eventually(t, "pressure conditions Unknown", func() (bool, string) {
		n, err := ctrlrig.Env.Client.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		var got []string
		for _, typ := range []corev1.NodeConditionType{corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure} {
			if c := condition(n, typ); c == nil || c.Status != corev1.ConditionUnknown {
				got = append(got, string(typ))
			}
		}
		return len(got) == 0, "not Unknown: " + strings.Join(got, ",")
	})
}

func TestBadNodeReportsAreRefusedNamingTheField(t *testing.T) {
	tests := []struct {
		name string
		edit func(rep *edgecontroller.NodeReport)
		want string
	}{
		{"allocatable not a quantity", func(rep *edgecontroller.NodeReport) { rep.Allocatable["memory"] = "lots" }, `allocatable memory="lots"`},
		{"a condition the edge does not own", func(rep *edgecontroller.NodeReport) { rep.Conditions[0].Type = "Ready" }, `condition "Ready"`},
		{"a condition status that is not True/False/Unknown", func(rep *edgecontroller.NodeReport) { rep.Conditions[1].Status = "maybe" }, `"maybe"`},
	}
	r := newRig(t)
	node := r.Node("n1")
	r.join(node)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := fullReport(node, "False", "False", "False")
			tt.edit(&rep)
			resp := r.report(node, rep)
			if resp.op != message.OpError || !strings.Contains(resp.content, tt.want) {
				t.Fatalf("answer %s %s, want an error naming %s", resp.op, resp.content, tt.want)
			}
		})
	}
}
