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
// golden messages Kedge's encoders and decoders are tested against.
func TestCaptureKubeEdgeDeviceMessagesBetweenUpstreamCloudcoreAndEdgecore(t *testing.T) {
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
