package devicetwin

import (
	"errors"
	"strings"
	"testing"
)

// The topic parser takes both forms of device ID (Kedge's <name>, KubeEdge v1.23.1's
// <namespace>/<name>), answers each in its own form, passes over what devicetwin itself publishes,
// and refuses a request topic with a bad ID or operation naming the topic and what is wrong.
func TestParseTopicTakesShortAndNamespacedIDsAndRefusesBadOnes(t *testing.T) {
	long := strings.Repeat("a", 254)
	for _, c := range []struct {
		topic                string
		kind, ns, name, base string
		notRequest           bool
		errWant              string
	}{
		{topic: "$hw/events/device/thermo-1/twin/update", kind: kindTwinUpdate, name: "thermo-1", base: "$hw/events/device/thermo-1"},
		{topic: "$hw/events/device/default/thermo-1/twin/update", kind: kindTwinUpdate, ns: "default", name: "thermo-1", base: "$hw/events/device/default/thermo-1"},
		{topic: "$hw/events/device/thermo-1/twin/get", kind: kindTwinGet, name: "thermo-1", base: "$hw/events/device/thermo-1"},
		{topic: "$hw/events/device/plant-a/thermo.1/twin/get", kind: kindTwinGet, ns: "plant-a", name: "thermo.1", base: "$hw/events/device/plant-a/thermo.1"},
		{topic: "$hw/events/device/thermo-1/state/update", kind: kindStateUpdate, name: "thermo-1", base: "$hw/events/device/thermo-1"},
		{topic: "$hw/events/device/default/thermo-1/state/update", kind: kindStateUpdate, ns: "default", name: "thermo-1", base: "$hw/events/device/default/thermo-1"},
		{topic: "$hw/events/node/edge-1/membership/get", kind: kindMembershipGet, name: "edge-1", base: "$hw/events/node/edge-1"},
		{topic: "$ke/events/device/thermo-1/data/update", kind: kindDataUpdate, name: "thermo-1", base: "$ke/events/device/thermo-1"},
		{topic: "$ke/events/device/default/thermo-1/data/update", kind: kindDataUpdate, ns: "default", name: "thermo-1", base: "$ke/events/device/default/thermo-1"},
		// What devicetwin publishes comes back from the broker: not a request.
		{topic: "$hw/events/device/thermo-1/twin/update/result", notRequest: true},
		{topic: "$hw/events/device/default/thermo-1/twin/update/result", notRequest: true},
		{topic: "$hw/events/device/default/thermo-1/twin/update/document", notRequest: true},
		{topic: "$hw/events/device/default/thermo-1/twin/update/delta", notRequest: true},
		{topic: "$hw/events/device/thermo-1/twin/get/result", notRequest: true},
		{topic: "$hw/events/node/edge-1/membership/updated", notRequest: true},
		{topic: "$hw/events/device/twin/cloud_updated", notRequest: true},
		{topic: "$hw/events/upload/x", notRequest: true},
		{topic: "$hw/events/connected/edge-1", notRequest: true},
		// Bad request topics.
		{topic: "$hw/events/device//twin/update", errWant: `device name "": empty`},
		{topic: "$hw/events/device/default//twin/update", errWant: `device name "": empty`},
		{topic: "$hw/events/device//thermo-1/twin/update", errWant: `namespace "": empty`},
		{topic: "$hw/events/device/Default/thermo-1/twin/update", errWant: `namespace "Default": character 'D' at 0`},
		{topic: "$hw/events/device/a.b/thermo-1/twin/update", errWant: `namespace "a.b": character '.' at 1`},
		{topic: "$hw/events/device/default/Thermo/twin/get", errWant: `device name "Thermo": character 'T' at 0`},
		{topic: "$hw/events/device/-x/twin/get", errWant: `device name "-x": must start and end`},
		{topic: "$hw/events/device/" + long + "/twin/get", errWant: "254 characters, at most 253"},
		{topic: "$hw/events/device/a/b/c/twin/update", errWant: "want $hw/events/device/<name>/<op> or $hw/events/device/<namespace>/<name>/<op>"},
		{topic: "$hw/events/device/thermo-1/twin", errWant: "want $hw/events/device/<name>/<op>"},
		{topic: "$hw/events/device/default/thermo-1/twin/delete", errWant: `unknown device operation "twin/delete"`},
		{topic: "$hw/events/device/thermo-1/state/get", errWant: `unknown device operation "state/get"`},
		{topic: "$hw/events/node//membership/get", errWant: "the node name is empty"},
		{topic: "$hw/events/node/edge-1/membership/list", errWant: "want $hw/events/node/<node>/membership/get"},
		{topic: "$ke/events/device/default/thermo-1/data/get", errWant: "want $ke/events/device/<name>/data/update"},
	} {
		t.Run(c.topic, func(t *testing.T) {
			r, err := parseTopic(c.topic)
			switch {
			case c.notRequest:
				if !errors.Is(err, errNotRequest) {
					t.Fatalf("parseTopic = %+v, %v; want errNotRequest", r, err)
				}
			case c.errWant != "":
				if err == nil || errors.Is(err, errNotRequest) || !strings.Contains(err.Error(), c.errWant) || !strings.Contains(err.Error(), c.topic) {
					t.Fatalf("parseTopic error = %v; want one naming the topic and %q", err, c.errWant)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if r.kind != c.kind || r.namespace != c.ns || r.name != c.name || r.base != c.base || r.result != c.topic+"/result" {
					t.Fatalf("parseTopic = %+v; want kind %s ns %q name %q base %s", r, c.kind, c.ns, c.name, c.base)
				}
			}
		})
	}
}

// FuzzParseTopic: no input panics; an accepted request topic is exactly its base + the operation,
// its answer goes to the topic + "/result", and a result topic is never taken as a request (no
// answer loop through the broker). Seed corpus: testdata/fuzz/FuzzParseTopic.
func FuzzParseTopic(f *testing.F) {
	for _, s := range []string{"$hw/events/device/d/twin/update", "$hw/events/device/ns/d/twin/get",
		"$hw/events/node/n/membership/get", "$ke/events/device/ns/d/data/update", "$hw/events/device/ns/d/state/update/result"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		r, err := parseTopic(topic)
		if err != nil {
			if !errors.Is(err, errNotRequest) && !strings.Contains(err.Error(), "topic ") {
				t.Fatalf("error %q does not name the topic", err)
			}
			return
		}
		if r.result != topic+"/result" || !strings.HasPrefix(topic, r.base+"/") || r.name == "" {
			t.Fatalf("%q parsed as %+v", topic, r)
		}
		if _, err := parseTopic(r.result); !errors.Is(err, errNotRequest) {
			t.Fatalf("the result topic %q of %q is taken as a request: %v", r.result, topic, err)
		}
		if r.namespace != "" && r.base != strings.Join(strings.Split(r.base, "/")[:3], "/")+"/"+r.namespace+"/"+r.name {
			t.Fatalf("%q: base %q does not hold namespace %q and name %q", topic, r.base, r.namespace, r.name)
		}
	})
}
