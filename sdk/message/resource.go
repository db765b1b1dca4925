package message

import (
	"fmt"
	"strings"
)

// Resource addresses an object. On the cloud side a resource path names the node first
// (node/<node>/<namespace>/<type>[/<name>]); on the edge the node is implied
// (<namespace>/<type>[/<name>]). A missing name addresses the whole list of that type.
type Resource struct {
	Node      string
	Namespace string
	Type      string
	Name      string
}

const nodePrefix = "node"

// Cloud returns the cloud form, node/<node>/<namespace>/<type>[/<name>].
func (r Resource) Cloud() string {
	return nodePrefix + "/" + r.Node + "/" + r.Edge()
}

// Edge returns the edge form, <namespace>/<type>[/<name>].
func (r Resource) Edge() string {
	if r.Name == "" {
		return r.Namespace + "/" + r.Type
	}
	return r.Namespace + "/" + r.Type + "/" + r.Name
}

// ParseCloud parses node/<node>/<namespace>/<type>[/<name>].
func ParseCloud(path string) (Resource, error) {
	segs, err := split(path, 4, 5, "node/<node>/<namespace>/<type>[/<name>]")
	if err != nil {
		return Resource{}, err
	}
	if segs[0] != nodePrefix {
		return Resource{}, fmt.Errorf("resource %q: first segment must be %q, got %q", path, nodePrefix, segs[0])
	}
	r := Resource{Node: segs[1], Namespace: segs[2], Type: segs[3]}
	if len(segs) == 5 {
		r.Name = segs[4]
	}
	return r, nil
}

// ParseEdge parses <namespace>/<type>[/<name>].
func ParseEdge(path string) (Resource, error) {
	segs, err := split(path, 2, 3, "<namespace>/<type>[/<name>]")
	if err != nil {
		return Resource{}, err
	}
	r := Resource{Namespace: segs[0], Type: segs[1]}
	if len(segs) == 3 {
		r.Name = segs[2]
	}
	return r, nil
}

// ToEdge turns a cloud resource path into the edge form and returns the node it names.
func ToEdge(cloudPath string) (node, edgePath string, err error) {
	r, err := ParseCloud(cloudPath)
	if err != nil {
		return "", "", err
	}
	return r.Node, r.Edge(), nil
}

func split(path string, min, max int, want string) ([]string, error) {
	if path == "" {
		return nil, fmt.Errorf("resource path is empty: want %s", want)
	}
	segs := strings.Split(path, "/")
	if len(segs) < min || len(segs) > max {
		return nil, fmt.Errorf("resource %q: want %s, got %d segments", path, want, len(segs))
	}
	for i, s := range segs {
		if s == "" {
			return nil, fmt.Errorf("resource %q: segment %d is empty (want %s)", path, i+1, want)
		}
		for _, c := range s {
			if c < 0x21 || c == 0x7f {
				return nil, fmt.Errorf("resource %q: segment %d contains a space or control character", path, i+1)
			}
		}
	}
	return segs, nil
}
