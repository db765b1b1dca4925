package nodestatus

import (
	"context"
	"strings"
	"testing"

	"github.com/kedge-io/kedge/test/crienv"
)

// procWith is a fake /proc whose memory and task counts the test chooses.
func procWith(t *testing.T, memTotalKiB, memAvailKiB, tasks, pidMax string) string {
	t.Helper()
	meminfo := "MemTotal: " + memTotalKiB + " kB\nMemFree: 1 kB\n"
	if memAvailKiB != "" {
		meminfo += "MemAvailable: " + memAvailKiB + " kB\n"
	}
	return writeFiles(t, map[string]string{"meminfo": meminfo, "sys/kernel/osrelease": "6.1\n", "uptime": "10 10\n",
		"loadavg": "0.00 0.00 0.00 1/" + tasks + " 99\n", "sys/kernel/pid_max": pidMax + "\n"})
}

func conditionsByType(st Status) map[string]Condition {
	out := map[string]Condition{}
	for _, c := range st.Conditions {
		out[c.Type] = c
	}
	return out
}

func TestPressureConditionsFollowTheirThresholds(t *testing.T) {
	tests := []struct {
		name               string
		memTotal, memAvail string // KiB
		tasks, pidMax      string
		pressure           Thresholds
		want               map[string]string // type -> reason
	}{
		{"plenty of everything is no pressure", "2048000", "1024000", "300", "32768",
			Thresholds{MemoryAvailable: "100Mi", DiskAvailable: "0%", PIDAvailable: "5%"},
			map[string]string{"MemoryPressure": "EdgeHasSufficientMemory", "DiskPressure": "EdgeHasNoDiskPressure", "PIDPressure": "EdgeHasSufficientPID"}},
		{"MemAvailable below an absolute threshold is memory pressure", "2048000", "51200", "300", "32768",
			Thresholds{MemoryAvailable: "100Mi", DiskAvailable: "0%", PIDAvailable: "5%"},
			map[string]string{"MemoryPressure": "EdgeHasMemoryPressure", "DiskPressure": "EdgeHasNoDiskPressure", "PIDPressure": "EdgeHasSufficientPID"}},
		{"MemAvailable exactly at the threshold is not pressure", "2048000", "102400", "300", "32768",
			Thresholds{MemoryAvailable: "100Mi"},
			map[string]string{"MemoryPressure": "EdgeHasSufficientMemory"}},
		{"MemAvailable below a percentage threshold is memory pressure", "1000000", "49000", "300", "32768",
			Thresholds{MemoryAvailable: "5%"},
			map[string]string{"MemoryPressure": "EdgeHasMemoryPressure"}},
		{"free disk below the threshold is disk pressure", "2048000", "1024000", "300", "32768",
			Thresholds{DiskAvailable: "1Ei"},
			map[string]string{"DiskPressure": "EdgeHasDiskPressure"}},
		{"free disk above an absolute threshold is no disk pressure", "2048000", "1024000", "300", "32768",
			Thresholds{DiskAvailable: "1"},
			map[string]string{"DiskPressure": "EdgeHasNoDiskPressure"}},
		{"few PIDs left is PID pressure", "2048000", "1024000", "31500", "32768",
			Thresholds{PIDAvailable: "5%"},
			map[string]string{"PIDPressure": "EdgeHasPIDPressure"}},
		{"PIDs left below an absolute count is PID pressure", "2048000", "1024000", "1000", "1500",
			Thresholds{PIDAvailable: "501"},
			map[string]string{"PIDPressure": "EdgeHasPIDPressure"}},
		{"no threshold means never under pressure", "2048000", "1", "32768", "32768",
			Thresholds{},
			map[string]string{"MemoryPressure": "EdgeHasSufficientMemory", "DiskPressure": "EdgeHasNoDiskPressure", "PIDPressure": "EdgeHasSufficientPID"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New()
			m.ProcRoot = procWith(t, tt.memTotal, tt.memAvail, tt.tasks, tt.pidMax)
			m.StoragePath = t.TempDir()
			m.Pressure = tt.pressure
			st, err := m.Gather(context.Background(), "edge-1")
			if err != nil {
				t.Fatal(err)
			}
			got := conditionsByType(st)
			for typ, reason := range tt.want {
				c, ok := got[typ]
				if !ok {
					t.Fatalf("no %s condition in %+v", typ, st.Conditions)
				}
				wantStatus := "False"
				if strings.Contains(reason, "Pressure") && !strings.Contains(reason, "NoDisk") {
					wantStatus = "True"
				}
				if c.Reason != reason || c.Status != wantStatus || c.Message == "" {
					t.Errorf("%s = %+v, want %s %s with a message", typ, c, wantStatus, reason)
				}
			}
		})
	}
}

