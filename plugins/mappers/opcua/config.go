package opcua

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/gopcua/opcua/ua"
)

// ProtocolConfig is a device's spec.protocol.configData (KubeEdge's OPC-UA field names):
//
//	{"url": "opc.tcp://plc:4840", "securityPolicy": "Basic256Sha256", "securityMode": "SignAndEncrypt",
//	 "certificate": "/var/lib/kedge/opcua/client.crt", "privateKey": "/var/lib/kedge/opcua/client.key",
//	 "userName": "operator", "password": "/etc/kedge/opcua-password", "timeout": "5s"}
//
// password names a file holding the password (as KubeEdge's mapper reads it), so no secret is ever
// written into a Device. Unknown fields are an error.
type ProtocolConfig struct {
	URL                string
	SecurityPolicy     string                 // a policy URI: None or Basic256Sha256
	SecurityMode       ua.MessageSecurityMode // None, Sign, SignAndEncrypt
	Certificate        string                 // client certificate (PEM or DER); generated there on first start when missing
	PrivateKey         string                 // its RSA key (PEM)
	UserName           string                 // empty: anonymous
	PasswordFile       string
	ServerCertificate  string // optional: the server certificate the endpoint must present (pinning)
	Timeout            time.Duration
	Subscribe          bool          // monitored items instead of Read calls (default true)
	PublishingInterval time.Duration // the subscription's publishing interval (default 100ms)
}

type rawProtocol struct {
	URL                string          `json:"url"`
	Endpoint           string          `json:"endpoint"`
	SecurityPolicy     string          `json:"securityPolicy"`
	SecurityMode       string          `json:"securityMode"`
	Certificate        string          `json:"certificate"`
	PrivateKey         string          `json:"privateKey"`
	UserName           string          `json:"userName"`
	Password           string          `json:"password"`
	PasswordFile       string          `json:"passwordFile"`
	ServerCertificate  string          `json:"serverCertificate"`
	Timeout            json.RawMessage `json:"timeout"`
	Subscribe          *bool           `json:"subscribe"`
	PublishingInterval string          `json:"publishingInterval"`
}

