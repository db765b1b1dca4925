package devicecontroller

import (
	"testing"

	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
)

func tp(value, ts string) v1beta1.TwinProperty {
	if ts == "" {
		return v1beta1.TwinProperty{Value: value}
	}
	return v1beta1.TwinProperty{Value: value, Metadata: map[string]string{MetaTimestamp: ts}}
}

func TestMergeKeepsTheNewestValuePerPropertyAndReportsWhatChanged(t *testing.T) {
	held := v1beta1.DeviceInstanceStatus{State: "online", LastOnlineTime: "2026-01-02T10:00:00Z", Twins: []v1beta1.Twin{
		{PropertyName: "temperature", Reported: tp("21", "2000"), ObservedDesired: tp("20", "2000")},
	}}
	tests := []struct {
		name        string
		rep         DeviceStatusReport
		wantTemp    string
		wantDesired string
		wantChanged bool
		wantOlder   int
		wantState   string
		wantOnline  string
	}{
		{"a newer reported value replaces the held one", DeviceStatusReport{Twins: []v1beta1.Twin{{PropertyName: "temperature", Reported: tp("22", "3000")}}}, "22", "20", true, 0, "online", "2026-01-02T10:00:00Z"},
		{"an older reported value is ignored and counted", DeviceStatusReport{Twins: []v1beta1.Twin{{PropertyName: "temperature", Reported: tp("5", "1000")}}}, "21", "20", false, 1, "online", "2026-01-02T10:00:00Z"},
		{"the same value again changes nothing", DeviceStatusReport{Twins: []v1beta1.Twin{{PropertyName: "temperature", Reported: tp("21", "2000")}}}, "21", "20", false, 0, "online", "2026-01-02T10:00:00Z"},
		{"a value without timestamp is taken in arrival order", DeviceStatusReport{Twins: []v1beta1.Twin{{PropertyName: "temperature", Reported: tp("23", "")}}}, "23", "20", true, 0, "online", "2026-01-02T10:00:00Z"},
		{"observedDesired alone leaves reported", DeviceStatusReport{Twins: []v1beta1.Twin{{PropertyName: "temperature", ObservedDesired: tp("25", "4000")}}}, "21", "25", true, 0, "online", "2026-01-02T10:00:00Z"},
		{"state and a later lastOnlineTime", DeviceStatusReport{State: "offline", LastOnlineTime: "2026-01-03T10:00:00Z"}, "21", "20", true, 0, "offline", "2026-01-03T10:00:00Z"},
		{"an earlier lastOnlineTime is kept out", DeviceStatusReport{LastOnlineTime: "2026-01-01T10:00:00Z"}, "21", "20", false, 0, "online", "2026-01-02T10:00:00Z"},
		{"a later lastOnlineTime in KubeEdge's format", DeviceStatusReport{LastOnlineTime: "2026-01-02 11:00:00"}, "21", "20", true, 0, "online", "2026-01-02 11:00:00"},
		{"an earlier one in KubeEdge's format is kept out", DeviceStatusReport{LastOnlineTime: "2026-01-02 09:59:59"}, "21", "20", false, 0, "online", "2026-01-02T10:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed, older := merge(held, tt.rep)
			if changed != tt.wantChanged || older != tt.wantOlder {
				t.Errorf("changed %v older %d, want %v %d", changed, older, tt.wantChanged, tt.wantOlder)
			}
			if got.Twins[0].Reported.Value != tt.wantTemp || got.Twins[0].ObservedDesired.Value != tt.wantDesired || got.State != tt.wantState || got.LastOnlineTime != tt.wantOnline {
				t.Errorf("merged %+v", got)
			}
			if held.Twins[0].Reported.Value != "21" || held.State != "online" {
				t.Fatalf("merge changed its input: %+v", held)
			}
		})
	}
	got, changed, _ := merge(held, DeviceStatusReport{Twins: []v1beta1.Twin{{PropertyName: "humidity", Reported: tp("40", "1")}}})
	if !changed || len(got.Twins) != 2 || got.Twins[1].PropertyName != "humidity" || got.Twins[0].Reported.Value != "21" {
		t.Fatalf("a new property is added beside the others: %+v", got.Twins)
	}
}
