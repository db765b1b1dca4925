package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kedge-io/kedge/plugins/builtin/devicecontroller"
	"github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
	"github.com/kedge-io/kedge/test/k8senv"
)

// The acceptance path of the device work (issue 7) with the real binaries, the real API server and the
// real mosquitto clients, once with edgecore's embedded broker and once with Debian's mosquitto as the
// external broker: kubectl apply a DeviceModel and a Device → the edge stores the membership → the
// desired value reaches mosquitto_sub on the delta topic → a reported value published with
// mosquitto_pub is in the Device status within 2 s; values reported while cloudcore is down arrive
// after it returns, the newest winning; bad input is answered on the result topic and stores nothing.
func TestDeviceTwinsFlowBetweenKubectlAndMQTTWithEitherBroker(t *testing.T) {
	needBinaries(t)
	ensureMosquittoClients(t)
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

	cases := []struct {
		name string
		// broker returns edgecore's eventbus settings and the port mosquitto_pub/sub use.
		broker func(t *testing.T) (edgeEnv []string, port int)
	}{
		{"embedded broker (mqttMode internal)", func(t *testing.T) ([]string, int) {
			port := freePort(t)
			return []string{"KEDGE_MODULES__EVENTBUS__MQTTMODE=internal",
				"KEDGE_MODULES__EVENTBUS__INTERNALADDRESS=127.0.0.1:" + strconv.Itoa(port)}, port
		}},
		{"Debian's mosquitto (mqttMode external)", func(t *testing.T) ([]string, int) {
			port := startMosquittoBroker(t)
			return []string{"KEDGE_MODULES__EVENTBUS__MQTTMODE=external",
				"KEDGE_MODULES__EVENTBUS__EXTERNALURL=tcp://127.0.0.1:" + strconv.Itoa(port)}, port
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			edgeEnv, port := tc.broker(t)
			d := &deviceRig{t: t, api: api, ns: "devices-" + strconv.Itoa(i), device: "thermometer-1"}
			d.c = newDeviceCluster(t, k8s, "e2e-devices-"+strconv.Itoa(i), edgeEnv)
			d.mq = startMQTTSub(t, port)
			d.run()
		})
	}
}

// deviceRig drives one cluster through the acceptance steps.
type deviceRig struct {
	t          *testing.T
	c          *cluster
	mq         *mqttSub
	api        rest.Interface
	ns, device string
}

func (d *deviceRig) topic(suffix string) string { return "$hw/events/device/" + d.device + suffix }

