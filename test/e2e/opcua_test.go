package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
	"github.com/kedge-io/kedge/plugins/mappers/opcua/uaserver"
	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	"github.com/kedge-io/kedge/test/k8senv"
)

// The OPC-UA mapper's acceptance path (issue 24) with the real binaries, the real API server and a real
// node-opcua server as the device: the examples' boiler DeviceModel and Device are kubectl-applied with
// the login's password in a Secret (the Device holds only the reference); edgecore's opcua mapper logs
// in, subscribes and `kubectl get device` shows live values; the desired setpoint reaches the server
// (by browse path); the server stopped → the Device goes offline in kubectl, restarted → online with
// values moving; a wrong password in the Secret → the Device's Healthy condition says
// AuthenticationFailed (printer columns and message), without the password in any log; the right one
// again → online.
func TestOPCUABoilerThroughKubectlWithItsPasswordInASecret(t *testing.T) {
	needBinaries(t)
	srv := uaserver.Start(t)
	k8s, err := k8senv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Stop() })
	if err := k8s.InstallCRDs(); err != nil {
		t.Fatal(err)
	}
	api, err := devicecontroller.NewRESTClient(k8s.Config)
	if err != nil {
		t.Fatal(err)
	}
	sockDir, err := os.MkdirTemp("", "ku") // unix socket paths must stay short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	dmiSock := filepath.Join(sockDir, "dmi.sock")
	c := newDeviceCluster(t, k8s, "e2e-opcua", []string{
		"KEDGE_MODULES__DMI__SOCKET=" + dmiSock,
		"KEDGE_MODULES__DMI__RECONCILEINTERVAL=300ms",
		"KEDGE_MODULES__OPCUA__ENABLE=true",
		"KEDGE_MODULES__OPCUA__DMISOCKET=" + dmiSock,
		"KEDGE_MODULES__OPCUA__SOCKET=" + filepath.Join(sockDir, "mappers", "opcua.sock"),
		"KEDGE_MODULES__OPCUA__CALLTIMEOUT=10s",
		"KEDGE_MODULES__OPCUA__HEALTHCYCLE=1s",
		"KEDGE_MODULES__OPCUA__BACKOFFMIN=200ms",
		"KEDGE_MODULES__OPCUA__BACKOFFMAX=2s",
	})
	waitFor(t, "edge node Ready", 60*time.Second, c.nodeReady)
	waitFor(t, "the opcua mapper registered with edgecore's DMI", 60*time.Second, func() (bool, string) {
		v := c.edge.metric("kedge_dmi_mappers")
		return v >= 1, fmt.Sprint(v)
	})

	const ns, name, wrong = "opcua", "boiler-1", "Wr0ng-Pa55word"
	c.kubectl("create", "namespace", ns)
	c.kubectl("create", "secret", "generic", "boiler-login", "-n", ns, "--from-literal=password=secret")
	applyOPCUAExamples(t, c, ns, srv.URL())
	get := func() *v1beta1.Device { return getDevice(t, api, ns, name) }
	reported := func(prop string) string {
		tw, _ := findTwin(get().Status, prop)
		return tw.Reported.Value
	}
	healthy := func() (status, reason, msg string) {
		for _, cd := range get().Status.Conditions {
			if cd.Type == v1beta1.ConditionHealthy {
				return string(cd.Status), cd.Reason, cd.Message
			}
		}
		return "", "", ""
	}
	temperatureMoves := func(t *testing.T, what string) {
		t.Helper()
		first := ""
		waitFor(t, what, 2*time.Minute, func() (bool, string) {
			v := reported("temperature")
			if first == "" {
				first = v
			}
			return v != "" && v != first, fmt.Sprintf("%q (first %q)", v, first)
		})
	}

	t.Run("kubectl get device shows live values from the subscription", func(t *testing.T) {
		waitFor(t, "label boiler-1 in the Device status", 2*time.Minute, func() (bool, string) {
			v := reported("label")
			return v == "boiler-1", fmt.Sprintf("%q", v)
		})
		temperatureMoves(t, "temperature moving in the Device status")
		out := c.kubectl("get", "device", name, "-n", ns, "-o", "yaml")
		if !strings.Contains(out, "propertyName: temperature") || !strings.Contains(out, "state: online") {
			t.Fatalf("kubectl get device -o yaml shows no live temperature and state online:\n%s", out)
		}
		if strings.Contains(out, "value: secret") {
			t.Fatalf("the password shows in the Device:\n%s", out)
		}
	})

	t.Run("the desired setpoint reaches the server by browse path", func(t *testing.T) {
		waitFor(t, "server Setpoint = 65", time.Minute, func() (bool, string) {
			v := srv.Value("Setpoint")
			return v == "65", v
		})
		waitFor(t, "setpoint 65 reported", time.Minute, func() (bool, string) {
			v := reported("setpoint")
			return v == "65", fmt.Sprintf("%q", v)
		})
	})

	t.Run("server stopped: offline in kubectl; restarted: online with values moving", func(t *testing.T) {
		srv.Stop()
		waitFor(t, "Device offline", 2*time.Minute, func() (bool, string) {
			s := get().Status
			return s.State == "offline", s.State
		})
		out := c.kubectl("get", "devices", "-n", ns)
		if !strings.Contains(out, "False") {
			t.Fatalf("kubectl get devices does not show the device unhealthy:\n%s", out)
		}
		srv.Restart()
		waitFor(t, "Device online again", 3*time.Minute, func() (bool, string) {
			s := get().Status
			return s.State == "online", s.State
		})
		temperatureMoves(t, "temperature moving after the restart")
	})

	t.Run("a wrong password in the Secret is an AuthenticationFailed condition; the right one recovers", func(t *testing.T) {
		setSecret(t, c, ns, wrong)
		waitFor(t, "Healthy False AuthenticationFailed", 2*time.Minute, func() (bool, string) {
			st, reason, _ := healthy()
			return st == "False" && reason == "AuthenticationFailed", st + " " + reason
		})
		_, _, msg := healthy()
		if !strings.Contains(msg, "secret boiler-login key password") || !strings.Contains(msg, "BadUserAccessDenied") {
			t.Fatalf("condition message %q: want the Secret and the server's refusal named", msg)
		}
		out := c.kubectl("get", "devices", "-n", ns)
		if !strings.Contains(out, "AuthenticationFailed") {
			t.Fatalf("kubectl get devices does not show the reason:\n%s", out)
		}
		if s := get().Status.State; s != "offline" {
			t.Fatalf("state %q with a wrong password, want offline", s)
		}
		for what, log := range map[string]string{"edgecore": c.edge.stderr.String(), "cloudcore": c.cloud.stderr.String()} {
			if strings.Contains(log, wrong) {
				t.Fatalf("%s's log shows the password", what)
			}
		}
		setSecret(t, c, ns, "secret")
		waitFor(t, "Healthy True and online again", 2*time.Minute, func() (bool, string) {
			st, reason, _ := healthy()
			return st == "True" && get().Status.State == "online", st + " " + reason + " " + get().Status.State
		})
	})
}

