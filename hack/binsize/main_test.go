package main

import "testing"

func TestSymbolsAreCountedTowardTheirPackage(t *testing.T) {
	for _, tc := range []struct{ sym, pkg, group string }{
		{"github.com/quic-go/quic-go/internal/wire.(*Header).Write", "github.com/quic-go/quic-go/internal/wire", "github.com/quic-go/quic-go"},
		{"net/http.(*Transport).roundTrip", "net/http", "net/http"},
		{"type:*github.com/kedge-io/kedge/host/hub.Conn", "github.com/kedge-io/kedge/host/hub", "github.com/kedge-io/kedge"},
		{"slices.SortFunc[go.shape.[]string,go.shape.string]", "slices", "slices"},
		{"k8s.io/apimachinery/pkg/util/sets.New[go.shape.string]", "k8s.io/apimachinery/pkg/util/sets", "k8s.io/apimachinery"},
		{"go:func.*", "go:", "go:"},
		{"type:map[string]int", "go:types", "go:types"},
		{"sqlite3VdbeExec", "C", "C"},
		{"runtime.mallocgc", "runtime", "runtime"},
	} {
		if got := Package(tc.sym); got != tc.pkg {
			t.Errorf("Package(%q) = %q, want %q", tc.sym, got, tc.pkg)
		}
		if got := Group(Package(tc.sym)); got != tc.group {
			t.Errorf("Group(Package(%q)) = %q, want %q", tc.sym, got, tc.group)
		}
	}
}
