package devicetwin

import (
	"maps"
	"slices"
	"strings"

	devicesv1beta1 "github.com/kedge-io/kedge/sdk/apis/devices/v1beta1"
)

// Failures of single properties while the device stays online (issue 16): a property whose reads
// fail, and a desired value that does not reach the device — refused by devicetwin (not of the
// model's type, out of its range) or by the mapper (a ReadOnly property, a value it cannot encode),
// or failing to write. Each shows in the Healthy condition (reasons WriteRefused, ReadFailed) and so
// as a Warning Event on the Device; a failing read also as a per-twin error, the key "error" in the
// twin's reported metadata (KubeEdge's TwinProperty.metadata is free-form), until a reading of that
// property replaces it.

// propertyError is one property's failure as a mapper reports it with its state (the
// state/update payload's property_errors, a Kedge addition; Kedge's DMI fills it from the
// kedge-property-errors request metadata of ReportDeviceStates).
type propertyError struct {
	Read  string `json:"read,omitempty"`
	Write string `json:"write,omitempty"`
}

// MetaError is the reported-metadata key carrying a property's read error to the cloud.
const MetaError = "error"

// propertyErrors takes the mapper's current set of failing properties (replacing the last one).
func (m *Module) propertyErrors(ns, name string, errs map[string]propertyError, held map[string]*statusProperty) {
	k := ns + "/" + name
	m.pendingMu.Lock()
	h := m.health[k]
	var before map[string]propertyError
	if h != nil {
		before = maps.Clone(h.failing)
	}
	m.pendingMu.Unlock()
	if h == nil && len(errs) == 0 {
		return
	}
	for p, e := range errs {
		if b, ok := before[p]; ok && b == e {
			continue
		}
		if e.Read != "" {
			m.metrics.refused.WithLabelValues("read_failed").Inc()
			m.log.Warn("property read failing", "device", k, "property", p, "err", e.Read)
		}
		if e.Write != "" {
			m.metrics.refused.WithLabelValues("write_refused").Inc()
			m.log.Warn("desired value not on the device", "device", k, "property", p, "err", e.Write)
		}
	}
	m.updateHealth(ns, name, func(h *devHealth) { h.failing = maps.Clone(errs) })
	// Per-twin read errors: each property whose read error appeared or changed gets it in its
	// reported metadata, next to the last value devicetwin holds for it; one whose error went away
	// gets that value back without it (a reading may have come in the meantime with the error kept,
	// see withReadErrorLocked).
	var show, clear []string
	for p, e := range errs {
		if e.Read != "" && before[p].Read != e.Read {
			show = append(show, p)
		}
	}
	for p, e := range before {
		if e.Read != "" && errs[p].Read == "" && held[p] != nil {
			clear = append(clear, p)
		}
	}
	if len(show) == 0 && len(clear) == 0 {
		return
	}
	m.pend(ns, name, func(ps *pendingStatus) {
		for _, p := range show {
			sp := &statusProperty{Metadata: map[string]string{}}
			if h := held[p]; h != nil {
				sp.Value, sp.Metadata = h.Value, maps.Clone(h.Metadata)
			}
			sp.Metadata[MetaError] = errs[p].Read
			ps.twin(p).Reported = sp
		}
		for _, p := range clear {
			if t := ps.twins[p]; t != nil && t.Reported != nil && t.Reported.Metadata[MetaError] == "" {
				continue // a newer reading is pending already
			}
			ps.twin(p).Reported = held[p]
		}
	})
}

// withReadErrorLocked adds a property's current read error (as its mapper last reported it) to a
// reading going upstream: a reading taken before the failure may be reported after it (the mapper's
// report cycle), and must not wipe the error from the Device status (pendingMu held).
func (m *Module) withReadErrorLocked(k, prop string, sp *statusProperty) *statusProperty {
	h := m.health[k]
	if h == nil || h.failing[prop].Read == "" {
		return sp
	}
	sp.Metadata[MetaError] = h.failing[prop].Read
	return sp
}

// heldReported returns the reported value devicetwin holds for each property of the device (called
// where the twins are owned: Handle).
func (m *Module) heldReported(k string) map[string]*statusProperty {
	out := map[string]*statusProperty{}
	for p, t := range m.twins[k] {
		if t != nil && t.Actual != nil && t.Actual.Value != nil {
			out[p] = reportedOf(t)
		}
	}
	return out
}

// desiredRefused records that devicetwin refused prop's desired value from the cloud.
func (m *Module) desiredRefused(ns, name, prop, why string) {
	m.metrics.refused.WithLabelValues("desired").Inc()
	m.updateHealth(ns, name, func(h *devHealth) { h.desiredRefused[prop] = why })
}

// desiredAccepted clears a refusal of prop's desired value, if any.
func (m *Module) desiredAccepted(ns, name, prop string) {
	m.pendingMu.Lock()
	h := m.health[ns+"/"+name]
	_, had := h.desiredRefusedOf(prop)
	m.pendingMu.Unlock()
	if had {
		m.updateHealth(ns, name, func(h *devHealth) { delete(h.desiredRefused, prop) })
	}
}

func (h *devHealth) desiredRefusedOf(prop string) (string, bool) {
	if h == nil {
		return "", false
	}
	s, ok := h.desiredRefused[prop]
	return s, ok
}

// propertyFailures adds the property failures to a condition's reason (when none is set yet: an
// offline device or a refused reading says more) and message parts.
func (h *devHealth) propertyFailures(reason string, parts []string) (string, []string) {
	var writes, reads []string
	for _, p := range slices.Sorted(maps.Keys(h.desiredRefused)) {
		writes = append(writes, "edgecore refused the desired value: "+h.desiredRefused[p]) // names its property
	}
	for _, p := range slices.Sorted(maps.Keys(h.failing)) {
		e := h.failing[p]
		if e.Write != "" {
			writes = append(writes, "property "+quote(p)+": "+e.Write)
		}
		if e.Read != "" {
			reads = append(reads, "property "+quote(p)+": "+e.Read)
		}
	}
	if len(writes) > 0 {
		if reason == "" {
			reason = devicesv1beta1.ReasonWriteRefused
		}
		parts = append(parts, "desired values not on the device: "+strings.Join(writes, "; "))
	}
	if len(reads) > 0 {
		if reason == "" {
			reason = devicesv1beta1.ReasonReadFailed
		}
		parts = append(parts, "the mapper cannot read: "+strings.Join(reads, "; "))
	}
	return reason, parts
}

func quote(s string) string { return `"` + s + `"` }
