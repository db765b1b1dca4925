package edgehub

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kedge-io/kedge/sdk/message"
)

func report(t *testing.T, node string, rep map[string]any) message.Message {
	t.Helper()
	msg, err := message.New("metamanager", "meta", message.OpUpdate, "default/nodestatus/"+node).WithContent(rep)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// Under KubeEdge's cloudcore a node status report becomes the Node insert (labelled as an edge node,
// Ready) until cloudcore answers it, then KubeEdge's nodestatus update; other messages pass unchanged.
func TestKubeEdgeCloudRegistersTheNodeFirstThenSendsKubeEdgeNodeStatus(t *testing.T) {
	k := newKubeEdgeCloud("n1")
	rep := map[string]any{"nodeName": "n1", "capacity": map[string]string{"cpu": "2", "memory": "1Gi"},
		"kernelVersion": "6.1", "operatingSystem": "linux", "architecture": "amd64", "addresses": []string{"10.0.0.5"},
		"conditions": []map[string]string{{"type": "MemoryPressure", "status": "False", "reason": "EnoughMemory"}}}
	now := time.Unix(1_800_000_000, 0)

	ins, err := k.translate(report(t, "n1", rep), now)
	if err != nil {
		t.Fatal(err)
	}
	if ins.Route.Operation != message.OpInsert || ins.Route.Resource != "default/node/n1" || ins.Route.Group != "meta" || !ins.Header.Sync {
		t.Fatalf("first report became %s, want a sync insert of default/node/n1 in group meta", ins.String())
	}
	var n corev1.Node
	if err := json.Unmarshal(ins.Content, &n); err != nil {
		t.Fatal(err)
	}
	if _, ok := n.Labels["node-role.kubernetes.io/edge"]; !ok || n.Name != "n1" {
		t.Errorf("inserted node %q labels %v: want n1 with node-role.kubernetes.io/edge", n.Name, n.Labels)
	}
	if !ready(n.Status) || n.Status.Capacity.Cpu().String() != "2" || n.Status.NodeInfo.KernelVersion != "6.1" {
		t.Errorf("inserted node status %+v: want Ready, cpu 2, kernel 6.1", n.Status)
	}

	// Not yet answered: the next report registers again rather than updating a node that may not exist.
	again, _ := k.translate(report(t, "n1", rep), now.Add(time.Second))
	if again.Route.Operation != message.OpInsert {
		t.Fatalf("report before cloudcore answered the insert became %s, want another insert", again.String())
	}
	if k.answered(message.Message{Header: message.Header{ParentID: ins.Header.ID}}) {
		t.Fatal("an answer to the superseded insert counted as the registration")
	}
	if !k.answered(message.Message{Header: message.Header{ParentID: again.Header.ID}}) {
		t.Fatal("cloudcore's answer to the insert was not taken as the registration")
	}

	up, err := k.translate(report(t, "n1", rep), now.Add(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if up.Route.Operation != message.OpUpdate || up.Route.Resource != "default/nodestatus/n1" || up.Header.Sync {
		t.Fatalf("report after registration became %s, want an update of default/nodestatus/n1", up.String())
	}
	var req struct{ Status corev1.NodeStatus }
	if err := json.Unmarshal(up.Content, &req); err != nil {
		t.Fatal(err)
	}
	if !ready(req.Status) || len(req.Status.Conditions) != 2 {
		t.Errorf("nodestatus update conditions %+v: want MemoryPressure and Ready=True", req.Status.Conditions)
	}
	for _, c := range req.Status.Conditions {
		if !c.LastTransitionTime.Time.Equal(now) || !c.LastHeartbeatTime.Time.Equal(now.Add(2*time.Second)) {
			t.Errorf("condition %s: transition %s heartbeat %s, want the first report's time and this one's", c.Type, c.LastTransitionTime, c.LastHeartbeatTime)
		}
	}

	pod, _ := message.New("edged", "meta", message.OpUpdate, "ns/podstatus/web").WithContent(map[string]string{"uid": "u"})
	if out, err := k.translate(pod, now); err != nil || out.Header.ID != pod.Header.ID || string(out.Content) != string(pod.Content) {
		t.Errorf("a pod status changed on its way to KubeEdge's cloud: %s %v", out.String(), err)
	}
	other := report(t, "n2", rep)
	if out, _ := k.translate(other, now); out.Route.Resource != other.Route.Resource {
		t.Errorf("another node's status was translated: %s", out.String())
	}
}

func TestKubeEdgeCloudRefusesABadReportNamingWhatIsWrong(t *testing.T) {
	for name, rep := range map[string]map[string]any{
		"capacity":  {"capacity": map[string]string{"cpu": "two"}},
		"condition": {"capacity": map[string]string{"cpu": "2"}, "conditions": []map[string]string{{"type": "DiskPressure", "status": "Maybe"}}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := newKubeEdgeCloud("n1").translate(report(t, "n1", rep), time.Now())
			if err == nil || !strings.Contains(err.Error(), "n1") || !strings.Contains(err.Error(), name) {
				t.Fatalf("err %v: want one naming node n1 and the bad %s", err, name)
			}
		})
	}
}

func ready(st corev1.NodeStatus) bool {
	for _, c := range st.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
