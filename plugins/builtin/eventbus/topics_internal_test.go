package eventbus

import "testing"

// Both forms of the device ID — Kedge's <name> and KubeEdge v1.23's <namespace>/<name> — are twin
// and state traffic (QoS 1 by default), and both forms of twin/update take the durable path.
func TestDeviceTopicsOfBothIDFormsAreClassifiedAlike(t *testing.T) {
	for _, c := range []struct {
		topic      string
		class      string
		twinUpdate bool
	}{
		{"$hw/events/device/d1/twin/update", classTwin, true},
		{"$hw/events/device/default/d1/twin/update", classTwin, true},
		{"$hw/events/device/default/d1/twin/update/result", classTwin, false},
		{"$hw/events/device/d1/twin/get", classTwin, false},
		{"$hw/events/device/default/d1/twin/get", classTwin, false},
		{"$hw/events/device/d1/state/update", classState, false},
		{"$hw/events/device/default/d1/state/update", classState, false},
		{"$hw/events/device/a/b/c/twin/update", classOther, false},
		{"$hw/events/node/n1/membership/get", classMembership, false},
	} {
		if got := classify(c.topic); got != c.class {
			t.Errorf("classify(%q) = %q, want %q", c.topic, got, c.class)
		}
		if got := isTwinUpdate(c.topic); got != c.twinUpdate {
			t.Errorf("isTwinUpdate(%q) = %v, want %v", c.topic, got, c.twinUpdate)
		}
	}
}
