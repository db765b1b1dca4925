package console

import (
	"sync"

	corev1 "k8s.io/api/core/v1"

	"github.com/kedge-io/kedge/sdk/inventory"
)

// EdgeReport is what a node reported about itself (sdk/inventory), as rolloutcontroller keeps it in
// the Node annotation kedge.io/inventory: its edgecore version and device class, outbox depth and
// running modules. Reported is false when the node never sent one (no pluginmanager on it, an older
// edgecore, a KubeEdge edgecore, or no rolloutcontroller in the cloud).
type EdgeReport struct {
	Reported         bool
	Error            string // the annotation could not be read
	Version, Class   string
	Outbox           int
	At               string // when the node took the report (unchanged since, apart from its time)
	Modules          []EdgeModule
	Unhealthy, Total int
}

// EdgeModule is one module the node runs.
type EdgeModule struct {
	Name, Runtime, Release, SHA256, Short, Health, Link string
	Handled, Failed                                     int64
	Queued                                              int
}

// edgeReport reads n's inventory annotation.
func edgeReport(n *corev1.Node) EdgeReport {
	raw, ok := n.Annotations[inventory.Annotation]
	if !ok {
		return EdgeReport{}
	}
	rep, err := inventory.Parse(raw)
	if err != nil {
		return EdgeReport{Error: "annotation " + inventory.Annotation + " unreadable: " + err.Error()}
	}
	if rep.Node != n.Name {
		return EdgeReport{Error: "annotation " + inventory.Annotation + " is about node " + rep.Node}
	}
	out := EdgeReport{Reported: true, Version: rep.Version, Class: rep.Class, Outbox: rep.Outbox, At: rfc3339(rep.At), Total: len(rep.Modules)}
	for _, m := range rep.Modules {
		em := EdgeModule{Name: m.Name, Runtime: m.Runtime, Release: m.Release, SHA256: m.SHA256, Health: m.Health, Link: m.Link,
			Handled: m.Handled, Failed: m.Failed, Queued: m.Queued}
		if len(m.SHA256) >= 12 {
			em.Short = m.SHA256[:12]
		}
		if m.Health != "" {
			out.Unhealthy++
		}
		out.Modules = append(out.Modules, em)
	}
	return out
}

// edgeCache keeps each node's parsed inventory while its annotation stays the same: a push renders a
// page of rows many times a second, and parsing a 12-module report costs more than rendering its row.
type edgeCache struct {
	mu    sync.Mutex
	nodes map[string]cachedEdge
}

type cachedEdge struct {
	raw string
	rep EdgeReport
}

// report is edgeReport(n), parsed once per annotation value.
func (c *edgeCache) report(n *corev1.Node) EdgeReport {
	raw := n.Annotations[inventory.Annotation]
	c.mu.Lock()
	e, ok := c.nodes[n.Name]
	c.mu.Unlock()
	if ok && e.raw == raw {
		return e.rep
	}
	rep := edgeReport(n)
	c.mu.Lock()
	if c.nodes == nil {
		c.nodes = map[string]cachedEdge{}
	}
	c.nodes[n.Name] = cachedEdge{raw: raw, rep: rep}
	c.mu.Unlock()
	return rep
}

// prune forgets the nodes keep says are gone, once the cache holds many more than there are nodes.
func (c *edgeCache) prune(nodes func() int, keep func(string) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.nodes) <= 100 || len(c.nodes) <= 2*nodes() {
		return
	}
	for name := range c.nodes {
		if !keep(name) {
			delete(c.nodes, name)
		}
	}
}
