package eventbus

import (
	"fmt"
	"strconv"
	"strings"
)

// MatchTopic reports whether an MQTT topic name matches a topic filter (`+` one level, `#` the rest,
// MQTT 3.1.1 §4.7). A filter starting with a wildcard never matches a topic starting with `$`.
func MatchTopic(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, fl := range f {
		if fl == "#" {
			return true // "a/#" matches "a" too
		}
		if i >= len(t) {
			return false
		}
		if fl != "+" && fl != t[i] {
			return false
		}
	}
	return len(f) == len(t)
}

// validFilter checks a topic filter the way a broker would.
func validFilter(filter string) error {
	if filter == "" {
		return fmt.Errorf("topic filter is empty")
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return fmt.Errorf("topic filter %q: # must be the last level", filter)
		case l != "#" && l != "+" && strings.ContainsAny(l, "#+"):
			return fmt.Errorf("topic filter %q: a wildcard must fill a whole level", filter)
		}
	}
	return nil
}

// Topic classes, the label of the metrics.
const (
	classTwin       = "twin"       // $hw/events/device/<id>/twin/... (<id>: <name> or <namespace>/<name>)
	classState      = "state"      // $hw/events/device/<id>/state/...
	classMembership = "membership" // $hw/events/node/<node>/membership/...
	classData       = "data"       // $ke/events/...
	classUser       = "user"       // <x>/user/...
	classOther      = "other"
)

// classify names the kind of traffic a topic carries.
func classify(topic string) string {
	switch {
	case MatchTopic("$hw/events/device/+/twin/#", topic), MatchTopic("$hw/events/device/+/+/twin/#", topic):
		return classTwin
	case MatchTopic("$hw/events/device/+/state/#", topic), MatchTopic("$hw/events/device/+/+/state/#", topic):
		return classState
	case MatchTopic("$hw/events/node/+/membership/#", topic):
		return classMembership
	case MatchTopic("$ke/events/#", topic):
		return classData
	case MatchTopic("+/user/#", topic):
		return classUser
	}
	return classOther
}

// defaultQoS is the contract's QoS for a topic: 1 for twin and membership traffic, 0 otherwise.
func defaultQoS(topic string) byte {
	switch classify(topic) {
	case classTwin, classMembership:
		return 1
	}
	return 0
}

// Header.Type values understood on messages to publish. The type may carry ";qos=N" to override
// the topic's QoS, e.g. "mqtt/raw;qos=1" or "mqtt/json;qos=0".
const (
	TypeRaw  = "mqtt/raw"  // content is a JSON string whose text is the MQTT payload
	TypeJSON = "mqtt/json" // content is the payload (the default)
)

// parseType splits a header type into its kind and an optional QoS override (-1 when absent).
func parseType(t string) (kind string, qos int, err error) {
	kind, params, _ := strings.Cut(t, ";")
	qos = -1
	for p := range strings.SplitSeq(params, ";") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		k, v, _ := strings.Cut(p, "=")
		if k != "qos" {
			return "", 0, fmt.Errorf("header type %q: unknown parameter %q (only qos=0|1|2)", t, k)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 2 {
			return "", 0, fmt.Errorf("header type %q: qos must be 0, 1 or 2", t)
		}
		qos = n
	}
	return strings.TrimSpace(kind), qos, nil
}