func (d *deviceRig) run() {
	t, c := d.t, d.c
	waitFor(t, "edge node Ready", 60*time.Second, c.nodeReady)
	waitFor(t, "eventbus connected to its broker", 30*time.Second, func() (bool, string) {
		v := c.edge.metric("kedge_eventbus_connected")
		return v >= 1, fmt.Sprint(v)
	})

	t.Run("kubectl apply reaches the edge and a reported value reaches the Device status within 2s", func(t *testing.T) {
		d.t = t
		d.applyExamples()
		// The edge stores the membership: membership/get answers with the device.
		node := c.node
		d.mq.request(t, "membership stored on the edge", "$hw/events/node/"+node+"/membership/get",
			func(id string) string { return `{"event_id":"` + id + `"}` },
			"$hw/events/node/"+node+"/membership/get/result", func(p map[string]any) bool {
				devs, _ := p["devices"].([]any)
				for _, x := range devs {
					if m, _ := x.(map[string]any); m["name"] == d.device && m["namespace"] == d.ns {
						return true
					}
				}
				return false
			})
		d.mq.await(t, 0, "$hw/events/node/"+node+"/membership/updated", func(p map[string]any) bool {
			added, _ := p["added_devices"].([]any)
			for _, x := range added {
				if m, _ := x.(map[string]any); m["name"] == d.device {
					return true
				}
			}
			return false
		})
		// The desired value of the Device spec reaches the mapper's delta topic.
		d.mq.await(t, 0, d.topic("/twin/update/delta"), func(p map[string]any) bool {
			delta, _ := p["delta"].(map[string]any)
			return delta["setpoint"] == "21.5"
		})

		ts := time.Now().UnixMilli()
		begin := time.Now()
		d.report(t, "r-1", "temperature", "22.5", ts)
		var took time.Duration
		waitFor(t, "reported temperature in the Device status", 30*time.Second, func() (bool, string) {
			tw := d.twin("temperature")
			took = time.Since(begin)
			return tw.Reported.Value == "22.5", fmt.Sprintf("%+v", tw)
		})
		if took > 2*time.Second {
			t.Fatalf("reported value reached the Device status %s after mosquitto_pub, want ≤ 2s", took)
		}
		t.Logf("mosquitto_pub → Device status: %s", took)
		// The desired value the edge holds comes back as observedDesired.
		waitFor(t, "observed desired setpoint in the Device status", 30*time.Second, func() (bool, string) {
			tw := d.twin("setpoint")
			return tw.ObservedDesired.Value == "21.5", fmt.Sprintf("%+v", tw)
		})
		out := c.kubectl("get", "device", d.device, "-n", d.ns, "-o", "yaml")
		if !strings.Contains(out, "propertyName: temperature") || !strings.Contains(out, `value: "22.5"`) ||
			!strings.Contains(out, fmt.Sprintf(`timestamp: "%d"`, ts)) {
			t.Fatalf("kubectl get device -o yaml does not show the reported value:\n%s", out)
		}
	})

	t.Run("values reported while cloudcore is down arrive after it returns and the newest wins", func(t *testing.T) {
		d.t = t
		if code, _ := c.cloud.stop(syscall.SIGTERM, 30*time.Second); code != 0 {
			t.Fatalf("cloudcore exit %d", code)
		}
		older := time.Now().UnixMilli()
		for i, v := range []struct {
			value string
			ts    int64
		}{{"23.5", older}, {"24.5", older + 1000}} {
			sent := c.edge.metric("kedge_devicetwin_status_sent_total")
			d.report(t, "off-"+strconv.Itoa(i), "temperature", v.value, v.ts)
			// Each value leaves devicetwin in its own upstream message (queued in metamanager's outbox).
			waitFor(t, "devicetwin sent "+v.value+" upstream", 30*time.Second, func() (bool, string) {
				now := c.edge.metric("kedge_devicetwin_status_sent_total")
				return now > sent, fmt.Sprint(now)
			})
		}
		// A value older than the one the edge holds is refused there (409), so it never reaches the cloud.
		from := d.mq.mark()
		d.mq.publish(t, d.topic("/twin/update"), fmt.Sprintf(`{"event_id":"off-stale","twin":{"temperature":{"actual":{"value":"20.5","metadata":{"timestamp":%d}}}}}`, older-1))
		if res := d.mq.await(t, from, d.topic("/twin/update/result"), func(p map[string]any) bool { return p["event_id"] == "off-stale" }); res["code"] != float64(409) {
			t.Fatalf("an older value than the stored one answered %v, want code 409", res)
		}
		if tw := d.twin("temperature"); tw.Reported.Value != "22.5" {
			t.Fatalf("Device status changed while cloudcore was down: %+v", tw)
		}
		c.startCloud()
		waitFor(t, "the newest offline value in the Device status", 60*time.Second, func() (bool, string) {
			tw := d.twin("temperature")
			return tw.Reported.Value == "24.5" && tw.Reported.Metadata["timestamp"] == strconv.FormatInt(older+1000, 10), fmt.Sprintf("%+v", tw)
		})
	})

	t.Run("bad input is answered on the result topic and stores nothing", func(t *testing.T) {
		d.t = t
		before := d.get().Status
		stored := c.edge.metric("kedge_devicetwin_twin_values_stored_total")
		upd := d.topic("/twin/update")
		cases := []struct {
			name, topic, payload, resultTopic string
			code                              float64
			reason                            string
		}{
			{"malformed JSON", upd, `{"event_id":"bad-1","twin":{"temperature":`, upd + "/result", 400, "malformed JSON"},
			{"an unknown device", "$hw/events/device/no-such-device/twin/update",
				`{"event_id":"bad-2","twin":{"temperature":{"actual":{"value":"20"}}}}`,
				"$hw/events/device/no-such-device/twin/update/result", 404, `device "no-such-device" is not on this node`},
			{"a value of the wrong type", upd, `{"event_id":"bad-3","twin":{"temperature":{"actual":{"value":"warm"}}}}`,
				upd + "/result", 400, `"warm" is not a number`},
			{"a value above the maximum", upd, `{"event_id":"bad-4","twin":{"temperature":{"actual":{"value":"126"}}}}`,
				upd + "/result", 400, "above the maximum 125"},
			{"a value below the minimum", upd, `{"event_id":"bad-5","twin":{"setpoint":{"expected":{"value":"4"}}}}`,
				upd + "/result", 400, "below the minimum 5"},
			{"an expected value for a ReadOnly property", upd, `{"event_id":"bad-6","twin":{"temperature":{"expected":{"value":"20"}}}}`,
				upd + "/result", 403, "ReadOnly"},
		}
		for _, bc := range cases {
			t.Run(bc.name, func(t *testing.T) {
				from := d.mq.mark()
				d.mq.publish(t, bc.topic, bc.payload)
				res := d.mq.await(t, from, bc.resultTopic, func(p map[string]any) bool {
					_, ok := p["code"]
					return ok && strings.Contains(fmt.Sprint(p["reason"]), bc.reason)
				})
				if res["code"] != bc.code {
					t.Fatalf("result %v: want code %v", res, bc.code)
				}
			})
		}
		if now := c.edge.metric("kedge_devicetwin_twin_values_stored_total"); now != stored {
			t.Fatalf("%v twin values stored for bad input", now-stored)
		}
		// A good value after the bad ones: once it is in the status, anything stored before it would be too.
		d.report(t, "good-1", "setpoint", "21.5", time.Now().UnixMilli())
		waitFor(t, "the good value after the bad ones in the Device status", 30*time.Second, func() (bool, string) {
			tw := d.twin("setpoint")
			return tw.Reported.Value == "21.5", fmt.Sprintf("%+v", tw)
		})
		after := d.get().Status
		for _, tw := range before.Twins {
			got, _ := findTwin(after, tw.PropertyName)
			if tw.PropertyName == "setpoint" { // the good value's own property: only its reported value moves
				got.Reported = tw.Reported
			}
			if !reflect.DeepEqual(got, tw) {
				t.Errorf("twin %s changed by bad input: %+v -> %+v", tw.PropertyName, tw, got)
			}
		}
		if after.State != before.State || after.LastOnlineTime != before.LastOnlineTime {
			t.Errorf("device state changed by bad input: %q %q -> %q %q", before.State, before.LastOnlineTime, after.State, after.LastOnlineTime)
		}
		for _, tw := range after.Twins {
			if tw.PropertyName != "setpoint" {
				if _, ok := findTwin(before, tw.PropertyName); !ok {
					t.Errorf("twin %s appeared after bad input: %+v", tw.PropertyName, tw)
				}
			}
		}
	})

	t.Run("kubectl delete removes the device from the edge", func(t *testing.T) {
		d.t = t
		from := d.mq.mark()
		c.kubectl("delete", "device", d.device, "-n", d.ns)
		d.mq.await(t, from, "$hw/events/node/"+c.node+"/membership/updated", func(p map[string]any) bool {
			removed, _ := p["removed_devices"].([]any)
			for _, x := range removed {
				if m, _ := x.(map[string]any); m["name"] == d.device {
					return true
				}
			}
			return false
		})
		d.mq.request(t, "the device gone from the edge", d.topic("/twin/get"),
			func(id string) string { return `{"event_id":"` + id + `"}` },
			d.topic("/twin/get/result"), func(p map[string]any) bool { return p["code"] == float64(404) })
	})
}