func TestMemoryPressureIsLeftOutWhenTheKernelGivesNoMemAvailable(t *testing.T) {
	m := New()
	m.ProcRoot = procWith(t, "2048000", "", "300", "32768")
	m.StoragePath = t.TempDir()
	st, err := m.Gather(context.Background(), "edge-1")
	if err != nil {
		t.Fatal(err)
	}
	got := conditionsByType(st)
	if _, ok := got["MemoryPressure"]; ok {
		t.Fatalf("MemoryPressure reported without MemAvailable: %+v", st.Conditions)
	}
	if _, ok := got["DiskPressure"]; !ok {
		t.Fatalf("DiskPressure missing: %+v", st.Conditions)
	}
}

func TestCapacityAndAllocatableCoverCPUMemoryPodsAndEphemeralStorage(t *testing.T) {
	tests := []struct {
		name     string
		reserved Reserved
		maxPods  int
		check    func(t *testing.T, st Status)
	}{
		{"without reservations allocatable equals capacity", Reserved{}, 110, func(t *testing.T, st Status) {
			for k, v := range st.Capacity {
				if st.Allocatable[k] != v {
					t.Errorf("allocatable %s = %q, capacity %q", k, st.Allocatable[k], v)
				}
			}
		}},
		{"reservations are subtracted", Reserved{CPU: "500m", Memory: "1000Ki", EphemeralStorage: "1Ki"}, 20, func(t *testing.T, st Status) {
			if st.Capacity["pods"] != "20" || st.Allocatable["pods"] != "20" {
				t.Errorf("pods capacity/allocatable = %q/%q, want 20", st.Capacity["pods"], st.Allocatable["pods"])
			}
			if st.Allocatable["memory"] != "2047000Ki" {
				t.Errorf("allocatable memory = %q, want 2047000Ki", st.Allocatable["memory"])
			}
			if !strings.HasSuffix(st.Allocatable["cpu"], "500m") {
				t.Errorf("allocatable cpu = %q, want capacity - 500m", st.Allocatable["cpu"])
			}
			if st.Allocatable["ephemeral-storage"] == st.Capacity["ephemeral-storage"] || st.Allocatable["ephemeral-storage"] == "" {
				t.Errorf("ephemeral-storage allocatable %q, capacity %q", st.Allocatable["ephemeral-storage"], st.Capacity["ephemeral-storage"])
			}
		}},
		{"a reservation larger than capacity leaves zero", Reserved{Memory: "1Ti"}, 110, func(t *testing.T, st Status) {
			if st.Allocatable["memory"] != "0" {
				t.Errorf("allocatable memory = %q, want 0", st.Allocatable["memory"])
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New()
			m.ProcRoot = procWith(t, "2048000", "1024000", "300", "32768")
			m.StoragePath = t.TempDir() + "/not/made/yet" // the nearest existing parent is measured
			m.SystemReserved, m.MaxPods = tt.reserved, tt.maxPods
			st, err := m.Gather(context.Background(), "edge-1")
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"cpu", "memory", "pods", "ephemeral-storage"} {
				if st.Capacity[k] == "" || st.Allocatable[k] == "" {
					t.Fatalf("%s missing: capacity %v allocatable %v", k, st.Capacity, st.Allocatable)
				}
			}
			tt.check(t, st)
		})
	}
}

func TestMachineAndBootIDsAreReported(t *testing.T) {
	m := New()
	m.ProcRoot = fakeProc(t, "MemTotal: 1024 kB\n", "6.1", "1 1")
	m.EtcRoot = writeFiles(t, map[string]string{"machine-id": "4f1d0c0e9a\n", "os-release": "NAME=x\nPRETTY_NAME=\"Test OS 1\"\n"})
	m.StoragePath = t.TempDir()
	st, err := m.Gather(context.Background(), "edge-1")
	if err != nil {
		t.Fatal(err)
	}
	if st.MachineID != "4f1d0c0e9a" || st.BootID != "0d6c1b8e-boot" || st.OSImage != "Test OS 1" {
		t.Fatalf("machine %q boot %q image %q", st.MachineID, st.BootID, st.OSImage)
	}
}

func TestBadSettingsAreRefusedNamingTheSetting(t *testing.T) {
	tests := []struct {
		name string
		edit func(m *Module)
		want string
	}{
		{"reserved cpu not a quantity", func(m *Module) { m.SystemReserved.CPU = "lots" }, "systemReserved.cpu"},
		{"negative reserved memory", func(m *Module) { m.SystemReserved.Memory = "-1Gi" }, "systemReserved.memory"},
		{"percentage above 100", func(m *Module) { m.Pressure.DiskAvailable = "120%" }, "pressure.diskAvailable"},
		{"threshold not a quantity", func(m *Module) { m.Pressure.MemoryAvailable = "plenty" }, "pressure.memoryAvailable"},
		{"negative pid threshold", func(m *Module) { m.Pressure.PIDAvailable = "-5" }, "pressure.pidAvailable"},
		{"negative maxPods", func(m *Module) { m.MaxPods = -1 }, "maxPods"},
		{"tcp CRI endpoint", func(m *Module) { m.CRIEndpoint = "tcp://127.0.0.1:1" }, "criEndpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New()
			tt.edit(m)
			if err := m.Start(context.Background(), nil); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Start error = %v, want one naming %s", err, tt.want)
			}
		})
	}
}

