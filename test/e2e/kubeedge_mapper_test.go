package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
	"github.com/kedge-io/kedge/test/k8senv"
)

// A real KubeEdge v1.23.1 mapper (the virtual-mapper generated from KubeEdge's mapper-framework, its
// DMI code unmodified) against Kedge's edgecore and cloudcore: it registers, its twin reports reach
// the Device status, its device state reports (ReportDeviceStates, which it only makes because
// spec.stateReport reaches it as the DMI DeviceStatus reportToCloud/reportCycle) fill the STATE
// column, a Device with pushMethod.otel and one with pushMethod.dbMethod are taken without an error on
// either side (the PushMethod field numbers are KubeEdge's), and after an edgecore restart the mapper,
// not restarted and not registering again, is still served: a new desired value reaches it
// (UpdateDevice) and its reports still arrive.
func TestKubeEdgeVirtualMapperRegistersReportsTwinsAndStateAndSurvivesAnEdgecoreRestart(t *testing.T) {
	needBinaries(t)
	bin := filepath.Join(kubeedgeDir(t, filepath.Join("mappers", "virtual-mapper")), "mappers", "virtual-mapper")
	k8s, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Stop() })
	if err := k8s.InstallCRDs(); err != nil {
		t.Fatal(err)
	}
	if _, err := devicecontroller.NewRESTClient(k8s.Config); err != nil {
		t.Fatal(err)
	}
	sock, err := os.MkdirTemp("", "vmap") // short: unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(sock) })
	dmiSock := filepath.Join(sock, "dmi.sock")
	// The DMI socket stays where it is across edgecore restarts: the mapper was told it once.
	c := newDeviceCluster(t, k8s, "e2e-vmapper", []string{"KEDGE_MODULES__DMI__SOCKET=" + dmiSock,
		"KEDGE_MODULES__DMI__RECONCILEINTERVAL=1s"})
	waitFor(t, "edge node Ready", 60*time.Second, c.nodeReady)

	ns := "vmapper"
	c.kubectl("create", "namespace", ns)
	manifest := filepath.Join(t.TempDir(), "devices.yaml")
	if err := os.WriteFile(manifest, []byte(virtualDevices(ns, c.node, freePort(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	c.kubectl("apply", "-f", manifest)

	// The mapper, started once for the whole test.
	cfg := filepath.Join(sock, "config.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`grpc_server:
  socket_path: %s
common:
  name: Virtual-mapper
  version: v1.13.0
  api_version: v1.0.0
  protocol: virtualProtocol
  address: 127.0.0.1
  edgecore_sock: %s
  http_port: "%d"
`, filepath.Join(sock, "mapper.sock"), dmiSock, freePort(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	mapper := exec.Command(bin, "--config-file", cfg, "--v", "4")
	mapper.Dir = sock
	mapper.Stdout, mapper.Stderr = out, out
	if err := mapper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = mapper.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = mapper.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = mapper.Process.Kill()
				<-exited
			}
		}
		if t.Failed() {
			t.Logf("virtual-mapper output:\n%s", tail(out.String(), 60))
		}
	})
	alive := func() {
		t.Helper()
		select {
		case <-exited:
			t.Fatalf("virtual-mapper exited: %v\n%s", mapper.ProcessState, tail(out.String(), 40))
		default:
		}
	}

	waitFor(t, "mapper registered", 60*time.Second, func() (bool, string) {
		alive()
		v := c.edge.metric("kedge_dmi_mappers")
		return v == 1, fmt.Sprint("kedge_dmi_mappers ", v)
	})
	// jsonpath of the Device status: twins' reported values and the state.
	reported := func(dev string) string {
		return c.kubectl("get", "device", "-n", ns, dev, "-o", `jsonpath={.status.twins[?(@.propertyName=="random-int")].reported.value}`)
	}
	for _, dev := range []string{"vdev-otel", "vdev-db"} {
		waitFor(t, dev+": a reported value in the Device status", 60*time.Second, func() (bool, string) {
			alive()
			v := reported(dev)
			_, err := strconv.Atoi(v)
			return err == nil, fmt.Sprintf("reported %q", v)
		})
		waitFor(t, dev+": state online in the STATE column", 60*time.Second, func() (bool, string) {
			row := c.kubectl("get", "device", "-n", ns, dev, "--no-headers")
			return strings.Contains(row, "online"), row
		})
	}
	// As on KubeEdge, the reading is in the DeviceStatus object of the same name.
	waitFor(t, "the reading in kubectl get devicestatus", 30*time.Second, func() (bool, string) {
		v, err := c.k8s.Kubectl("get", "devicestatus", "-n", ns, "vdev-otel", "-o", `jsonpath={.status.twins[?(@.propertyName=="random-int")].reported.value}|{.status.state}`)
		if err != nil {
			return false, v + err.Error()
		}
		val, state, _ := strings.Cut(v, "|")
		_, err = strconv.Atoi(val)
		return err == nil && state == "online", v
	})
	if n := c.edge.metric("kedge_dmi_mapper_calls_total", `result="error"`); n != 0 {
		t.Fatalf("edgecore's calls to the mapper failed %v times:\n%s", n, c.edge.stderr)
	}
	if strings.Contains(out.String(), "failed to unmarshal") || strings.Contains(out.String(), "invalid wire-format") {
		t.Fatalf("the mapper could not decode edgecore's messages:\n%s", tail(out.String(), 40))
	}

	// edgecore restarts; the mapper does not.
	if code, _ := c.edge.stop(syscall.SIGTERM, 60*time.Second); code != 0 {
		t.Fatalf("edgecore exit %d\n%s", code, c.edge.stderr)
	}
	c.startEdge()
	waitFor(t, "mapper registration restored after the restart", 30*time.Second, func() (bool, string) {
		v := c.edge.metric("kedge_dmi_mappers")
		return v == 1, fmt.Sprint("kedge_dmi_mappers ", v)
	})
	// A new desired value reaches the (not restarted) mapper: UpdateDevice answered ok.
	c.kubectl("patch", "device", "-n", ns, "vdev-otel", "--type", "json", "-p",
		`[{"op":"replace","path":"/spec/properties/1/desired/value","value":"77"}]`)
	waitFor(t, "UpdateDevice to the mapper after the restart", 60*time.Second, func() (bool, string) {
		alive()
		v := c.edge.metric("kedge_dmi_mapper_calls_total", `method="UpdateDevice"`, `result="ok"`)
		return v >= 1, fmt.Sprint("UpdateDevice ok ", v, "; errors ", c.edge.metric("kedge_dmi_mapper_calls_total", `result="error"`))
	})
	// Its reports keep arriving: a report call answered ok by the restarted edgecore.
	waitFor(t, "reports from the mapper after the restart", 60*time.Second, func() (bool, string) {
		alive()
		s := c.edge.metric("kedge_dmi_requests_total", `method="ReportDeviceStatus"`, `code="OK"`)
		st := c.edge.metric("kedge_dmi_requests_total", `method="ReportDeviceStates"`, `code="OK"`)
		return s >= 1 && st >= 1, fmt.Sprintf("ReportDeviceStatus ok %v, ReportDeviceStates ok %v", s, st)
	})
	if n := c.edge.metric("kedge_dmi_requests_total", `method="MapperRegister"`); n != 0 {
		t.Fatalf("the mapper registered again (%v) although it was not restarted", n)
	}
	alive()
}

// virtualDevices is a DeviceModel and two Devices for the virtual-mapper (protocol virtualProtocol):
// one pushing to an OpenTelemetry endpoint, one to an InfluxDB 2 (neither listening: the mapper
// only logs that), both asking for state reports every second.
func virtualDevices(ns, node string, deadPort int) string {
	device := func(name, push string) string {
		return fmt.Sprintf(`---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: %s
  namespace: %s
spec:
  deviceModelRef:
    name: virtual-model
  nodeName: %s
  protocol:
    protocolName: virtualProtocol
    configData:
      deviceID: 2
  stateReport:
    reportToCloud: true
    reportCycle: 1000
  properties:
  - name: random-int
    collectCycle: 1000
    reportCycle: 1000
    reportToCloud: true
    visitors:
      protocolName: virtualProtocol
      configData:
        dataType: int
    pushMethod:
%s
  - name: setpoint
    collectCycle: 1000
    reportCycle: 1000
    reportToCloud: true
    desired:
      value: "10"
    visitors:
      protocolName: virtualProtocol
      configData:
        dataType: int
`, name, ns, node, push)
	}
	return fmt.Sprintf(`apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: virtual-model
  namespace: %s
spec:
  protocol: virtualProtocol
  properties:
  - name: random-int
    type: INT
    accessMode: ReadOnly
    minimum: "0"
    maximum: "100"
  - name: setpoint
    type: INT
    accessMode: ReadWrite
    minimum: "0"
    maximum: "100"
`, ns) +
		device("vdev-otel", fmt.Sprintf(`      otel:
        endpointURL: http://127.0.0.1:%d/v1/metrics`, deadPort)) +
		device("vdev-db", fmt.Sprintf(`      dbMethod:
        influxdb2:
          influxdb2ClientConfig:
            url: http://127.0.0.1:%d
            org: kedge
            bucket: test
          influxdb2DataConfig:
            measurement: random
            fieldKey: value
            tag:
              unit: none`, deadPort))
}