// applyExamples applies examples/devices (the thermometer model and device) into d.ns, bound to the
// edge node, with kubectl.
func (d *deviceRig) applyExamples() {
	t := d.t
	t.Helper()
	d.c.kubectl("create", "namespace", d.ns)
	var docs []string
	for _, f := range []string{"thermometer-model.yaml", "thermometer-device.yaml"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", "devices", f))
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(b), "namespace: default", "namespace: "+d.ns)
		if strings.Contains(s, "kind: Device\n") {
			if !strings.Contains(s, "nodeName: edge-1") || !strings.Contains(s, `value: "21.5"`) {
				t.Fatalf("examples/devices/%s changed: want nodeName edge-1 and the setpoint desired at 21.5", f)
			}
			s = strings.ReplaceAll(s, "nodeName: edge-1", "nodeName: "+d.c.node)
		}
		docs = append(docs, s)
	}
	file := filepath.Join(t.TempDir(), "thermometer.yaml")
	if err := os.WriteFile(file, []byte(strings.Join(docs, "\n---\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	d.c.kubectl("apply", "-f", file)
}

// report publishes an actual value with mosquitto_pub and waits for its successful result.
func (d *deviceRig) report(t *testing.T, eventID, prop, value string, ts int64) {
	t.Helper()
	from := d.mq.mark()
	d.mq.publish(t, d.topic("/twin/update"), fmt.Sprintf(`{"event_id":%q,"timestamp":%d,"twin":{%q:{"actual":{"value":%q,"metadata":{"timestamp":%d}}}}}`,
		eventID, ts, prop, value, ts))
	res := d.mq.await(t, from, d.topic("/twin/update/result"), func(p map[string]any) bool { return p["event_id"] == eventID })
	if _, failed := res["code"]; failed {
		t.Fatalf("twin update %s refused: %v", eventID, res)
	}
}

func (d *deviceRig) get() *v1beta1.Device {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dev := &v1beta1.Device{}
	if err := d.api.Get().Namespace(d.ns).Resource(v1beta1.ResourceDevices).Name(d.device).Do(ctx).Into(dev); err != nil {
		d.t.Fatal(err)
	}
	return dev
}

func (d *deviceRig) twin(prop string) v1beta1.Twin {
	tw, _ := findTwin(d.get().Status, prop)
	return tw
}

func findTwin(s v1beta1.DeviceInstanceStatus, prop string) (v1beta1.Twin, bool) {
	for _, tw := range s.Twins {
		if tw.PropertyName == prop {
			return tw, true
		}
	}
	return v1beta1.Twin{}, false
}

// newDeviceCluster is newClusterWith on a given control plane (with the device CRDs), with
// devicecontroller enabled in cloudcore and a joined edgecore named node.
func newDeviceCluster(t *testing.T, k8s *k8senv.Env, node string, edgeEnv []string) *cluster {
	t.Helper()
	dir := t.TempDir()
	c := &cluster{t: t, k8s: k8s, dir: dir, pkiDir: filepath.Join(dir, "pki"), hubPort: freePort(t), certPort: freePort(t),
		node: node, edgeConfig: filepath.Join(dir, "edgecore.yaml"), edgeDB: filepath.Join(dir, "edge.db"), edgeEnv: edgeEnv,
		cloudEnv: []string{"KEDGE_MODULES__DEVICECONTROLLER__ENABLE=true",
			"KEDGE_MODULES__DEVICECONTROLLER__KUBECONFIG=" + k8s.Kubeconfig,
			"KEDGE_MODULES__DEVICECONTROLLER__INVENTORYWAIT=2s"}}
	c.startCloud()
	code, token, stderr := run(t, "cloudcore", nil, "token", "create", "--pki-dir", c.pkiDir)
	if code != 0 {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	code, out, stderr := run(t, "edgecore", nil, "join", "--cloudcore-address", "127.0.0.1", "--token", strings.TrimSpace(token),
		"--node-name", c.node, "--data-dir", filepath.Join(dir, "edge"), "--config-out", c.edgeConfig,
		"--cert-port", strconv.Itoa(c.certPort), "--hub-port", strconv.Itoa(c.hubPort))
	if code != 0 {
		t.Fatalf("join: %d %s %s", code, out, stderr)
	}
	c.metaServer = "127.0.0.1:" + strconv.Itoa(freePort(t))
	c.startEdge()
	var err error
	if c.edgeClient, err = kubernetes.NewForConfig(&rest.Config{Host: "https://" + c.metaServer, BearerTokenFile: filepath.Join(dir, "edge", "metaserver-admin.token"),
		TLSClientConfig: rest.TLSClientConfig{CAFile: filepath.Join(dir, "edge", "metaserver.crt")}}); err != nil {
		t.Fatal(err)
	}
	return c
}

// ensureMosquittoClients installs Debian's mosquitto and mosquitto-clients when they are missing.
func ensureMosquittoClients(t *testing.T) {
	t.Helper()
	_, errPub := exec.LookPath("mosquitto_pub")
	_, errSub := exec.LookPath("mosquitto_sub")
	if errPub == nil && errSub == nil && mosquittoPath() != "" {
		return
	}
	install := func() ([]byte, error) {
		cmd := exec.Command("apt-get", "install", "-y", "mosquitto", "mosquitto-clients")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.CombinedOutput()
	}
	out, err := install()
	if err != nil { // a fresh machine may have no package lists yet
		if upd, uerr := exec.Command("apt-get", "update").CombinedOutput(); uerr != nil {
			t.Fatalf("apt-get update: %v\n%s", uerr, upd)
		}
		out, err = install()
	}
	if err != nil {
		t.Fatalf("mosquitto and mosquitto-clients are needed (apt-get install -y mosquitto mosquitto-clients): %v\n%s", err, out)
	}
}

func mosquittoPath() string {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/mosquitto"); err == nil {
		return "/usr/sbin/mosquitto"
	}
	return ""
}

// startMosquittoBroker runs Debian's mosquitto on a free loopback port with its own config in
// t.TempDir() and returns the port once it accepts connections.
func startMosquittoBroker(t *testing.T) int {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n", port)), 0o644); err != nil {
		t.Fatal(err)
	}
	log := &syncBuffer{}
	cmd := exec.Command(mosquittoPath(), "-c", conf)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // the broker this test started, by its id
		<-done
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", log)
		}
	})
	waitFor(t, "mosquitto accepting connections", 10*time.Second, func() (bool, string) {
		select {
		case <-done:
			t.Fatalf("mosquitto exited: %s", log)
		default:
		}
		out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-t", "e2e/probe", "-m", "{}").CombinedOutput()
		return err == nil, string(out)
	})
	return port
}