// setSecret replaces the password in the Secret boiler-login.
func setSecret(t *testing.T, c *cluster, ns, password string) {
	t.Helper()
	manifest := c.kubectl("create", "secret", "generic", "boiler-login", "-n", ns, "--from-literal=password="+password, "--dry-run=client", "-o", "yaml")
	f := filepath.Join(t.TempDir(), "secret.yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	c.kubectl("apply", "-f", f)
}

// applyOPCUAExamples kubectl-applies examples/devices/opcua-{model,device}.yaml in ns, the device bound
// to the cluster's node, pointed at url with security None (the test server's certificate is not
// pinned) and short cycles.
func applyOPCUAExamples(t *testing.T, c *cluster, ns, url string) {
	t.Helper()
	load := func(f string) map[string]any {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", "devices", f))
		if err != nil {
			t.Fatal(err)
		}
		j, err := yaml.YAMLToJSON(b)
		if err != nil {
			t.Fatalf("examples/devices/%s: %v", f, err)
		}
		var m map[string]any
		if err := json.Unmarshal(j, &m); err != nil {
			t.Fatal(err)
		}
		m["metadata"].(map[string]any)["namespace"] = ns
		return m
	}
	model, device := load("opcua-model.yaml"), load("opcua-device.yaml")
	spec := device["spec"].(map[string]any)
	if spec["nodeName"] != "edge-1" {
		t.Fatalf("examples/devices/opcua-device.yaml changed: nodeName %v, want edge-1", spec["nodeName"])
	}
	spec["nodeName"] = c.node
	cfg := spec["protocol"].(map[string]any)["configData"].(map[string]any)
	pw, _ := cfg["password"].(map[string]any)
	if ref, _ := pw["secretKeyRef"].(map[string]any); ref["name"] != "boiler-login" || ref["key"] != "password" {
		t.Fatalf("examples/devices/opcua-device.yaml changed: password %v, want secretKeyRef boiler-login/password", cfg["password"])
	}
	cfg["url"] = url
	for _, k := range []string{"securityPolicy", "securityMode", "certificate", "privateKey"} {
		delete(cfg, k)
	}
	cfg["timeout"] = "10s"
	for _, p := range spec["properties"].([]any) {
		p.(map[string]any)["collectCycle"] = 200
	}
	dir := t.TempDir()
	for i, obj := range []map[string]any{model, device} {
		b, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, strconv.Itoa(i)+".json")
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		c.kubectl("apply", "-f", f)
	}
}