func TestRuntimeVersionIsAskedFromCRI(t *testing.T) {
	ep, _ := crienv.Start(t)
	tests := []struct {
		name, endpoint, wantPrefix string
	}{
		{"the test containerd answers", ep, "containerd://"},
		{"a bare socket path works too", strings.TrimPrefix(ep, "unix://"), "containerd://"},
		{"a socket nobody listens on is left out", "unix://" + t.TempDir() + "/none.sock", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New()
			m.ProcRoot = fakeProc(t, "MemTotal: 1024 kB\n", "6.1", "1 1")
			m.StoragePath = t.TempDir()
			m.CRIEndpoint = tt.endpoint
			st, err := m.Gather(context.Background(), "edge-1")
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantPrefix == "" && st.ContainerRuntimeVersion != "" || !strings.HasPrefix(st.ContainerRuntimeVersion, tt.wantPrefix) ||
				tt.wantPrefix != "" && len(st.ContainerRuntimeVersion) <= len(tt.wantPrefix) {
				t.Fatalf("containerRuntimeVersion = %q, want %q<version>", st.ContainerRuntimeVersion, tt.wantPrefix)
			}
		})
	}
}

// A build without the CRI client (tag kedge_nocri: the gateway class) links no k8s.io/cri-api; a
// config that names a CRI endpoint must fail at start naming the setting and the build, while the
// default (no endpoint) starts.
func TestCRIEndpointInABuildWithoutTheCRIClientFailsAtStartNamingIt(t *testing.T) {
	saved := dialCRI
	dialCRI = nil // what cri.go leaves under kedge_nocri
	t.Cleanup(func() { dialCRI = saved })
	m := New()
	m.CRIEndpoint = "unix:///run/containerd/containerd.sock"
	err := m.Start(context.Background(), nil)
	for _, want := range []string{"criEndpoint", "kedge_nocri", "modules.nodestatus.criEndpoint"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Start error = %v, want one naming %q", err, want)
		}
	}
	m = New()
	m.ProcRoot = fakeProc(t, "MemTotal: 1024 kB\n", "6.1", "1 1")
	m.StoragePath = t.TempDir()
	st, err := m.Gather(context.Background(), "edge-1")
	if err != nil || st.ContainerRuntimeVersion != "" {
		t.Fatalf("without criEndpoint: %v, runtime version %q", err, st.ContainerRuntimeVersion)
	}
}

// A live box's readings move between reports (memory, free disk, tasks); a condition that does not
// change must read the same, or the cloud writes the Node status on every report of an idle node.
func TestConditionsOfAnUnchangedNodeReadTheSameWhileItsReadingsMove(t *testing.T) {
	tests := []struct {
		name                 string
		before, after        [2]string // MemAvailable KiB, tasks
		pressure             Thresholds
		wantSame, wantStatus string // the MemoryPressure status both times, when wantSame is "yes"
	}{
		{"memory and tasks moving above their thresholds", [2]string{"1024000", "300"}, [2]string{"1010244", "317"},
			Thresholds{MemoryAvailable: "100Mi", DiskAvailable: "10%", PIDAvailable: "5%"}, "yes", "False"},
		{"memory moving below its threshold", [2]string{"51200", "300"}, [2]string{"40960", "300"},
			Thresholds{MemoryAvailable: "100Mi", DiskAvailable: "10%", PIDAvailable: "5%"}, "yes", "True"},
		{"no thresholds set", [2]string{"1024000", "300"}, [2]string{"512000", "900"},
			Thresholds{}, "yes", "False"},
		{"memory crossing its threshold changes the condition", [2]string{"1024000", "300"}, [2]string{"51200", "300"},
			Thresholds{MemoryAvailable: "100Mi"}, "no", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gather := func(memAvail, tasks string) map[string]Condition {
				m := New()
				m.ProcRoot = procWith(t, "2048000", memAvail, tasks, "32768")
				m.StoragePath = t.TempDir()
				m.Pressure = tt.pressure
				st, err := m.Gather(context.Background(), "edge-1")
				if err != nil {
					t.Fatal(err)
				}
				return conditionsByType(st)
			}
			before := gather(tt.before[0], tt.before[1])
			after := gather(tt.after[0], tt.after[1])
			same := len(before) == len(after)
			for typ, c := range before {
				same = same && after[typ] == c
			}
			if got := map[bool]string{true: "yes", false: "no"}[same]; got != tt.wantSame {
				t.Fatalf("conditions the same: %s, want %s\nbefore %+v\nafter  %+v", got, tt.wantSame, before, after)
			}
			if tt.wantSame == "yes" && before["MemoryPressure"].Status != tt.wantStatus {
				t.Errorf("MemoryPressure = %+v, want status %s", before["MemoryPressure"], tt.wantStatus)
			}
		})
	}
}