// mqttSub is one mosquitto_sub on $hw/events/# (and the probe topic), collecting what it prints.
type mqttSub struct {
	port int
	mu   sync.Mutex
	msgs []mqttMsg
	next int // event ids for request
}

type mqttMsg struct{ topic, payload string }

func startMQTTSub(t *testing.T, port int) *mqttSub {
	t.Helper()
	s := &mqttSub{port: port}
	cmd := exec.Command("mosquitto_sub", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-q", "1", "-v",
		"-t", "$hw/events/#", "-t", "e2e/probe")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errb := &syncBuffer{}
	cmd.Stderr = errb
	if err := cmd.Start(); err != nil {
		t.Fatalf("mosquitto_sub: %v", err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		for sc.Scan() {
			topic, payload, _ := strings.Cut(sc.Text(), " ")
			s.mu.Lock()
			s.msgs = append(s.msgs, mqttMsg{topic, payload})
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // the subscriber this test started, by its id
		<-read
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("mosquitto_sub stderr: %s\nmosquitto_sub saw:\n%s", errb, s.dump())
		}
	})
	// Subscribed once it sees its own probe (the broker may come up a moment later: the embedded one
	// starts with edgecore).
	n := 0
	waitFor(t, "mosquitto_sub subscribed", 60*time.Second, func() (bool, string) {
		s.mu.Lock()
		seen := false
		for _, m := range s.msgs {
			seen = seen || m.topic == "e2e/probe"
		}
		s.mu.Unlock()
		if seen {
			return true, ""
		}
		n++
		out, _ := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-t", "e2e/probe", "-m", strconv.Itoa(n)).CombinedOutput()
		return false, string(out) + errb.String()
	})
	return s
}

