package edgecontroller

import (
	"reflect"
	"testing"
	"time"
)

// TestReportFingerprintMovesWithEveryFieldButTheReportTime proves an unchanged report is recognised
// as unchanged (its time differs in every report) and any other change is not missed: every field
// of NodeReport, including ones added later, must move the fingerprint.
func TestReportFingerprintMovesWithEveryFieldButTheReportTime(t *testing.T) {
	base := NodeReport{NodeName: "n1", Capacity: map[string]string{"cpu": "2", "memory": "2Gi"}, KernelVersion: "6.1",
		OS: "linux", Architecture: "amd64", OSImage: "Debian", Addresses: []string{"192.0.2.7"},
		BootTime: time.Unix(1000, 0), ReportedAt: time.Unix(2000, 0), Allocatable: map[string]string{"cpu": "1"},
		Conditions: []ReportCondition{{Type: "DiskPressure", Status: "False", Reason: "ok", Message: "fine"}},
		MachineID:  "m", BootID: "b", ContainerRuntimeVersion: "containerd://2", Version: "v1"}
	ep := streamEndpoint{Address: "10.0.0.1", Port: 10350}
	fp := base.fingerprint(ep)

	later := base
	later.ReportedAt = time.Unix(3000, 0)
	if later.fingerprint(ep) != fp {
		t.Error("a report that differs only in its time has another fingerprint")
	}
	for _, other := range []streamEndpoint{{Address: "10.0.0.2", Port: 10350}, {Address: "10.0.0.1", Port: 10351}, {}} {
		if base.fingerprint(other) == fp {
			t.Errorf("stream endpoint %+v: same fingerprint as %+v", other, ep)
		}
	}
	typ := reflect.TypeFor[NodeReport]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		if f.Name == "ReportedAt" {
			continue
		}
		t.Run(f.Name, func(t *testing.T) {
			changed := base
			changed.Capacity = map[string]string{"cpu": "2", "memory": "2Gi"}
			changed.Allocatable = map[string]string{"cpu": "1"}
			changed.Addresses = []string{"192.0.2.7"}
			changed.Conditions = []ReportCondition{{Type: "DiskPressure", Status: "False", Reason: "ok", Message: "fine"}}
			v := reflect.ValueOf(&changed).Elem().Field(i)
			switch v.Kind() {
			case reflect.String:
				v.SetString(v.String() + "x")
			case reflect.Map:
				v.SetMapIndex(reflect.ValueOf("extra"), reflect.ValueOf("1"))
			case reflect.Slice:
				v.Set(reflect.Append(v, reflect.Zero(v.Type().Elem())))
			case reflect.Struct:
				if tm, ok := v.Interface().(time.Time); ok {
					v.Set(reflect.ValueOf(tm.Add(time.Second)))
				} else {
					t.Fatalf("field %s of kind struct: teach this test how to change it", f.Name)
				}
			default:
				t.Fatalf("field %s of kind %s: teach this test how to change it", f.Name, v.Kind())
			}
			if changed.fingerprint(ep) == fp {
				t.Errorf("changing %s does not move the fingerprint: a changed report would not be written", f.Name)
			}
		})
	}
	noAlloc := base
	noAlloc.Allocatable = nil
	empty := base
	empty.Allocatable = map[string]string{}
	if noAlloc.fingerprint(ep) == empty.fingerprint(ep) {
		t.Error("no allocatable (all is allocatable) and an empty one have the same fingerprint")
	}
}
