package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kedge-io/kedge/test/k8senv"
)

// thermometerYAML is the examples/devices thermometer model and device in ns, bound to node, with
// the setpoint desired at desired.
func thermometerYAML(t *testing.T, ns, node, desired string) string {
	t.Helper()
	var docs []string
	for _, f := range []string{"thermometer-model.yaml", "thermometer-device.yaml"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", "devices", f))
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(b), "namespace: default", "namespace: "+ns)
		s = strings.ReplaceAll(s, "nodeName: edge-1", "nodeName: "+node)
		s = strings.ReplaceAll(s, `value: "21.5"`, `value: "`+desired+`"`)
		docs = append(docs, s)
	}
	file := filepath.Join(t.TempDir(), "thermometer.yaml")
	if err := os.WriteFile(file, []byte(strings.Join(docs, "\n---\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// startUpstreamEdgecore runs KubeEdge's edgecore with cfg until the test ends; it returns its log
// and a channel closed when it exits.
func startUpstreamEdgecore(t *testing.T, keDir, cfg string) (*syncBuffer, chan struct{}) {
	t.Helper()
	log := &syncBuffer{}
	cmd := exec.Command(filepath.Join(keDir, "edgecore"), "--config", cfg, "--v", "4")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("upstream edgecore log (last 12 KiB):\n%s", tail(log.String(), 12<<10))
		}
	})
	return log, done
}

// deviceEdgecoreConfig is upstreamEdgecoreConfig for a device-only edge: edged off (no containerd
// needed), eventbus on the external broker at mqttPort (mosquitto).
func deviceEdgecoreConfig(t *testing.T, keDir, dir, node, token string, hubPort, certPort, mqttPort int) string {
	t.Helper()
	cfg := upstreamEdgecoreConfig(t, filepath.Join(keDir, "edgecore"), dir, node, token, hubPort, certPort, "unix://"+filepath.Join(dir, "no-cri.sock"))
	patchYAMLFile(t, cfg, func(c map[string]any) {
		yamlMap(t, c, "modules", "edged")["enable"] = false
		bus := yamlMap(t, c, "modules", "eventBus")
		bus["mqttMode"] = 2
		bus["mqttServerExternal"] = "tcp://127.0.0.1:" + strconv.Itoa(mqttPort)
	})
	return cfg
}

