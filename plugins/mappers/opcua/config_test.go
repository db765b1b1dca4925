package opcua

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"
)

func TestProtocolConfigParsingNamesTheWrongField(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		check    func(ProtocolConfig) bool
		err      string
	}{
		{"defaults", `{"url":"opc.tcp://plc:4840"}`, func(c ProtocolConfig) bool {
			return c.SecurityPolicy == ua.SecurityPolicyURINone && c.SecurityMode == ua.MessageSecurityModeNone && c.Subscribe &&
				c.Timeout == 5*time.Second && c.PublishingInterval == 100*time.Millisecond
		}, ""},
		{"policy alone means SignAndEncrypt", `{"url":"opc.tcp://plc:4840","securityPolicy":"Basic256Sha256"}`, func(c ProtocolConfig) bool {
			return c.SecurityPolicy == ua.SecurityPolicyURIBasic256Sha256 && c.SecurityMode == ua.MessageSecurityModeSignAndEncrypt
		}, ""},
		{"policy URI and Sign", `{"url":"opc.tcp://plc:4840","securityPolicy":"http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256","securityMode":"Sign"}`,
			func(c ProtocolConfig) bool { return c.SecurityMode == ua.MessageSecurityModeSign }, ""},
		{"KubeEdge's password is a file", `{"url":"opc.tcp://plc:4840","userName":"op","password":"/etc/kedge/pw","timeout":1500,"subscribe":false}`,
			func(c ProtocolConfig) bool {
				return c.Password.File == "/etc/kedge/pw" && c.UserName.Literal == "op" && c.Timeout == 1500*time.Millisecond && !c.Subscribe
			}, ""},
		{"password from a Secret", `{"url":"opc.tcp://plc:4840","userName":"op","password":{"secretKeyRef":{"name":"plc","key":"pw"}}}`,
			func(c ProtocolConfig) bool {
				return c.Password.Ref.Name == "plc" && c.Password.Ref.Key == "pw" && !c.Password.Resolved
			}, ""},
		{"both from a Secret, delivered", `{"url":"opc.tcp://plc:4840","userName":{"secretKeyRef":{"name":"plc","key":"u"},"value":"op"},"password":{"secretKeyRef":{"name":"plc","key":"pw"},"value":"hunter2"}}`,
			func(c ProtocolConfig) bool {
				u, _ := c.UserName.resolve("userName")
				pw, _ := c.Password.resolve("password")
				shown := fmt.Sprintf("%v %+v %#v %s", c, c, c, c.Password)
				return u == "op" && pw == "hunter2" && !strings.Contains(shown, "hunter2")
			}, ""},
		{"secretKeyRef without key", `{"url":"opc.tcp://p:1","userName":"op","password":{"secretKeyRef":{"name":"plc"}}}`, nil, `password.secretKeyRef needs "name" and "key"`},
		{"secret in another namespace", `{"url":"opc.tcp://p:1","userName":"op","password":{"secretKeyRef":{"name":"plc","key":"k","namespace":"kube-system"}}}`, nil, `unknown field "namespace"`},
		{"no url", `{}`, nil, `"url" is required`},
		{"not opc.tcp", `{"url":"http://plc:4840"}`, nil, "not an opc.tcp://host:port address"},
		{"unknown policy", `{"url":"opc.tcp://p:1","securityPolicy":"Basic128Rsa15"}`, nil, `securityPolicy "Basic128Rsa15" is not one of None, Basic256Sha256`},
		{"unknown mode", `{"url":"opc.tcp://p:1","securityMode":"Encrypt"}`, nil, `securityMode "Encrypt"`},
		{"None with Sign", `{"url":"opc.tcp://p:1","securityMode":"Sign"}`, nil, "securityPolicy None needs securityMode None"},
		{"Basic256Sha256 with None", `{"url":"opc.tcp://p:1","securityPolicy":"Basic256Sha256","securityMode":"None"}`, nil, "needs securityMode Sign or SignAndEncrypt"},
		{"certificate without key", `{"url":"opc.tcp://p:1","certificate":"/a.crt"}`, nil, `"certificate" and "privateKey" go together`},
		{"relative certificate", `{"url":"opc.tcp://p:1","certificate":"a.crt","privateKey":"/a.key"}`, nil, `certificate "a.crt" is not an absolute file path`},
		{"password in the spec", `{"url":"opc.tcp://p:1","userName":"op","password":"hunter2"}`, nil, "a password is never written into a Device"},
		{"user without password", `{"url":"opc.tcp://p:1","userName":"op"}`, nil, `"userName" and "password" go together`},
		{"both password forms", `{"url":"opc.tcp://p:1","userName":"op","password":"/a","passwordFile":"/b"}`, nil, "both set"},
		{"bad timeout", `{"url":"opc.tcp://p:1","timeout":"soon"}`, nil, `timeout "soon"`},
		{"tiny publishing interval", `{"url":"opc.tcp://p:1","publishingInterval":"1ms"}`, nil, "at least 10ms"},
		{"typo", `{"url":"opc.tcp://p:1","securtyPolicy":"None"}`, nil, `unknown field "securtyPolicy"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseProtocolConfig([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !tc.check(c) {
				t.Fatalf("got %+v %v", c, err)
			}
		})
	}
}

func TestBrowsePathsParseWithNamespacesAndEscapes(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"browsePath":"1:Plant/1:Temperature"}`, "i=85 1:Plant/1:Temperature"},
		{`{"browsePath":"/Server/ServerStatus","startNodeID":"i=84"}`, "i=84 0:Server/0:ServerStatus"},
		{`{"browsePath":"2:A&/B/2:C&:D/3:E&&F"}`, "i=85 2:A/B/2:C:D/3:E&F"},
	} {
		v, err := ParseVisitor([]byte(tc.in))
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		var segs []string
		for _, q := range v.BrowsePath {
			segs = append(segs, fmt.Sprintf("%d:%s", q.NamespaceIndex, q.Name))
		}
		if got := v.NodeID.String() + " " + strings.Join(segs, "/"); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.in, got, tc.want)
		}
	}
	v, err := ParseVisitor([]byte(`{"nodeID":"ns=1;s=T","samplingInterval":250,"queueSize":3}`))
	if err != nil || v.SamplingInterval != 250*time.Millisecond || v.QueueSize != 3 {
		t.Fatalf("sampling and queue: %+v %v", v, err)
	}
}

