package cloudbus

import (
	"strings"
	"testing"
)

func TestParsePathSplitsNodePortAndEscapedPath(t *testing.T) {
	tests := []struct {
		name, in         string
		node, path, fail string
		port             int
	}{
		{name: "a path under the port keeps its escaping", in: "/nodes/n1/ports/8080/a%2Fb/c", node: "n1", port: 8080, path: "/a%2Fb/c"},
		{name: "no path after the port is /", in: "/nodes/n1/ports/80", node: "n1", port: 80, path: "/"},
		{name: "a trailing slash is /", in: "/nodes/n1/ports/80/", node: "n1", port: 80, path: "/"},
		{name: "another prefix is refused", in: "/node/n1/ports/80/", fail: "want /nodes/<node>/ports/<port>/<path>"},
		{name: "a missing port is refused", in: "/nodes/n1/ports", fail: "want /nodes/<node>/ports/<port>/<path>"},
		{name: "a port out of range is refused", in: "/nodes/n1/ports/0/", fail: "not a number in 1..65535"},
		{name: "a port that is not a number is refused", in: "/nodes/n1/ports/http/", fail: "not a number in 1..65535"},
		{name: "an escaped node name is refused", in: "/nodes/n%2F1/ports/80/", fail: "must not be escaped"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node, port, path, err := parsePath(tt.in)
			if tt.fail != "" {
				if err == nil || !strings.Contains(err.Error(), tt.fail) {
					t.Fatalf("err %v, want %q", err, tt.fail)
				}
				return
			}
			if err != nil || node != tt.node || port != tt.port || path != tt.path {
				t.Fatalf("got %q %d %q %v, want %q %d %q", node, port, path, err, tt.node, tt.port, tt.path)
			}
		})
	}
}

func TestStartRefusesUnsafeOrBadSettings(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  func(*Module)
		want string
	}{
		{"no token and no insecureNoAuth", func(*Module) {}, "no token or tokenFile"},
		{"token and insecureNoAuth together", func(m *Module) { m.Token, m.InsecureNoAuth = "t", true }, "choose one"},
		{"token and tokenFile together", func(m *Module) { m.Token, m.TokenFile = "t", "/x" }, "not both"},
		{"a missing tokenFile", func(m *Module) { m.TokenFile = "/nonexistent/token" }, "tokenFile"},
		{"a TLS cert without its key", func(m *Module) { m.Token, m.TLSCertFile = "t", "/x.crt" }, "go together"},
		{"a zero timeout", func(m *Module) { m.Token, m.Timeout = "t", 0 }, "timeout: must be positive"},
		{"a zero request limit", func(m *Module) { m.Token, m.MaxRequestBytes = "t", 0 }, "maxRequestBytes: must be in"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := New()
			m.Address = "127.0.0.1:0"
			tt.cfg(m)
			err := m.Start(t.Context(), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Start = %v, want %q", err, tt.want)
			}
		})
	}
}