// TestCaptureKubeEdgeDeviceMessagesBetweenUpstreamCloudcoreAndEdgecore runs KubeEdge v1.23.1's
// cloudcore and edgecore with a websocket tap between them and records every message of the device
// flow: a DeviceModel and Device applied with kubectl, a desired value changed, a twin update
// published on the edge's MQTT broker (mosquitto) reaching the DeviceStatus, the Device deleted.
// With KEDGE_CAPTURE_GOLDEN=1 it writes them to plugins/builtin/devicecontroller/testdata, the
// golden messages Kedge's encoders and decoders are tested against (KEDGE_CAPTURE_LOGS=<dir> keeps
// both logs and every frame there):
//
//	KEDGE_CAPTURE_GOLDEN=1 go test -count=1 -run TestCaptureKubeEdgeDeviceMessages ./test/e2e/
func TestCaptureKubeEdgeDeviceMessagesBetweenUpstreamCloudcoreAndEdgecore(t *testing.T) {
	needBinaries(t) // an end-to-end test (it runs neither of Kedge's binaries)
	keDir := kubeedgeDir(t, "cloudcore", "edgecore")
	ensureMosquittoClients(t)
	env, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	kcfg, err := clientcmd.BuildConfigFromFlags("", env.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kc := kubernetes.NewForConfigOrDie(kcfg)
	hubPort, certPort, cloudLog := upstreamCloudcore(t, keDir, env)
	token := upstreamToken(t, kc)
	mqttPort := startMosquittoBroker(t)
	sub := startMQTTSub(t, mqttPort)

	node := fmt.Sprintf("ke-pair-%d", os.Getpid()%100000)
	// Upstream cloudcore drops a connection whose Node does not exist; edged (off here) would
	// register it.
	if _, err := kc.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node,
		Labels: map[string]string{"node-role.kubernetes.io/edge": ""}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tap, tapPort := startWSTap(t, kc, "127.0.0.1:"+strconv.Itoa(hubPort), filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key"))
	cfg := deviceEdgecoreConfig(t, keDir, dir, node, token, tapPort, certPort, mqttPort)
	edgeLog, edgeDone := startUpstreamEdgecore(t, keDir, cfg)
	if d := os.Getenv("KEDGE_CAPTURE_LOGS"); d != "" {
		t.Cleanup(func() {
			_ = os.WriteFile(filepath.Join(d, "edgecore.log"), []byte(edgeLog.String()), 0o644)
			_ = os.WriteFile(filepath.Join(d, "cloudcore.log"), []byte(cloudLog.String()), 0o644)
			writeTapGolden(t, filepath.Join(d, "frames.json"), tap.snapshot())
		})
	}
	alive := func() {
		select {
		case <-edgeDone:
			t.Fatalf("upstream edgecore exited:\n%s", tail(edgeLog.String(), 8<<10))
		default:
		}
	}
	seen := func(dir, substr string) bool {
		for _, f := range tap.snapshot() {
			if f.Dir == dir && strings.Contains(string(f.Msg), substr) {
				return true
			}
		}
		return false
	}
	waitFor(t, "the edge's first message through the tap", 2*time.Minute, func() (bool, string) {
		alive()
		return len(tap.snapshot()) > 0, "no frame yet"
	})
	ns := "ke-pair"
	if out, err := env.Kubectl("create", "namespace", ns); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := env.Kubectl("apply", "-f", thermometerYAML(t, ns, node, "21.5")); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	waitFor(t, "the Device downstream", time.Minute, func() (bool, string) {
		alive()
		return seen("down", "thermometer-1"), "not yet"
	})
	time.Sleep(3 * time.Second) // let the model and membership messages around it pass too
	if out, err := env.Kubectl("patch", "device", "-n", ns, "thermometer-1", "--type", "json",
		"-p", `[{"op":"replace","path":"/spec/properties/1/desired/value","value":"22.5"}]`); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	waitFor(t, "the changed desired value downstream", time.Minute, func() (bool, string) {
		return seen("down", "22.5"), "not yet"
	})
	// KubeEdge v1.23's device ID on MQTT is <namespace>/<name>.
	now := time.Now().UnixMilli()
	sub.publish(t, "$hw/events/device/"+ns+"/thermometer-1/twin/update",
		fmt.Sprintf(`{"event_id":"e2e-1","timestamp":%d,"twin":{"temperature":{"actual":{"value":"23.25"},"metadata":{"type":"float"}}}}`, now))
	waitFor(t, "the twin update upstream and its answer", time.Minute, func() (bool, string) {
		alive()
		return seen("up", "23.25") && seen("down", `"resource":"twin"`), "not yet"
	})
	sub.publish(t, "$hw/events/device/"+ns+"/thermometer-1/state/update", `{"event_id":"e2e-2","timestamp":`+strconv.FormatInt(now, 10)+`,"state":"online"}`)
	waitFor(t, "the state update upstream", time.Minute, func() (bool, string) {
		alive()
		return seen("up", "state/update"), "not yet"
	})
	time.Sleep(3 * time.Second)
	if out, err := env.Kubectl("delete", "device", "-n", ns, "thermometer-1"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	time.Sleep(5 * time.Second)
	if out, err := env.Kubectl("delete", "devicemodel", "-n", ns, "thermometer"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	time.Sleep(5 * time.Second)
	frames := tap.snapshot()
	for _, f := range frames {
		var m struct {
			Router map[string]any `json:"router"`
		}
		_ = json.Unmarshal(f.Msg, &m)
		t.Logf("%s %v", f.Dir, m.Router)
	}
	t.Logf("MQTT: %s", sub.dump())
	if os.Getenv("KEDGE_CAPTURE_GOLDEN") != "" {
		writeTapGolden(t, filepath.Join(k8senv.Repo(), "plugins", "builtin", "devicecontroller", "testdata", "kubeedge-v1.23.1-device-flow.json"), frames)
	}
}

// hasDevice reports whether a KubeEdge membership/updated payload lists id in field.
func hasDevice(p map[string]any, field, id string) bool {
	list, _ := p[field].([]any)
	for _, d := range list {
		if m, ok := d.(map[string]any); ok && m["id"] == id {
			return true
		}
	}
	return false
}

// KubeEdge v1.23.1's edgecore (its devicetwin and eventbus on Debian's mosquitto; edged off) under
// Kedge's cloudcore: its devicetwin's membership/detail is answered (nothing refused); a DeviceModel
// and Device applied with kubectl reach it in the shape upstream cloudcore sends (its devicetwin
// announces the device on $hw/events/node/<node>/membership/updated and its metaserver stores the
// Device); a twin update published on its broker ($hw/events/device/<ns>/<name>/twin/update, the
// device ID is <namespace>/<name> in v1.23) reaches the Device status and the DeviceStatus object; a
// state update reaches the state; the Device deleted is removed from the edge's membership.
func TestUpstreamEdgecoreDeviceTwinRoundTripUnderKedgeCloudcore(t *testing.T) {
	needBinaries(t)
	keDir := kubeedgeDir(t, "edgecore")
	ensureMosquittoClients(t)
	env, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	if err := env.InstallCRDs(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pkiDir := filepath.Join(dir, "pki")
	hubPort, certPort := freePort(t), freePort(t)
	cloud := start(t, "cloudcore", []string{
		"KEDGE_MODULES__CLOUDHUB__ADDRESS=127.0.0.1:" + strconv.Itoa(hubPort),
		"KEDGE_MODULES__CLOUDHUB__CERTSERVERADDRESS=127.0.0.1:" + strconv.Itoa(certPort),
		"KEDGE_MODULES__CLOUDHUB__PKIDIR=" + pkiDir,
		"KEDGE_MODULES__EDGECONTROLLER__ENABLE=true",
		"KEDGE_MODULES__EDGECONTROLLER__KUBECONFIG=" + env.Kubeconfig,
		"KEDGE_MODULES__DEVICECONTROLLER__ENABLE=true",
		"KEDGE_MODULES__DEVICECONTROLLER__KUBECONFIG=" + env.Kubeconfig,
	})
	cloud.waitReady()
	code, token, stderr := run(t, "cloudcore", nil, "token", "create", "--pki-dir", pkiDir)
	if code != 0 {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	mqttPort := startMosquittoBroker(t)
	sub := startMQTTSub(t, mqttPort)
	node := fmt.Sprintf("ke-dev-%d", os.Getpid()%100000)
	edgeDir := filepath.Join(dir, "edge")
	if err := os.MkdirAll(edgeDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := deviceEdgecoreConfig(t, keDir, edgeDir, node, strings.TrimSpace(token), hubPort, certPort, mqttPort)
	edgeLog, edgeDone := startUpstreamEdgecore(t, keDir, cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cloudcore log (last 8 KiB):\n%s", tail(cloud.stderr.String(), 8<<10))
		}
	})
	alive := func() {
		select {
		case <-edgeDone:
			t.Fatalf("upstream edgecore exited:\n%s", tail(edgeLog.String(), 8<<10))
		default:
		}
	}
	waitFor(t, "the upstream edgecore connected", 2*time.Minute, func() (bool, string) {
		alive()
		return strings.Contains(cloud.stderr.String(), "node connected"), "not yet"
	})
	waitFor(t, "its devicetwin's membership/detail handled by devicecontroller", time.Minute, func() (bool, string) {
		v := cloud.metric("kedge_devicecontroller_upstream_total", `type="membership_detail"`)
		return v >= 1, fmt.Sprint(v)
	})

	ns := "ke-dev"
	if out, err := env.Kubectl("create", "namespace", ns); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	from := sub.mark()
	if out, err := env.Kubectl("apply", "-f", thermometerYAML(t, ns, node, "21.5")); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	id := ns + "/thermometer-1"
	waitFor(t, "the device in the upstream edge's membership (membership/updated on its broker)", time.Minute, func() (bool, string) {
		alive()
		return sub.find(from, "$hw/events/node/"+node+"/membership/updated", func(p map[string]any) bool { return hasDevice(p, "added_devices", id) }) != nil, sub.dump()
	})
	waitFor(t, "the DeviceModel and Device stored by the upstream edge's metaserver", time.Minute, func() (bool, string) {
		alive()
		l := edgeLog.String()
		return strings.Contains(l, "successfully insert or update obj:/devices.kubeedge.io/v1beta1/devicemodels/"+ns+"/thermometer") &&
			strings.Contains(l, "successfully insert or update obj:/devices.kubeedge.io/v1beta1/devices/"+id), "not yet"
	})

	// A reported value published on the edge's broker reaches the Device status and its DeviceStatus.
	now := time.Now().UnixMilli()
	sub.publish(t, "$hw/events/device/"+id+"/twin/update",
		fmt.Sprintf(`{"event_id":"e2e-1","timestamp":%d,"twin":{"temperature":{"actual":{"value":"23.25"},"metadata":{"type":"float"}}}}`, now))
	for _, what := range []string{"device", "devicestatus"} {
		waitFor(t, "the reported temperature in the "+what, time.Minute, func() (bool, string) {
			alive()
			out, err := env.Kubectl("get", what, "-n", ns, "thermometer-1", "-o", `jsonpath={.status.twins[?(@.propertyName=="temperature")].reported.value}`)
			return err == nil && out == "23.25", out
		})
	}
	sub.publish(t, "$hw/events/device/"+id+"/state/update", fmt.Sprintf(`{"event_id":"e2e-2","timestamp":%d,"state":"online"}`, now))
	waitFor(t, "the device state online in the Device status", time.Minute, func() (bool, string) {
		alive()
		out, err := env.Kubectl("get", "device", "-n", ns, "thermometer-1", "-o", `jsonpath={.status.state}`)
		return err == nil && out == "online", out
	})

	// Deleted with kubectl, the device leaves the edge's membership.
	from = sub.mark()
	if out, err := env.Kubectl("delete", "device", "-n", ns, "thermometer-1"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	waitFor(t, "the device removed from the upstream edge's membership", time.Minute, func() (bool, string) {
		alive()
		return sub.find(from, "$hw/events/node/"+node+"/membership/updated", func(p map[string]any) bool { return hasDevice(p, "removed_devices", id) }) != nil, sub.dump()
	})
	if bad := grepLines(cloud.stderr.String(), "report refused", 10) + grepLines(cloud.stderr.String(), "report invalid", 10) + grepLines(cloud.stderr.String(), "request refused", 10); bad != "" {
		t.Errorf("cloudcore refused messages of the upstream edge:\n%s", bad)
	}
}

// Kedge's edgecore under KubeEdge v1.23.1's cloudcore (websocket, KubeEdge's JSON lane), its eventbus
// on Debian's mosquitto: a DeviceModel and Device applied with kubectl reach Kedge's devicetwin (its
// membership/updated names the device, the desired value is published on twin/update/document, the
// twin is in twin/get); a reported value published on the Kedge edge's broker goes to upstream
// cloudcore as KubeEdge's twin/edge_updated, which its devicecontroller takes and answers (and
// writes into the DeviceStatus); the Device deleted leaves the Kedge edge's membership.
func TestKedgeEdgecoreDeviceTwinRoundTripUnderUpstreamCloudcore(t *testing.T) {
	needBinaries(t)
	keDir := kubeedgeDir(t, "cloudcore")
	ensureMosquittoClients(t)
	env, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	kcfg, err := clientcmd.BuildConfigFromFlags("", env.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kc := kubernetes.NewForConfigOrDie(kcfg)
	hubPort, certPort, cloudLog := upstreamCloudcore(t, keDir, env)
	token := upstreamToken(t, kc)
	mqttPort := startMosquittoBroker(t)
	sub := startMQTTSub(t, mqttPort)

	node := fmt.Sprintf("kedge-dev-ke-%d", os.Getpid()%100000)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "edgecore.yaml")
	waitFor(t, "edgecore join with the upstream token", time.Minute, func() (bool, string) {
		code, out, stderr := run(t, "edgecore", nil, "join", "--cloudcore-address", "127.0.0.1", "--token", token,
			"--node-name", node, "--data-dir", dir, "--config-out", cfg,
			"--cert-port", strconv.Itoa(certPort), "--hub-port", strconv.Itoa(hubPort))
		return code == 0, fmt.Sprintf("exit %d: %s %s", code, out, stderr)
	})
	edge := start(t, "edgecore", []string{
		"KEDGE_STORE__PATH=" + filepath.Join(dir, "edge.db"),
		"KEDGE_MODULES__NODESTATUS__INTERVAL=2s",
		"KEDGE_MODULES__EDGEHUB__HEARTBEAT=5s",
		"KEDGE_MODULES__EVENTBUS__MQTTMODE=external",
		"KEDGE_MODULES__EVENTBUS__EXTERNALURL=tcp://127.0.0.1:" + strconv.Itoa(mqttPort),
	}, "--config", cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Kedge edgecore log (last 8 KiB):\n%s", tail(edge.stderr.String(), 8<<10))
		}
	})
	ctx := context.Background()
	waitFor(t, "Node "+node+" registered through upstream cloudcore", 3*time.Minute, func() (bool, string) {
		_, err := kc.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})

	ns := "kedge-dev-ke"
	if out, err := env.Kubectl("create", "namespace", ns); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	from := sub.mark()
	if out, err := env.Kubectl("apply", "-f", thermometerYAML(t, ns, node, "21.5")); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	waitFor(t, "the device in the Kedge edge's membership (membership/updated on its broker)", 2*time.Minute, func() (bool, string) {
		return sub.find(from, "$hw/events/node/"+node+"/membership/updated", func(p map[string]any) bool {
			list, _ := p["added_devices"].([]any)
			for _, d := range list {
				if m, ok := d.(map[string]any); ok && m["name"] == "thermometer-1" && m["namespace"] == ns {
					return true
				}
			}
			return false
		}) != nil, sub.dump()
	})
	waitFor(t, "the Device's desired setpoint in Kedge's devicetwin (twin/update/document)", 2*time.Minute, func() (bool, string) {
		return sub.find(from, "$hw/events/device/thermometer-1/twin/update/document", func(p map[string]any) bool {
			return strings.Contains(fmt.Sprint(p["twin"]), "21.5")
		}) != nil, sub.dump()
	})
	got := sub.request(t, "twin/get", "$hw/events/device/thermometer-1/twin/get", func(id string) string { return `{"event_id":"` + id + `"}` },
		"$hw/events/device/thermometer-1/twin/get/result", func(p map[string]any) bool { return strings.Contains(fmt.Sprint(p["twin"]), "21.5") })
	t.Logf("twin/get on the Kedge edge: %v", got["twin"])

	// A reported value published on the Kedge edge's broker reaches upstream's devicecontroller.
	now := time.Now().UnixMilli()
	sub.publish(t, "$hw/events/device/thermometer-1/twin/update",
		fmt.Sprintf(`{"event_id":"e2e-1","timestamp":%d,"twin":{"temperature":{"actual":{"value":"23.25","metadata":{"timestamp":%d}}}}}`, now, now))
	want := "resource is: node/" + node + "/device/" + ns + "/thermometer-1/twin/edge_updated"
	waitFor(t, "upstream cloudcore's devicecontroller taking the twin update", time.Minute, func() (bool, string) {
		return strings.Contains(cloudLog.String(), want), "not yet"
	})
	waitFor(t, "the twin update processed by upstream cloudcore", time.Minute, func() (bool, string) {
		for _, l := range strings.Split(cloudLog.String(), "\n") {
			if strings.Contains(l, "process successfully") && strings.Contains(cloudLog.String(), want) {
				return true, ""
			}
		}
		return false, "no 'process successfully'"
	})
	var ds string
	waitFor(t, "the temperature twin in upstream's DeviceStatus", time.Minute, func() (bool, string) {
		ds, _ = env.Kubectl("get", "devicestatus", "-n", ns, "thermometer-1", "-o", `jsonpath={.status.twins[?(@.propertyName=="temperature")]}`)
		return ds != "", "none"
	})
	t.Logf("upstream DeviceStatus twin: %s", ds)
	for _, bad := range []string{"Unmarshall failed", "Failed to apply device status", "process failure"} {
		if l := grepLines(cloudLog.String(), bad, 5); l != "" {
			t.Errorf("upstream cloudcore: %s", l)
		}
	}

	// A state published on the Kedge edge's broker reaches upstream's DeviceStatus (state/update).
	sub.publish(t, "$hw/events/device/thermometer-1/state/update", `{"event_id":"e2e-2","state":"online"}`)
	waitFor(t, "the state online in upstream's DeviceStatus", time.Minute, func() (bool, string) {
		out, err := env.Kubectl("get", "devicestatus", "-n", ns, "thermometer-1", "-o", `jsonpath={.status.state}`)
		return err == nil && out == "online", out
	})

	// Deleted with kubectl, the device leaves Kedge's membership.
	from = sub.mark()
	if out, err := env.Kubectl("delete", "device", "-n", ns, "thermometer-1"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	waitFor(t, "the device removed from the Kedge edge's membership", time.Minute, func() (bool, string) {
		return sub.find(from, "$hw/events/node/"+node+"/membership/updated", func(p map[string]any) bool {
			return strings.Contains(fmt.Sprint(p["removed_devices"]), "thermometer-1")
		}) != nil, sub.dump()
	})
}
