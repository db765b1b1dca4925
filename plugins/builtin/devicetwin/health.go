package devicetwin

import (
	"maps"
	"slices"
	"strings"

	devicesv1beta1 "github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
)

// Health: what devicetwin tells the cloud about a device's failures. A reading devicetwin refuses
// (out of the model's range, not of its type) is answered on MQTT / to the DMI caller, and also kept
// here per property until an accepted reading of that property clears it; the device's state
// "offline" counts too. The cloud gets the resulting condition (type Healthy, status, reason,
// message) with the next devicestatus flush whenever it changed, and devicecontroller puts it in the
// Device status and raises a Warning Event.

// statusCondition is the condition in a devicestatus report (the fields of a metav1.Condition the
// edge decides; devicecontroller sets the times).
type statusCondition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// devHealth is one device's failures (guarded by Module.pendingMu).
type devHealth struct {
	refused        map[string]string        // property -> why its last reading was refused
	desiredRefused map[string]string        // property -> why devicetwin refused its desired value (propfail.go)
	failing        map[string]propertyError // what the mapper says fails per property (propfail.go)
	offline        bool
	why            offlineReason   // the mapper's reason for offline, if it gave one
	sent           statusCondition // last condition put upstream
}

// healthOf returns the device's record, creating it (pendingMu held).
func (m *Module) healthOf(k string) *devHealth {
	h := m.health[k]
	if h == nil {
		h = &devHealth{refused: map[string]string{}, desiredRefused: map[string]string{}, failing: map[string]propertyError{}}
		m.health[k] = h
	}
	return h
}

// readingRefused records that a reading of prop was refused and why.
func (m *Module) readingRefused(ns, name, prop, why string) {
	m.metrics.refused.WithLabelValues("reading").Inc()
	m.log.Warn("reading refused", "device", ns+"/"+name, "property", prop, "reason", why)
	m.updateHealth(ns, name, func(h *devHealth) { h.refused[prop] = why })
}

// readingAccepted clears the refusals of props, if any.
func (m *Module) readingAccepted(ns, name string, props []string) {
	m.pendingMu.Lock()
	h := m.health[ns+"/"+name]
	// The first reading after a start (the memory is empty then) sends the condition: the cloud may
	// still hold a False one from before.
	need := h == nil || h.sent.Status != "True" || slices.ContainsFunc(props, func(p string) bool { _, ok := h.refused[p]; return ok })
	m.pendingMu.Unlock()
	if !need {
		return
	}
	m.updateHealth(ns, name, func(h *devHealth) {
		for _, p := range props {
			delete(h.refused, p)
		}
	})
}

// stateChanged records the device's state and, when offline, why the mapper says it is (nil: no
// reason given).
func (m *Module) stateChanged(ns, name, state string, why *offlineReason) {
	m.updateHealth(ns, name, func(h *devHealth) {
		h.offline, h.why = state == "offline", offlineReason{}
		if h.offline && why != nil && validReason(why.Reason) {
			h.why = *why
		}
	})
}

// validReason says whether r is a CamelCase word (a condition reason).
func validReason(r string) bool {
	if r == "" || len(r) > 64 || r[0] < 'A' || r[0] > 'Z' {
		return false
	}
	for _, c := range r {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// updateHealth applies fn and, when the condition changed, pends it for the next flush.
func (m *Module) updateHealth(ns, name string, fn func(h *devHealth)) {
	m.pendingMu.Lock()
	defer m.pendingMu.Unlock()
	k := ns + "/" + name
	h := m.healthOf(k)
	fn(h)
	c := h.condition()
	if c == h.sent {
		return
	}
	h.sent = c
	p := m.pendingLocked(ns, name)
	p.condition = &c
}

// condition is the Healthy condition the failures make.
func (h *devHealth) condition() statusCondition {
	var parts []string
	reason := ""
	switch {
	case h.offline && h.why.Reason != "":
		reason = h.why.Reason
		parts = append(parts, "the mapper reports the device offline: "+h.why.Message)
	case h.offline:
		reason = devicesv1beta1.ReasonDeviceOffline
		parts = append(parts, "the mapper reports the device offline: it cannot be reached or none of its properties can be read (the mapper's log says why)")
	}
	if len(h.refused) > 0 {
		if reason == "" {
			reason = devicesv1beta1.ReasonReadingRefused
		}
		props := slices.Sorted(maps.Keys(h.refused))
		var rs []string
		for _, p := range props {
			rs = append(rs, h.refused[p])
		}
		parts = append(parts, "edgecore refused readings: "+strings.Join(rs, "; ")) // each names its property
	}
	reason, parts = h.propertyFailures(reason, parts) // propfail.go
	if reason == "" {
		return statusCondition{Type: devicesv1beta1.ConditionHealthy, Status: "True", Reason: devicesv1beta1.ReasonReadingsOK,
			Message: "the device is not reported offline and its readings are accepted"}
	}
	return statusCondition{Type: devicesv1beta1.ConditionHealthy, Status: "False", Reason: reason, Message: strings.Join(parts, "; ")}
}
