package devicetwin_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/sdk/message"
)

// startMosquitto runs Debian's mosquitto on a free loopback port until the test ends; it skips the
// test, saying so, when mosquitto is not installed.
func startMosquitto(t *testing.T) string {
	t.Helper()
	mosq, err := exec.LookPath("mosquitto")
	if err != nil {
		if mosq, err = exec.LookPath("/usr/sbin/mosquitto"); err != nil {
			t.Skip("mosquitto is not installed (apt-get install mosquitto)")
		}
	}
	port := freeTCPPort(t)
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n", port), 0o644); err != nil {
		t.Fatal(err)
	}
	startProcess(t, mosq, "-c", conf)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitFor(t, 15*time.Second, "mosquitto listening on "+addr, func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
	return addr
}

// A KubeEdge v1.23 MQTT mapper's topics ($hw/events/device/<namespace>/<name>/..., membership ids
// <namespace>/<name>) are answered, on a real mosquitto broker (eventbus external) and on eventbus's
// embedded broker (where a QoS 1 namespaced twin/update takes the durable path): each answer in the
// form the request used, a cloud change in both forms, the short form still working while the name
// is unique and refused as ambiguous (409, pointing at the namespaced form) once two namespaces hold
// it, and a malformed device topic refused with 400 naming what is wrong.
func TestNamespacedDeviceTopicsAreAnsweredInTheirOwnForm(t *testing.T) {
	for _, broker := range []string{"mosquitto", "embedded"} {
		t.Run(broker, func(t *testing.T) {
			ebCfg := map[string]any{"internalAddress": "127.0.0.1:0"}
			if broker == "mosquitto" {
				ebCfg = map[string]any{"mqttMode": "external", "externalURL": "tcp://" + startMosquitto(t)}
			}
			r := newRigOn(t, ebCfg, map[string]any{"flushInterval": "1h"})
			ns := "$hw/events/device/default/thermo-1"
			short := "$hw/events/device/thermo-1"

			// A desired value from the cloud: document and delta in both forms.
			r.addThermo(t, "thermo-1", "20")
			for _, base := range []string{ns, short} {
				if d := r.mapper.await(t, base+"/twin/update/delta", `"delta"`); path(d, "delta", "target") != "20" {
					t.Fatalf("%s/twin/update/delta: %v", base, d)
				}
				r.mapper.await(t, base+"/twin/update/document", `"target"`)
			}

			// A twin update on the namespaced topic: result and document on the namespaced topics only.
			r.mapper.publish(t, ns+"/twin/update", `{"event_id":"n1","twin":{"temperature":{"actual":{"value":"21.5"}}}}`)
			if res := r.mapper.await(t, ns+"/twin/update/result", `"n1"`); path(res, "twin", "temperature", "actual", "value") != "21.5" {
				t.Fatalf("namespaced twin/update/result: %v", res)
			}
			r.mapper.await(t, ns+"/twin/update/document", `"n1"`)
			r.mapper.await(t, ns+"/twin/update/delta", `"delta"`) // target 20 still differs from its actual value
			r.mapper.publish(t, ns+"/twin/get", `{"event_id":"n2"}`)
			if g := r.mapper.await(t, ns+"/twin/get/result", `"n2"`); path(g, "twin", "temperature", "actual", "value") != "21.5" ||
				path(g, "twin", "target", "expected", "value") != "20" {
				t.Fatalf("namespaced twin/get/result: %v", g)
			}
			if n := r.mapper.countWith(short+"/twin/update/result", `"n1"`) + r.mapper.countWith(short+"/twin/update/document", `"n1"`); n != 0 {
				t.Fatalf("a namespaced twin update was answered on the short topics too (%d messages)", n)
			}
			// The short form reads the same twin.
			r.mapper.publish(t, short+"/twin/get", `{"event_id":"s1"}`)
			if g := r.mapper.await(t, short+"/twin/get/result", `"s1"`); path(g, "twin", "temperature", "actual", "value") != "21.5" {
				t.Fatalf("short twin/get/result: %v", g)
			}
			r.mapper.publish(t, ns+"/state/update", `{"event_id":"n3","state":"online"}`)
			if s := r.mapper.await(t, ns+"/state/update/result", `"n3"`); path(s, "device", "name") != "thermo-1" || path(s, "device", "state") != "online" {
				t.Fatalf("namespaced state/update/result: %v", s)
			}
			r.mapper.publish(t, "$ke/events/device/default/thermo-1/data/update", `{"event_id":"n4","data":{"temperature":{"value":"500"}}}`)
			if e := r.mapper.await(t, "$ke/events/device/default/thermo-1/data/update/result", `"n4"`); e["code"] != float64(400) {
				t.Fatalf("namespaced data/update/result: %v", e)
			}

			// Membership: the device id is <namespace>/<name>, as KubeEdge v1.23.1 has it.
			node := sdktest.NodeName
			r.send(t, message.OpUpdate, "default/membership/"+node, "", map[string]any{"devices": []map[string]string{{"namespace": "default", "name": "thermo-1"}}})
			up := r.mapper.await(t, "$hw/events/node/"+node+"/membership/updated", `"added_devices"`)
			r.mapper.publish(t, "$hw/events/node/"+node+"/membership/get", `{"event_id":"m1"}`)
			mg := r.mapper.await(t, "$hw/events/node/"+node+"/membership/get/result", `"m1"`)
			for what, v := range map[string]any{"membership/updated": up["added_devices"], "membership/get/result": mg["devices"]} {
				list, _ := v.([]any)
				if len(list) != 1 || path(list[0], "id") != "default/thermo-1" || path(list[0], "name") != "thermo-1" {
					t.Fatalf("%s devices: %v", what, v)
				}
			}

			// The same name in a second namespace: the namespaced form tells them apart, the short
			// form is refused as ambiguous, and the cloud's delta goes out namespaced only.
			model := strings.Replace(thermoModel, `"namespace":"default"`, `"namespace":"plant-b"`, 1)
			dev := strings.Replace(thermoDevice("thermo-1", "30", "2"), `"namespace":"default"`, `"namespace":"plant-b"`, 1)
			r.send(t, message.OpInsert, "plant-b/devicemodel/thermo", "1", json.RawMessage(model))
			r.send(t, message.OpInsert, "plant-b/device/thermo-1", "2", json.RawMessage(dev))
			nsB := "$hw/events/device/plant-b/thermo-1"
			if d := r.mapper.await(t, nsB+"/twin/update/delta", `"delta"`); path(d, "delta", "target") != "30" {
				t.Fatalf("plant-b delta: %v", d)
			}
			r.mapper.publish(t, nsB+"/twin/get", `{"event_id":"b1"}`)
			if g := r.mapper.await(t, nsB+"/twin/get/result", `"b1"`); path(g, "twin", "target", "expected", "value") != "30" || path(g, "twin", "temperature", "actual") != nil {
				t.Fatalf("plant-b twin/get/result: %v", g)
			}
			if n := r.mapper.countWith(short+"/twin/update/delta", `"30"`); n != 0 {
				t.Fatalf("the plant-b device's delta went out on the ambiguous short topic (%d)", n)
			}
			r.mapper.publish(t, short+"/twin/get", `{"event_id":"s2"}`)
			if e := r.mapper.await(t, short+"/twin/get/result", `"s2"`); e["code"] != float64(409) ||
				!strings.Contains(fmt.Sprint(e["reason"]), "$hw/events/device/<namespace>/thermo-1/") {
				t.Fatalf("short twin/get of an ambiguous name: %v", e)
			}
			r.mapper.publish(t, "$hw/events/device/plant-c/thermo-1/twin/get", `{"event_id":"c1"}`)
			if e := r.mapper.await(t, "$hw/events/device/plant-c/thermo-1/twin/get/result", `"c1"`); e["code"] != float64(404) ||
				!strings.Contains(fmt.Sprint(e["reason"]), `"plant-c/thermo-1"`) {
				t.Fatalf("twin/get in a namespace without the device: %v", e)
			}

			// A malformed device topic: 400 on its result topic, naming what is wrong.
			r.mapper.publish(t, "$hw/events/device/Plant/thermo-1/twin/update", `{"event_id":"x1","twin":{}}`)
			if e := r.mapper.await(t, "$hw/events/device/Plant/thermo-1/twin/update/result", `"x1"`); e["code"] != float64(400) ||
				!strings.Contains(fmt.Sprint(e["reason"]), `namespace "Plant": character 'P' at 0`) {
				t.Fatalf("malformed topic: %v", e)
			}
			r.mapper.publish(t, "$hw/events/device/default/thermo-1/twin/remove", `{"event_id":"x2"}`)
			if e := r.mapper.await(t, "$hw/events/device/default/thermo-1/twin/remove/result", `"x2"`); e["code"] != float64(400) ||
				!strings.Contains(fmt.Sprint(e["reason"]), `unknown device operation "twin/remove"`) {
				t.Fatalf("unknown operation: %v", e)
			}
		})
	}
}