func TestVisitorParsingTakesEveryNodeIDForm(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{`{"nodeID":"ns=2;s=Plant/Boiler/Temperature"}`, "ns=2;s=Plant/Boiler/Temperature", ""},
		{`{"nodeID":"i=2258","browseName":"CurrentTime"}`, "i=2258", ""},
		{`{"nodeID":"ns=1;g=5eac051c-c313-43d7-b790-24fa2ad8b4f2"}`, "ns=1;g=5EAC051C-C313-43D7-B790-24FA2AD8B4F2", ""},
		{`{"browseName":"Temperature"}`, "", `"nodeID" (e.g. "ns=2;s=Temperature") or "browsePath"`},
		{`{"nodeID":"i=85","browsePath":"1:Plant"}`, "", `not both`},
		{`{"nodeID":"i=85","startNodeID":"i=84"}`, "", `"startNodeID" goes with "browsePath"`},
		{`{"browsePath":"x:Plant"}`, "", `namespace index "x" is not a number`},
		{`{"browsePath":"1:Plant//1:T"}`, "", `segment 2 is empty`},
		{`{"nodeID":"i=85","queueSize":0}`, "", `queueSize 0 is not between 1 and 65536`},
		{`{"nodeID":"i=85","samplingInterval":"0s"}`, "", `samplingInterval "0s" is not a positive duration`},
		{`{"nodeID":"ns=x;s=T"}`, "", `nodeID "ns=x;s=T"`},
		{`{"node":"ns=1;s=T"}`, "", `unknown field "node"`},
	} {
		v, err := ParseVisitor([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !strings.EqualFold(v.NodeID.String(), tc.want) {
			t.Errorf("%s: %v %v, want %s", tc.in, v.NodeID, err, tc.want)
		}
	}
}

func TestToVariantKeepsTheNodesTypeAndRefusesWhatDoesNotFit(t *testing.T) {
	for _, tc := range []struct {
		typ  ua.TypeID
		in   any
		want any
		err  string
	}{
		{ua.TypeIDDouble, 21.5, 21.5, ""},
		{ua.TypeIDFloat, 21.5, float32(21.5), ""},
		{ua.TypeIDInt32, int64(-7), int32(-7), ""},
		{ua.TypeIDUint16, 65535.0, uint16(65535), ""},
		{ua.TypeIDBoolean, true, true, ""},
		{ua.TypeIDBoolean, int64(0), false, ""},
		{ua.TypeIDString, "boiler-2", "boiler-2", ""},
		{ua.TypeIDInt16, int64(40000), nil, "does not fit"},
		{ua.TypeIDUint32, int64(-1), nil, "does not fit"},
		{ua.TypeIDInt32, 1.5, nil, "does not fit"},
		{ua.TypeIDDateTime, "2026-01-01", nil, "not supported"},
	} {
		v, err := toVariant(tc.typ, tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s ← %v: %v, want %q", tc.typ, tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || v.Value() != tc.want {
			t.Errorf("%s ← %v = %#v %v, want %#v", tc.typ, tc.in, v.Value(), err, tc.want)
		}
	}
}