func decodeStrict(data []byte, v any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		data = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func absPath(field, p string) error {
	if p != "" && !filepath.IsAbs(p) {
		return fmt.Errorf("opcua protocol configData: %s %q is not an absolute file path", field, p)
	}
	return nil
}

// ParseProtocolConfig checks and decodes spec.protocol.configData, naming the wrong field.
func ParseProtocolConfig(data []byte) (ProtocolConfig, error) {
	var r rawProtocol
	if err := decodeStrict(data, &r); err != nil {
		return ProtocolConfig{}, fmt.Errorf("opcua protocol configData: %w", err)
	}
	c := ProtocolConfig{URL: r.URL, Timeout: 5 * time.Second, Subscribe: true, PublishingInterval: 100 * time.Millisecond,
		Certificate: r.Certificate, PrivateKey: r.PrivateKey, UserName: r.UserName, ServerCertificate: r.ServerCertificate}
	if c.URL == "" {
		c.URL = r.Endpoint
	}
	if c.URL == "" {
		return c, fmt.Errorf(`opcua protocol configData: "url" is required (e.g. "opc.tcp://plc:4840")`)
	}
	u, err := url.Parse(c.URL)
	if err != nil || u.Scheme != "opc.tcp" || u.Host == "" {
		return c, fmt.Errorf("opcua protocol configData: url %q is not an opc.tcp://host:port address", c.URL)
	}
	switch strings.ToLower(strings.TrimPrefix(r.SecurityPolicy, "http://opcfoundation.org/UA/SecurityPolicy#")) {
	case "", "none":
		c.SecurityPolicy = ua.SecurityPolicyURINone
	case "basic256sha256":
		c.SecurityPolicy = ua.SecurityPolicyURIBasic256Sha256
	default:
		return c, fmt.Errorf("opcua protocol configData: securityPolicy %q is not one of None, Basic256Sha256", r.SecurityPolicy)
	}
	switch strings.ToLower(r.SecurityMode) {
	case "":
		c.SecurityMode = ua.MessageSecurityModeNone
		if c.SecurityPolicy != ua.SecurityPolicyURINone {
			c.SecurityMode = ua.MessageSecurityModeSignAndEncrypt
		}
	case "none":
		c.SecurityMode = ua.MessageSecurityModeNone
	case "sign":
		c.SecurityMode = ua.MessageSecurityModeSign
	case "signandencrypt":
		c.SecurityMode = ua.MessageSecurityModeSignAndEncrypt
	default:
		return c, fmt.Errorf("opcua protocol configData: securityMode %q is not one of None, Sign, SignAndEncrypt", r.SecurityMode)
	}
	if (c.SecurityPolicy == ua.SecurityPolicyURINone) != (c.SecurityMode == ua.MessageSecurityModeNone) {
		return c, fmt.Errorf("opcua protocol configData: securityPolicy %s needs securityMode %s", strings.TrimPrefix(c.SecurityPolicy, "http://opcfoundation.org/UA/SecurityPolicy#"),
			map[bool]string{true: "None", false: "Sign or SignAndEncrypt"}[c.SecurityPolicy == ua.SecurityPolicyURINone])
	}
	if (c.Certificate == "") != (c.PrivateKey == "") {
		return c, fmt.Errorf(`opcua protocol configData: "certificate" and "privateKey" go together (both paths, or neither for a certificate generated in memory)`)
	}
	for _, f := range []struct{ name, path string }{{"certificate", c.Certificate}, {"privateKey", c.PrivateKey}, {"serverCertificate", c.ServerCertificate}} {
		if err := absPath(f.name, f.path); err != nil {
			return c, err
		}
	}
	c.PasswordFile = r.PasswordFile
	if r.Password != "" {
		if c.PasswordFile != "" {
			return c, fmt.Errorf(`opcua protocol configData: "password" and "passwordFile" both set; give one file path`)
		}
		if !filepath.IsAbs(r.Password) {
			return c, fmt.Errorf(`opcua protocol configData: "password" must name a file holding the password (an absolute path); a password is never written into a Device`)
		}
		c.PasswordFile = r.Password
	}
	if err := absPath("passwordFile", c.PasswordFile); err != nil {
		return c, err
	}
	if (c.UserName == "") != (c.PasswordFile == "") {
		return c, fmt.Errorf(`opcua protocol configData: "userName" and "password" (a file path) go together; leave both out for anonymous access`)
	}
	if len(r.Timeout) > 0 {
		var s string
		var ms float64
		switch {
		case json.Unmarshal(r.Timeout, &s) == nil:
			if c.Timeout, err = time.ParseDuration(s); err != nil {
				return c, fmt.Errorf("opcua protocol configData: timeout %q is not a duration like \"5s\"", s)
			}
		case json.Unmarshal(r.Timeout, &ms) == nil:
			c.Timeout = time.Duration(ms * float64(time.Millisecond))
		default:
			return c, fmt.Errorf("opcua protocol configData: timeout %s is neither a duration string nor milliseconds", r.Timeout)
		}
		if c.Timeout <= 0 {
			return c, fmt.Errorf("opcua protocol configData: timeout %s must be positive", c.Timeout)
		}
	}
	if r.Subscribe != nil {
		c.Subscribe = *r.Subscribe
	}
	if r.PublishingInterval != "" {
		if c.PublishingInterval, err = time.ParseDuration(r.PublishingInterval); err != nil || c.PublishingInterval < 10*time.Millisecond {
			return c, fmt.Errorf("opcua protocol configData: publishingInterval %q is not a duration of at least 10ms", r.PublishingInterval)
		}
	}
	return c, nil
}

// Visitor is a property's visitors.configData: the node holding its value.
//
//	{"nodeID": "ns=2;s=Plant/Boiler/Temperature"}
//
// Any OPC-UA node id form works: ns=<n>;i=<number>, ;s=<string>, ;g=<guid>, ;b=<base64>.
// KubeEdge's "browseName" may stand beside nodeID (it is only a label).
type Visitor struct {
	NodeID *ua.NodeID
}

type rawVisitor struct {
	NodeID     string `json:"nodeID"`
	BrowseName string `json:"browseName"`
}

// ParseVisitor checks and decodes a property's visitor.
func ParseVisitor(data []byte) (Visitor, error) {
	var r rawVisitor
	if err := decodeStrict(data, &r); err != nil {
		return Visitor{}, fmt.Errorf("opcua visitor configData: %w", err)
	}
	if r.NodeID == "" {
		return Visitor{}, fmt.Errorf(`opcua visitor configData: "nodeID" is required (e.g. "ns=2;s=Temperature"); a browseName alone is not resolved`)
	}
	id, err := ua.ParseNodeID(r.NodeID)
	if err != nil {
		return Visitor{}, fmt.Errorf("opcua visitor configData: nodeID %q: %v", r.NodeID, err)
	}
	return Visitor{NodeID: id}, nil
}
