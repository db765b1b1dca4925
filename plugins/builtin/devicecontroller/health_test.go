package devicecontroller_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	"github.com/kedge-io/kedge/sdk/message"
	"github.com/kedge-io/kedge/test/ctrlrig"
)

func healthReport(status, reason, msg string) devicecontroller.DeviceStatusReport {
	return devicecontroller.DeviceStatusReport{Condition: &devicecontroller.ReportCondition{
		Type: v1beta1.ConditionHealthy, Status: status, Reason: reason, Message: msg}}
}

// warnings lists the Warning Events on the device.
func (r *rig) warnings(name string) []corev1.Event {
	r.T.Helper()
	evs, err := ctrlrig.Env.Client.CoreV1().Events(r.NS).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		r.T.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range evs.Items {
		if e.InvolvedObject.Kind == "Device" && e.InvolvedObject.Name == name && e.Type == corev1.EventTypeWarning {
			out = append(out, e)
		}
	}
	return out
}

// columns returns the cells `kubectl get devices` prints for the device, by column name.
func (r *rig) columns(name string) map[string]string {
	r.T.Helper()
	raw, err := api.Get().Namespace(r.NS).Resource(v1beta1.ResourceDevices).Name(name).
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").Do(context.Background()).Raw()
	if err != nil {
		r.T.Fatal(err)
	}
	var tbl metav1.Table
	if err := json.Unmarshal(raw, &tbl); err != nil || len(tbl.Rows) != 1 {
		r.T.Fatalf("table of device %s: %v %s", name, err, raw)
	}
	out := map[string]string{}
	for i, c := range tbl.ColumnDefinitions {
		if s, ok := tbl.Rows[0].Cells[i].(string); ok {
			out[c.Name] = s
		}
	}
	return out
}

func TestReportedFailureSetsHealthyFalseWithOneWarningEventAndAGoodReadingClearsIt(t *testing.T) {
	r := newRig(t)
	a := r.Node("a")
	r.join(a)
	r.model("m")
	r.device("d", "m", a, "20")
	r.WaitSent(message.OpInsert, res(a, r.NS, "device", "d"))

	// Three failure reports in a row (as devicetwin sends them when the message changes): one
	// condition, one Warning Event, the later ones counted as suppressed.
	for _, v := range []string{"1102970880", "1102970881", "1102970882"} {
		msg := "edgecore refused readings of temperature: property \"temperature\": value " + v + " is above the maximum 125"
		if resp := r.report(a, "d", healthReport("False", v1beta1.ReasonReadingRefused, msg)); resp.Route.Operation == message.OpError {
			t.Fatalf("refused: %s", resp.Content)
		}
	}
	d := r.get("d")
	c := meta.FindStatusCondition(d.Status.Conditions, v1beta1.ConditionHealthy)
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1beta1.ReasonReadingRefused || !strings.Contains(c.Message, "1102970882") || c.LastTransitionTime.IsZero() {
		t.Fatalf("Healthy condition after refused readings: %+v", c)
	}
	failedSince := c.LastTransitionTime
	if cols := r.columns("d"); cols["Healthy"] != "False" || cols["Reason"] != v1beta1.ReasonReadingRefused {
		t.Fatalf("kubectl get devices columns: %v", cols)
	}
	evs := r.warnings("d")
	if len(evs) != 1 || evs[0].Reason != v1beta1.ReasonReadingRefused || evs[0].Count != 1 || !strings.Contains(evs[0].Message, "above the maximum 125") ||
		evs[0].InvolvedObject.UID != d.UID || evs[0].Source.Component != "kedge-devicecontroller" {
		t.Fatalf("want one Warning Event ReadingRefused with count 1 for three reports within eventInterval, got %+v", evs)
	}
	// Only this reason: the controller also sees the Devices earlier tests left in other namespaces
	// (their SecretMissing warnings count here too under -count).
	if got := r.Counter("kedge_devicecontroller_warning_events_total", map[string]string{"reason": v1beta1.ReasonReadingRefused}); got != 3 { // 1 written + 2 suppressed
		t.Fatalf("kedge_devicecontroller_warning_events_total{reason=ReadingRefused} = %v, want 3", got)
	}
	eventually(t, "DeviceStatus object carries the condition", func() (bool, string) {
		st := &v1beta1.DeviceStatus{}
		if err := api.Get().Namespace(r.NS).Resource(v1beta1.ResourceDeviceStatuses).Name("d").Do(context.Background()).Into(st); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(st.Status.Conditions, v1beta1.ConditionHealthy)
		return c != nil && c.Status == metav1.ConditionFalse, "conditions " + func() string { b, _ := json.Marshal(st.Status.Conditions); return string(b) }()
	})

	// Another reason is another Event.
	r.report(a, "d", healthReport("False", v1beta1.ReasonDeviceOffline, "the mapper reports the device offline"))
	if evs := r.warnings("d"); len(evs) != 2 {
		t.Fatalf("a new reason gets its own Warning Event; got %d events", len(evs))
	}

	// A good reading clears it; the condition records the transition.
	ok := healthReport("True", v1beta1.ReasonReadingsOK, "readings accepted")
	ok.Twins = []v1beta1.Twin{twin("temperature", "23.75", 5000)}
	if resp := r.report(a, "d", ok); resp.Route.Operation == message.OpError {
		t.Fatalf("refused: %s", resp.Content)
	}
	d = r.get("d")
	c = meta.FindStatusCondition(d.Status.Conditions, v1beta1.ConditionHealthy)
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != v1beta1.ReasonReadingsOK || reported(d, "temperature") != "23.75" || c.LastTransitionTime.Before(&failedSince) {
		t.Fatalf("Healthy condition after a good reading: %+v (temperature %q)", c, reported(d, "temperature"))
	}
	if cols := r.columns("d"); cols["Healthy"] != "True" {
		t.Fatalf("kubectl get devices columns after recovery: %v", cols)
	}
	if evs := r.warnings("d"); len(evs) != 2 {
		t.Fatalf("recovery wrote a Warning Event: %+v", evs)
	}
}

func TestMalformedHealthConditionsAreRefusedNamingTheField(t *testing.T) {
	r := newRig(t)
	a := r.Node("a")
	r.join(a)
	r.model("m")
	r.device("d", "m", a, "20")
	r.WaitSent(message.OpInsert, res(a, r.NS, "device", "d"))
	for _, tc := range []struct {
		name, typ, status, reason, want string
	}{
		{"unknown type", "Ready", "False", "X", "condition.type"},
		{"bad status", v1beta1.ConditionHealthy, "maybe", "X", "condition.status"},
		{"reason with spaces", v1beta1.ConditionHealthy, "False", "reading refused", "condition.reason"},
		{"empty reason", v1beta1.ConditionHealthy, "False", "", "condition.reason"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := devicecontroller.DeviceStatusReport{Condition: &devicecontroller.ReportCondition{Type: tc.typ, Status: tc.status, Reason: tc.reason}}
			resp := r.report(a, "d", rep)
			if resp.Route.Operation != message.OpError || !strings.Contains(string(resp.Content), tc.want) {
				t.Fatalf("want an error naming %s, got %s %s", tc.want, resp.Route.Operation, resp.Content)
			}
		})
	}
	if d := r.get("d"); len(d.Status.Conditions) != 0 {
		t.Fatalf("refused reports wrote conditions: %+v", d.Status.Conditions)
	}
	if evs := r.warnings("d"); len(evs) != 0 {
		t.Fatalf("refused reports wrote events: %+v", evs)
	}
}
