package noruntime_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/noruntime"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

func podMsg(t *testing.T, pod corev1.Pod) sdk.Message {
	t.Helper()
	m, err := message.New("metamanager", "resource", message.OpUpdate, "ns/pod/"+pod.Name).WithContent(pod)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPodIsReportedPendingWithTheReasonOnceAndADeletionIsConfirmedWithItsUID(t *testing.T) {
	info, _ := sdk.Lookup(noruntime.Name)
	h := sdktest.Run(t, info, nil, sdktest.Capture("metamanager"))
	mm := h.Captured("metamanager")
	pod := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u-1"}}
	for range 2 { // a repeated delivery does not report again
		if err := h.Send(podMsg(t, pod)); err != nil {
			t.Fatal(err)
		}
	}
	st := mm.Next(t, 5*time.Second)
	if st.Route.Operation != message.OpUpdate || st.Route.Resource != "ns/podstatus/p" {
		t.Fatalf("got %s %s", st.Route.Operation, st.Route.Resource)
	}
	var rep struct {
		UID    string           `json:"uid"`
		Status corev1.PodStatus `json:"status"`
	}
	if err := json.Unmarshal(st.Content, &rep); err != nil || rep.UID != "u-1" || rep.Status.Reason != noruntime.Reason || rep.Status.Phase != corev1.PodPending {
		t.Fatalf("status %v %+v", err, rep)
	}
	now := metav1.Now()
	pod.DeletionTimestamp = &now
	if err := h.Send(podMsg(t, pod)); err != nil {
		t.Fatal(err)
	}
	del := mm.Next(t, 5*time.Second)
	if del.Route.Operation != message.OpDelete || del.Route.Resource != "ns/pod/p" || !strings.Contains(string(del.Content), `"uid":"u-1"`) {
		t.Fatalf("got %s %s %s (a second status report before it?)", del.Route.Operation, del.Route.Resource, del.Content)
	}
}

func TestContentThatIsNotAPodIsAnErrorNamingTheResource(t *testing.T) {
	info, _ := sdk.Lookup(noruntime.Name)
	h := sdktest.Run(t, info, nil, sdktest.Capture("metamanager"))
	m := message.New("metamanager", "resource", message.OpUpdate, "ns/pod/bad")
	m.Content = []byte(`["not", "a", "pod"]`)
	m.Header.Sync = true
	resp, err := h.SendSync(m, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Route.Operation != message.OpError || !strings.Contains(string(resp.Content), "ns/pod/bad") {
		t.Fatalf("answer %s %s", resp.Route.Operation, resp.Content)
	}
}
