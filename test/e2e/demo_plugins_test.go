package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/test/k8senv"
)

// The plugin framework part of `make demo`, run by the demo's own script (hack/demo-plugins.sh) so
// the demo cannot rot: `prepare` builds the modbus mapper as a process plugin (make module-modbus,
// 1.0.0 and 2.0.0), the thermocodec WASM codec v1 and v2 (make wasm), the libmodbus server, the T-100
// simulator and a registry key; cloudcore serves the (empty) registry folder with the
// rolloutcontroller on; the edge joins with --registry-key and starts with the script's flags (mapper
// as a sha256-pinned process plugin, codec as WASM v1); `run` then drives the device through the
// mapper, hot-swaps the codec v1 → v2 while polling and rolls mapper 2.0.0 out from the signed
// registry with a PluginRollout. The script fails on any missed step; this test also checks that
// what it printed says what the demo claims: the process and WASM runtimes, the Kelvin switch, no
// reading lost, the rollout Complete and the node running 2.0.0 from its plugins folder.
func TestDemoPluginStepsRunProcessMapperWASMHotSwapAndRolloutLosingNoReading(t *testing.T) {
	needBinaries(t)
	ensureMosquittoClients(t)
	out, err := os.MkdirTemp("", "kdp") // unix socket paths (the mapper's, the DMI's) are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(out) })
	script := filepath.Join("..", "..", "hack", "demo-plugins.sh")
	env := append(os.Environ(), "GOFLAGS=") // the pieces are built as make builds them, not -race

	prepared := make(chan error, 1)
	go func() { // meanwhile the control plane starts
		cmd := exec.Command(script, "prepare", out)
		cmd.Env = env
		b, err := cmd.CombinedOutput()
		if err != nil {
			err = fmt.Errorf("hack/demo-plugins.sh prepare: %v\n%s", err, b)
		}
		prepared <- err
	}()
	k8s, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Stop() })
	if err := k8s.InstallCRDs(); err != nil {
		t.Fatal(err)
	}
	if err := <-prepared; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd := exec.Command(script, "stop", out)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("hack/demo-plugins.sh stop: %v\n%s", err, b)
		}
	})

	dir := t.TempDir()
	cloud := &cluster{t: t, k8s: k8s, dir: dir, pkiDir: filepath.Join(dir, "pki"), hubPort: freePort(t), certPort: freePort(t),
		cloudEnv: []string{
			"KEDGE_MODULES__CLOUDHUB__REGISTRYDIR=" + filepath.Join(out, "registry"),
			"KEDGE_MODULES__DEVICECONTROLLER__ENABLE=true",
			"KEDGE_MODULES__DEVICECONTROLLER__KUBECONFIG=" + k8s.Kubeconfig,
			"KEDGE_MODULES__DEVICECONTROLLER__INVENTORYWAIT=2s",
			"KEDGE_MODULES__ROLLOUTCONTROLLER__ENABLE=true",
			"KEDGE_MODULES__ROLLOUTCONTROLLER__KUBECONFIG=" + k8s.Kubeconfig,
		}}
	cloud.startCloud()
	code, token, stderr := run(t, "cloudcore", nil, "token", "create", "--pki-dir", cloud.pkiDir, "--node", "demo-edge")
	if code != 0 {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	config := filepath.Join(dir, "edgecore.yaml")
	code, jout, stderr := run(t, "edgecore", nil, "join", "--cloudcore-address", "127.0.0.1", "--token", strings.TrimSpace(token),
		"--node-name", "demo-edge", "--data-dir", filepath.Join(dir, "edge"), "--config-out", config,
		"--cert-port", strconv.Itoa(cloud.certPort), "--hub-port", strconv.Itoa(cloud.hubPort),
		"--registry-key", filepath.Join(out, "regkey", "registry.pub"))
	if code != 0 {
		t.Fatalf("join: %d %s %s", code, jout, stderr)
	}
	if b, err := exec.Command(script, "configure", out, config).CombinedOutput(); err != nil {
		t.Fatalf("hack/demo-plugins.sh configure: %v\n%s", err, b)
	}
	args := []string{"--config", config}
	f, err := os.Open(filepath.Join(out, "edgecore.args"))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			args = append(args, l)
		}
	}
	f.Close()
	mqttPort := freePort(t)
	socket := filepath.Join(out, "edgecore.sock")
	edge := start(t, "edgecore", []string{
		"KEDGE_MODULES__NODESTATUS__INTERVAL=1s",
		"KEDGE_MODULES__EDGEHUB__HEARTBEAT=1s", "KEDGE_MODULES__EDGEHUB__BACKOFFMAX=1s", "KEDGE_MODULES__EDGEHUB__ACKTIMEOUT=2s",
		"KEDGE_MODULES__METAMANAGER__CONSUMERS__POD=noruntime",
		"KEDGE_MODULES__NORUNTIME__ENABLE=true",
		"KEDGE_MODULES__EDGED__ENABLE=false", // the demo's pods are not what this test is about
		"KEDGE_MODULES__EVENTBUS__MQTTMODE=internal",
		"KEDGE_MODULES__EVENTBUS__INTERNALADDRESS=127.0.0.1:" + strconv.Itoa(mqttPort),
		"KEDGE_ADMIN__SOCKET=" + socket, "KEDGE_MODULES__PLUGINMANAGER__CONTROLSOCKET=" + socket, // as demo.sh
	}, args...)
	edge.socket = socket
	edge.waitReadyOffline()
	c := &cluster{t: t, k8s: k8s, node: "demo-edge", edge: edge}
	waitFor(t, "edge node Ready", 60*time.Second, c.nodeReady)

	cmd := exec.Command(script, "run", out)
	cmd.Env = append(env, "KUBECTL="+filepath.Join(k8s.BinDir, "kubectl"), "KUBECONFIG="+k8s.Kubeconfig,
		"EDGECORE="+filepath.Join(binDir, "edgecore"), "EDGE_SOCKET="+edge.socket, "MQTT_PORT="+strconv.Itoa(mqttPort), "NODE=demo-edge")
	b, err := cmd.CombinedOutput()
	got := string(b)
	t.Logf("hack/demo-plugins.sh run:\n%s", got)
	if err != nil {
		t.Fatalf("hack/demo-plugins.sh run failed: %v", err)
	}
	for _, want := range []string{
		"modbus", "process", "thermo-codec", "wasm", // module ls: the runtimes the demo claims
		"swapped thermo-codec: wasm -> wasm",
		"first reading decoded in Kelvin",
		"readings lost: 0 (the whole run: codec swap and mapper rollout)",
		"Complete",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the demo's plugin steps did not print %q", want)
		}
	}
	// module ls after the rollout: the mapper the rollout installed runs, by its sha256.
	if sum, err := fileSum(filepath.Join(out, "mapper-2.0.0", "modules", "modbus")); err != nil {
		t.Error(err)
	} else if !strings.Contains(got, "sha256:"+sum[:12]) {
		t.Errorf("edgecore module ls after the rollout does not show mapper 2.0.0's sha256 %s", sum[:12])
	}
	if n := strings.Count(got, "readings lost: 0"); n != 2 {
		t.Errorf("\"readings lost: 0\" printed %d times, want after the swap and after the rollout", n)
	}
}
