package devicetwin

import (
	"errors"
	"fmt"
	"strings"
)

// The device topics devicetwin answers, in two forms of device ID:
//
//	short      $hw/events/device/<name>/twin/update            Kedge's, KubeEdge before v1.19
//	namespaced $hw/events/device/<namespace>/<name>/twin/update KubeEdge v1.23.1 (its eventbus
//	           subscribes $hw/events/device/+/+/twin/+ and .../+/+/state/update; the ID is ns/name)
//
// Requests: twin/update, twin/get, state/update under $hw/events/device/<id>/, membership/get under
// $hw/events/node/<node>/, data/update under $ke/events/device/<id>/. Every answer to a request goes
// to the request's topic + "/result"; a twin update's document and delta use the request's form.

// Request kinds (the label of kedge_devicetwin_requests_total).
const (
	kindTwinUpdate    = "twin_update"
	kindTwinGet       = "twin_get"
	kindStateUpdate   = "state_update"
	kindMembershipGet = "membership_get"
	kindDataUpdate    = "data_update"
)

// errNotRequest: the topic is not a request devicetwin answers — what devicetwin itself publishes
// (results, documents, deltas, membership/updated) coming back through the broker, or a topic of
// another KubeEdge feature. Ignored (counted).
var errNotRequest = errors.New("not a device request topic")

// deviceRequest is a parsed request topic.
type deviceRequest struct {
	kind string
	// namespace is empty for the short form (the device is looked up by name alone).
	namespace string
	// name is the device's name, or the node's for membership/get.
	name string
	// base is the topic up to and including the device ID ($hw/events/device/<id>); document and
	// delta topics are base + "/twin/update/document" etc.
	base string
	// result is where the answer goes: the request topic + "/result".
	result string
}

// id is the device ID as the request wrote it: <name> or <namespace>/<name>.
func (r deviceRequest) id() string {
	if r.namespace == "" {
		return r.name
	}
	return r.namespace + "/" + r.name
}

// outputs are the last levels of topics devicetwin publishes (and receives back from the broker).
// cloud_updated is what KubeEdge's own devicetwin publishes ($hw/events/device/twin/cloud_updated).
var outputs = map[string]bool{"result": true, "document": true, "delta": true, "updated": true, "cloud_updated": true}

// requestOps maps the levels after the device ID to the request kind.
var requestOps = map[string]string{"twin/update": kindTwinUpdate, "twin/get": kindTwinGet, "state/update": kindStateUpdate}

// parseTopic reads a request topic. It returns errNotRequest for what is not a request at all, and
// another error, naming the topic and what is wrong, for a request topic with a bad device ID or
// operation (answered with 400 on topic + "/result").
func parseTopic(topic string) (deviceRequest, error) {
	levels := strings.Split(topic, "/")
	if outputs[levels[len(levels)-1]] {
		return deviceRequest{}, errNotRequest
	}
	bad := func(format string, args ...any) (deviceRequest, error) {
		return deviceRequest{}, fmt.Errorf("topic %q: %s", topic, fmt.Sprintf(format, args...))
	}
	switch {
	case len(levels) >= 3 && levels[0] == "$hw" && levels[1] == "events" && levels[2] == "device":
		rest := levels[3:]
		// <id>/<a>/<b> with <id> one or two levels.
		if len(rest) < 3 || len(rest) > 4 {
			return bad("want $hw/events/device/<name>/<op> or $hw/events/device/<namespace>/<name>/<op> with <op> one of twin/update, twin/get, state/update")
		}
		op := strings.Join(rest[len(rest)-2:], "/")
		kind, ok := requestOps[op]
		if !ok {
			return bad("unknown device operation %q (want twin/update, twin/get or state/update)", op)
		}
		return deviceTopicRequest(topic, "$hw/events/device/", kind, rest[:len(rest)-2], bad)
	case len(levels) >= 3 && levels[0] == "$ke" && levels[1] == "events" && levels[2] == "device":
		rest := levels[3:]
		if len(rest) < 3 || len(rest) > 4 || rest[len(rest)-2] != "data" || rest[len(rest)-1] != "update" {
			return bad("want $ke/events/device/<name>/data/update or $ke/events/device/<namespace>/<name>/data/update")
		}
		return deviceTopicRequest(topic, "$ke/events/device/", kindDataUpdate, rest[:len(rest)-2], bad)
	case len(levels) >= 3 && levels[0] == "$hw" && levels[1] == "events" && levels[2] == "node":
		if len(levels) != 6 || levels[4] != "membership" || levels[5] != "get" {
			return bad("want $hw/events/node/<node>/membership/get")
		}
		if levels[3] == "" {
			return bad("the node name is empty")
		}
		return deviceRequest{kind: kindMembershipGet, name: levels[3], base: "$hw/events/node/" + levels[3], result: topic + "/result"}, nil
	}
	return deviceRequest{}, errNotRequest
}

func deviceTopicRequest(topic, prefix, kind string, id []string, bad func(string, ...any) (deviceRequest, error)) (deviceRequest, error) {
	r := deviceRequest{kind: kind, result: topic + "/result"}
	if len(id) == 2 {
		r.namespace = id[0]
		if err := validNamespace(id[0]); err != nil {
			return bad("namespace %q: %v", id[0], err)
		}
	}
	r.name = id[len(id)-1]
	if err := validName(r.name); err != nil {
		return bad("device name %q: %v", r.name, err)
	}
	r.base = prefix + r.id()
	return r, nil
}

// validNamespace checks a Kubernetes namespace name (an RFC 1123 label).
func validNamespace(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > 63 {
		return fmt.Errorf("%d characters, at most 63", len(s))
	}
	return dnsChars(s, false)
}

// validName checks a Device name (an RFC 1123 subdomain, as Kubernetes object names).
func validName(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > 253 {
		return fmt.Errorf("%d characters, at most 253", len(s))
	}
	return dnsChars(s, true)
}

func dnsChars(s string, dots bool) error {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' || (dots && c == '.'):
			if i == 0 || i == len(s)-1 {
				return fmt.Errorf("must start and end with a lowercase letter or digit")
			}
		default:
			if dots {
				return fmt.Errorf("character %q at %d: only lowercase letters, digits, '-' and '.'", c, i)
			}
			return fmt.Errorf("character %q at %d: only lowercase letters, digits and '-'", c, i)
		}
	}
	return nil
}
