package metaserver

import (
	"encoding/json"
	"fmt"
	"strconv"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
)

// resource is one Kubernetes resource the server answers for, and the store type it is kept under.
type resource struct {
	plural     string // URL segment: pods
	kind       string // Pod
	storeType  string // metamanager's type segment: pod
	namespaced bool
	// fields are the field selector labels this resource supports besides metadata.name/namespace.
	fields []string
}

// clusterNamespace is the store namespace cluster-scoped objects travel under (`default/node/<name>`).
const clusterNamespace = "default"

var resources = []resource{
	{plural: "pods", kind: "Pod", storeType: "pod", namespaced: true, fields: []string{"spec.nodeName", "status.phase"}},
	{plural: "configmaps", kind: "ConfigMap", storeType: "configmap", namespaced: true},
	{plural: "secrets", kind: "Secret", storeType: "secret", namespaced: true, fields: []string{"type"}},
	{plural: "services", kind: "Service", storeType: "service", namespaced: true},
	{plural: "nodes", kind: "Node", storeType: "node"},
}

func byPlural(p string) (resource, bool) {
	for _, r := range resources {
		if r.plural == p {
			return r, true
		}
	}
	return resource{}, false
}

func byStoreType(t string) (resource, bool) {
	for _, r := range resources {
		if r.storeType == t {
			return r, true
		}
	}
	return resource{}, false
}

// meta is what selectors look at.
type meta struct {
	name, namespace string
	labels          labels.Set
	fields          fields.Set
}

// selector is a parsed labelSelector and fieldSelector.
type selector struct {
	labels labels.Selector
	fields fields.Selector
}

func (s selector) matches(m meta) bool {
	return s.labels.Matches(m.labels) && s.fields.Matches(m.fields)
}

func parseSelector(r resource, labelSel, fieldSel string) (selector, error) {
	ls, err := labels.Parse(labelSel)
	if err != nil {
		return selector{}, fmt.Errorf("labelSelector %q: %w", labelSel, err)
	}
	fs, err := fields.ParseSelector(fieldSel)
	if err != nil {
		return selector{}, fmt.Errorf("fieldSelector %q: %w", fieldSel, err)
	}
	for _, req := range fs.Requirements() {
		ok := req.Field == "metadata.name" || req.Field == "metadata.namespace"
		for _, f := range r.fields {
			ok = ok || req.Field == f
		}
		if !ok {
			return selector{}, fmt.Errorf("fieldSelector: field label %q is not supported for %s (supported: metadata.name, metadata.namespace%s)", req.Field, r.plural, extraFields(r))
		}
	}
	return selector{labels: ls, fields: fs}, nil
}

func extraFields(r resource) string {
	s := ""
	for _, f := range r.fields {
		s += ", " + f
	}
	return s
}

// render returns the object as the API serves it — kind and apiVersion set, metadata.resourceVersion
// set to rv when rv is not empty (watch events), else to the stored version when the object has none —
// and its metadata for selectors.
func render(raw []byte, r resource, rv string, stored uint64) (json.RawMessage, meta, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil || top == nil {
		return nil, meta{}, fmt.Errorf("stored %s is not a JSON object", r.storeType)
	}
	var md map[string]json.RawMessage
	if b, ok := top["metadata"]; ok {
		if err := json.Unmarshal(b, &md); err != nil {
			return nil, meta{}, fmt.Errorf("stored %s: metadata is not a JSON object", r.storeType)
		}
	}
	if md == nil {
		md = map[string]json.RawMessage{}
	}
	var m meta
	var lbl map[string]string
	str := func(k string) string {
		var s string
		if b, ok := md[k]; ok {
			_ = json.Unmarshal(b, &s)
		}
		return s
	}
	m.name, m.namespace = str("name"), str("namespace")
	if b, ok := md["labels"]; ok {
		_ = json.Unmarshal(b, &lbl)
	}
	m.labels = labels.Set(lbl)
	m.fields = fields.Set{"metadata.name": m.name, "metadata.namespace": m.namespace}
	switch r.storeType {
	case "pod":
		var p struct {
			Spec struct {
				NodeName string `json:"nodeName"`
			} `json:"spec"`
			Status struct {
				Phase string `json:"phase"`
			} `json:"status"`
		}
		_ = json.Unmarshal(raw, &p)
		m.fields["spec.nodeName"], m.fields["status.phase"] = p.Spec.NodeName, p.Status.Phase
	case "secret":
		var s struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(raw, &s)
		m.fields["type"] = s.Type
	}

	switch {
	case rv != "":
		md["resourceVersion"], _ = json.Marshal(rv)
	case str("resourceVersion") == "" && stored > 0:
		md["resourceVersion"], _ = json.Marshal(strconv.FormatUint(stored, 10))
	}
	top["metadata"], _ = json.Marshal(md)
	top["kind"], _ = json.Marshal(r.kind)
	top["apiVersion"] = json.RawMessage(`"v1"`)
	out, err := json.Marshal(top)
	return out, m, err
}
