package opcua

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
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
	UserName           Credential             // empty: anonymous
	Password           Credential             // a file path (KubeEdge's way) or a Secret key delivered with the Device
	ServerCertificate  string                 // optional: the server certificate the endpoint must present (pinning)
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
	UserName           json.RawMessage `json:"userName"`
	Password           json.RawMessage `json:"password"`
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
		Certificate: r.Certificate, PrivateKey: r.PrivateKey, ServerCertificate: r.ServerCertificate}
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
	if c.UserName, err = parseCredential("userName", r.UserName, false); err != nil {
		return c, err
	}
	if c.Password, err = parseCredential("password", r.Password, true); err != nil {
		return c, err
	}
	if r.PasswordFile != "" {
		if !c.Password.empty() {
			return c, fmt.Errorf(`opcua protocol configData: "password" and "passwordFile" both set; give one`)
		}
		if err := absPath("passwordFile", r.PasswordFile); err != nil {
			return c, err
		}
		c.Password = Credential{File: r.PasswordFile}
	}
	if c.UserName.empty() != c.Password.empty() {
		return c, fmt.Errorf(`opcua protocol configData: "userName" and "password" go together; leave both out for anonymous access`)
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

// Visitor is a property's visitors.configData: the node holding its value, and how the server should
// watch it for the subscription:
//
//	{"nodeID": "ns=2;s=Plant/Boiler/Temperature", "samplingInterval": "50ms", "queueSize": 10}
//	{"browsePath": "2:Plant/2:Boiler/2:Temperature"}
//
// nodeID takes any OPC-UA node id form: ns=<n>;i=<number>, ;s=<string>, ;g=<guid>, ;b=<base64>.
// browsePath is resolved once per session by the server (TranslateBrowsePathsToNodeIds), starting at
// the Objects folder (or at startNodeID): segments separated by "/", each a browse name with its
// namespace index ("2:Boiler"; no index: namespace 0); "&" escapes a "/" or ":" or "&" inside a name.
// KubeEdge's "browseName" may stand beside nodeID (it is only a label). samplingInterval (a duration,
// or milliseconds) and queueSize ask the server for the monitored item's sampling and queue (the
// server may revise them); they are used with subscriptions only.
type Visitor struct {
	NodeID           *ua.NodeID
	BrowsePath       []*ua.QualifiedName // when set, NodeID is the starting node
	SamplingInterval time.Duration       // 0: the server's default (the publishing interval)
	QueueSize        uint32              // 0: the default, 10
}

type rawVisitor struct {
	NodeID           string          `json:"nodeID"`
	BrowseName       string          `json:"browseName"`
	BrowsePath       string          `json:"browsePath"`
	StartNodeID      string          `json:"startNodeID"`
	SamplingInterval json.RawMessage `json:"samplingInterval"`
	QueueSize        *int64          `json:"queueSize"`
}

// objectsFolder is where browse paths start by default (i=85).
var objectsFolder = ua.NewNumericNodeID(0, 85)

// ParseVisitor checks and decodes a property's visitor.
func ParseVisitor(data []byte) (Visitor, error) {
	var r rawVisitor
	if err := decodeStrict(data, &r); err != nil {
		return Visitor{}, fmt.Errorf("opcua visitor configData: %w", err)
	}
	var v Visitor
	switch {
	case r.NodeID != "" && r.BrowsePath != "":
		return v, fmt.Errorf(`opcua visitor configData: give "nodeID" or "browsePath", not both`)
	case r.NodeID == "" && r.BrowsePath == "":
		return v, fmt.Errorf(`opcua visitor configData: "nodeID" (e.g. "ns=2;s=Temperature") or "browsePath" (e.g. "2:Plant/2:Temperature") is required; a browseName alone is not resolved`)
	case r.StartNodeID != "" && r.BrowsePath == "":
		return v, fmt.Errorf(`opcua visitor configData: "startNodeID" goes with "browsePath"`)
	}
	if r.NodeID != "" {
		id, err := ua.ParseNodeID(r.NodeID)
		if err != nil {
			return v, fmt.Errorf("opcua visitor configData: nodeID %q: %v", r.NodeID, err)
		}
		v.NodeID = id
	} else {
		path, err := parseBrowsePath(r.BrowsePath)
		if err != nil {
			return v, fmt.Errorf("opcua visitor configData: browsePath %q: %v", r.BrowsePath, err)
		}
		v.BrowsePath, v.NodeID = path, objectsFolder
		if r.StartNodeID != "" {
			if v.NodeID, err = ua.ParseNodeID(r.StartNodeID); err != nil {
				return v, fmt.Errorf("opcua visitor configData: startNodeID %q: %v", r.StartNodeID, err)
			}
		}
	}
	if len(r.SamplingInterval) > 0 {
		var s string
		var ms float64
		var err error
		switch {
		case json.Unmarshal(r.SamplingInterval, &s) == nil:
			v.SamplingInterval, err = time.ParseDuration(s)
		case json.Unmarshal(r.SamplingInterval, &ms) == nil && ms >= 0 && ms < 1e9:
			v.SamplingInterval = time.Duration(ms * float64(time.Millisecond))
		default:
			err = errors.New("not a duration")
		}
		if err != nil || v.SamplingInterval <= 0 || v.SamplingInterval > 24*time.Hour {
			return v, fmt.Errorf(`opcua visitor configData: samplingInterval %s is not a positive duration like "50ms" (or milliseconds) of at most 24h`, r.SamplingInterval)
		}
	}
	if r.QueueSize != nil {
		if *r.QueueSize < 1 || *r.QueueSize > 65536 {
			return v, fmt.Errorf("opcua visitor configData: queueSize %d is not between 1 and 65536", *r.QueueSize)
		}
		v.QueueSize = uint32(*r.QueueSize)
	}
	return v, nil
}

// parseBrowsePath splits "2:Plant/2:Boiler/Temperature" into qualified names ("&" escapes).
func parseBrowsePath(s string) ([]*ua.QualifiedName, error) {
	var segs []string
	var cur strings.Builder
	esc := false
	for _, c := range strings.TrimPrefix(s, "/") {
		switch {
		case esc:
			cur.WriteRune(c)
			esc = false
		case c == '&':
			esc = true
			cur.WriteRune(c) // kept until the segment is split at its ':'
		case c == '/':
			segs = append(segs, cur.String())
			cur.Reset()
		default:
			cur.WriteRune(c)
		}
	}
	if esc {
		return nil, errors.New(`ends with a lone "&"`)
	}
	segs = append(segs, cur.String())
	var out []*ua.QualifiedName
	for i, seg := range segs {
		ns, name := uint16(0), seg
		if j := unescapedColon(seg); j >= 0 {
			n, err := strconv.ParseUint(seg[:j], 10, 16)
			if err != nil {
				return nil, fmt.Errorf("segment %d %q: namespace index %q is not a number", i+1, unescape(seg), seg[:j])
			}
			ns, name = uint16(n), seg[j+1:]
		}
		name = unescape(name)
		if name == "" {
			return nil, fmt.Errorf("segment %d is empty", i+1)
		}
		out = append(out, &ua.QualifiedName{NamespaceIndex: ns, Name: name})
	}
	if len(out) > 32 {
		return nil, fmt.Errorf("%d segments, at most 32", len(out))
	}
	return out, nil
}

func unescapedColon(s string) int {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '&':
			i++
		case ':':
			return i
		}
	}
	return -1
}

