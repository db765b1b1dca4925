package opcua

import "testing"

// FuzzParseVisitor: any bytes give a visitor with a node id or an error, never a panic.
func FuzzParseVisitor(f *testing.F) {
	for _, s := range []string{`{"nodeID":"ns=2;s=Temperature"}`, `{"nodeID":"i=2258"}`, `{"nodeID":"ns=1;b=AAEC"}`,
		`{"nodeID":"ns=1;g=5eac051c-c313-43d7-b790-24fa2ad8b4f2"}`, `{"browseName":"x"}`, `{"nodeID":""}`, `null`, `[]`,
		`{"browsePath":"1:Plant/1:Temperature","samplingInterval":"50ms","queueSize":5}`, `{"browsePath":"2:A&/B&","startNodeID":"i=84"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseVisitor(b)
		if err == nil && v.NodeID == nil {
			t.Fatalf("accepted %q without a node id", b)
		}
		for _, q := range v.BrowsePath {
			if err == nil && q.Name == "" {
				t.Fatalf("accepted %q with an empty browse name", b)
			}
		}
	})
}

// FuzzParseProtocolConfig: any bytes give a config with an opc.tcp url or an error.
func FuzzParseProtocolConfig(f *testing.F) {
	for _, s := range []string{`{"url":"opc.tcp://plc:4840"}`, `{"url":"opc.tcp://p:1","securityPolicy":"Basic256Sha256","securityMode":"Sign"}`,
		`{"url":"opc.tcp://p:1","userName":"op","password":"/pw"}`, `{"url":"opc.tcp://p:1","timeout":1e400}`, `{}`,
		`{"url":"opc.tcp://p:1","userName":{"secretKeyRef":{"name":"a","key":"u"},"value":"op"},"password":{"secretKeyRef":{"name":"a","key":"p"}}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseProtocolConfig(b)
		if err == nil && (c.URL == "" || c.Timeout <= 0) {
			t.Fatalf("accepted %q as %+v", b, c)
		}
	})
}
