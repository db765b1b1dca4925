package message

import (
	"strings"
	"testing"
)

func TestParseCloudAcceptsNodePaths(t *testing.T) {
	tests := []struct {
		in   string
		want Resource
	}{
		{"node/edge-1/default/pod/nginx", Resource{Node: "edge-1", Namespace: "default", Type: "pod", Name: "nginx"}},
		{"node/edge-1/kube-system/configmap", Resource{Node: "edge-1", Namespace: "kube-system", Type: "configmap"}},
	}
	for _, tt := range tests {
		got, err := ParseCloud(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseCloud(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
		if got.Cloud() != tt.in {
			t.Errorf("Cloud() = %q, want %q", got.Cloud(), tt.in)
		}
	}
}

func TestParseRejectsMalformedPathsWithReason(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
		cloud             bool
	}{
		{"empty", "", "empty", true},
		{"wrong prefix", "nodes/e/default/pod/x", `first segment must be "node"`, true},
		{"too short", "node/e/default", "got 3 segments", true},
		{"too long", "node/e/default/pod/x/y", "got 6 segments", true},
		{"empty node", "node//default/pod/x", "segment 2 is empty", true},
		{"trailing slash", "node/e/default/pod/", "segment 5 is empty", true},
		{"space", "node/e/def ault/pod/x", "space or control", true},
		{"edge too short", "default", "got 1 segments", false},
		{"edge too long", "a/b/c/d", "got 4 segments", false},
		{"edge empty type", "default//x", "segment 2 is empty", false},
		{"edge control char", "default/pod/x\n", "control character", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.cloud {
				_, err = ParseCloud(tt.in)
			} else {
				_, err = ParseEdge(tt.in)
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("parse %q: error %v, want it to contain %q", tt.in, err, tt.wantErr)
			}
		})
	}
}

func TestToEdgeDropsTheNodePrefix(t *testing.T) {
	node, edge, err := ToEdge("node/edge-1/default/pod/nginx")
	if err != nil || node != "edge-1" || edge != "default/pod/nginx" {
		t.Fatalf("ToEdge = %q, %q, %v", node, edge, err)
	}
	r, err := ParseEdge(edge)
	if err != nil || r.Name != "nginx" || r.Edge() != edge {
		t.Fatalf("ParseEdge(%q) = %+v, %v", edge, r, err)
	}
}

// FuzzParseCloud: the parser never panics, and whatever it accepts prints back to the same path.
func FuzzParseCloud(f *testing.F) {
	for _, s := range []string{"node/e/default/pod/x", "node/e/ns/configmap", "node//a/b", "a/b/c", "node/e/ns/t/n/extra", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseCloud(s)
		if err != nil {
			return
		}
		if r.Cloud() != s {
			t.Fatalf("ParseCloud(%q).Cloud() = %q", s, r.Cloud())
		}
		if e, err := ParseEdge(r.Edge()); err != nil || e.Edge() != r.Edge() {
			t.Fatalf("edge form of %q does not parse back: %v", s, err)
		}
	})
}