func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '&' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// SecretKeyRef names one key of a Kubernetes Secret in the Device's own namespace (the shape of a
// pod's env valueFrom.secretKeyRef).
type SecretKeyRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// Credential is a user name or a password from the Device's configData: a literal (user names only),
// a file on the edge (passwords, as KubeEdge's mapper reads them), or a Secret key:
//
//	"password": {"secretKeyRef": {"name": "plc-login", "key": "password"}}
//
// The Device in the API holds only the reference. devicecontroller resolves it for the copy it sends
// to the one node the Device is bound to, adding "value"; a reference without a value here means the
// Secret or its key was missing. Its String and LogValue never show the value.
type Credential struct {
	Literal  string        // a user name written in the Device
	File     string        // a file holding the value
	Ref      *SecretKeyRef // a Secret key
	Resolved bool          // the value came with the reference
	value    string
}

// rawSecretRef is a {"secretKeyRef", "value"} object.
type rawSecretRef struct {
	SecretKeyRef *SecretKeyRef `json:"secretKeyRef"`
	Value        *string       `json:"value"`
}

func (c Credential) empty() bool { return c.Literal == "" && c.File == "" && c.Ref == nil }

// String names where the credential comes from, never its value.
func (c Credential) String() string {
	switch {
	case c.Ref != nil:
		return "secret " + c.Ref.Name + " key " + c.Ref.Key
	case c.File != "":
		return "file " + c.File
	case c.Literal != "":
		return c.Literal // a user name written in the Device (passwords never are)
	}
	return "none"
}

// GoString keeps %#v from printing the value.
func (c Credential) GoString() string { return "opcua.Credential(" + c.String() + ")" }

// LogValue keeps slog from printing the value.
func (c Credential) LogValue() slog.Value { return slog.StringValue(c.String()) }

func parseCredential(field string, raw json.RawMessage, secret bool) (Credential, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return Credential{}, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return Credential{}, fmt.Errorf("opcua protocol configData: %s: %w", field, err)
		}
		if s == "" {
			return Credential{}, nil
		}
		if !secret {
			return Credential{Literal: s}, nil
		}
		if !filepath.IsAbs(s) {
			return Credential{}, fmt.Errorf(`opcua protocol configData: %q must name a file holding the password (an absolute path) or a Secret ({"secretKeyRef": {"name", "key"}}); a password is never written into a Device`, field)
		}
		return Credential{File: s}, nil
	}
	var r rawSecretRef
	if err := decodeStrict(raw, &r); err != nil {
		return Credential{}, fmt.Errorf(`opcua protocol configData: %s is neither a string nor {"secretKeyRef": {"name", "key"}}: %w`, field, err)
	}
	if r.SecretKeyRef == nil || r.SecretKeyRef.Name == "" || r.SecretKeyRef.Key == "" {
		return Credential{}, fmt.Errorf(`opcua protocol configData: %s.secretKeyRef needs "name" and "key" (a Secret in the Device's namespace)`, field)
	}
	c := Credential{Ref: r.SecretKeyRef}
	if r.Value != nil {
		c.Resolved, c.value = true, *r.Value
	}
	return c, nil
}

// errCredentialsMissing marks a Secret reference devicecontroller could not resolve.
var errCredentialsMissing = errors.New("credentials missing")

// resolve returns the credential's value: the literal, the file's content (trailing newlines cut), or
// the value delivered with the Secret reference.
func (c Credential) resolve(field string) (string, error) {
	switch {
	case c.Ref != nil && !c.Resolved:
		return "", fmt.Errorf("%w: %s: Secret %q key %q did not reach this node with the Device (the Secret does not exist in the Device's namespace or lacks the key)", errCredentialsMissing, field, c.Ref.Name, c.Ref.Key)
	case c.Ref != nil:
		return c.value, nil
	case c.File != "":
		b, err := os.ReadFile(c.File)
		if err != nil {
			return "", fmt.Errorf("%w: %s: reading the file: %v", errCredentialsMissing, field, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return c.Literal, nil
}