func (s *mqttSub) dump() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, m := range s.msgs {
		fmt.Fprintf(&b, "%s %s\n", m.topic, m.payload)
	}
	return b.String()
}

// mark is the position after which await looks for the answer to what is published next.
func (s *mqttSub) mark() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

func (s *mqttSub) publish(t *testing.T, topic, payload string) {
	t.Helper()
	out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", strconv.Itoa(s.port), "-q", "1", "-t", topic, "-m", payload).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub %s: %v\n%s", topic, err, out)
	}
}

// find returns the first JSON payload on topic at or after from that satisfies cond.
func (s *mqttSub) find(from int, topic string, cond func(map[string]any) bool) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.msgs[from:] {
		if m.topic != topic {
			continue
		}
		var p map[string]any
		if json.Unmarshal([]byte(m.payload), &p) == nil && cond(p) {
			return p
		}
	}
	return nil
}

// await waits up to 30s for a payload on topic, at or after from, that satisfies cond.
func (s *mqttSub) await(t *testing.T, from int, topic string, cond func(map[string]any) bool) map[string]any {
	t.Helper()
	var got map[string]any
	waitFor(t, "mosquitto_sub: a message on "+topic, 30*time.Second, func() (bool, string) {
		got = s.find(from, topic, cond)
		return got != nil, strconv.Itoa(s.mark()) + " messages seen"
	})
	return got
}

// request publishes a request (payload made from a fresh event id) until its answer on resultTopic
// satisfies cond: for state that reaches the edge asynchronously.
func (s *mqttSub) request(t *testing.T, what, topic string, payload func(eventID string) string, resultTopic string, cond func(map[string]any) bool) map[string]any {
	t.Helper()
	var got map[string]any
	waitFor(t, what, 60*time.Second, func() (bool, string) {
		s.next++
		id := "req-" + strconv.Itoa(s.next)
		from := s.mark()
		s.publish(t, topic, payload(id))
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			if p := s.find(from, resultTopic, func(p map[string]any) bool { return p["event_id"] == id }); p != nil {
				if cond(p) {
					got = p
					return true, ""
				}
				b, _ := json.Marshal(p)
				return false, string(b)
			}
			time.Sleep(20 * time.Millisecond)
		}
		return false, "no answer to " + id
	})
	return got
}
