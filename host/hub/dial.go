package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// Handshake facts shared with KubeEdge's edgehub and cloudhub.
const (
	// DefaultProjectID is KubeEdge edgehub's default projectID, the first segment of the events path.
	DefaultProjectID = "e632aba927ea4ac2b575ec1603d56f10"

	HeaderNodeID    = "node_id"
	HeaderProjectID = "project_id"
	// HeaderConnectionUse is viaduct's "what is this connection for" header; "msg" means messages, the
	// only use a hub serves (viaduct also knows "str" stream and "shr" shared).
	HeaderConnectionUse = "ConnectionUse"
	connectionUseMsg    = "msg"

	nodeCNPrefix = "system:node:"
	nodesGroup   = "system:nodes"
)

// ErrRejected is wrapped by Accept's error when it turns a client away (the client got an HTTP error).
var ErrRejected = errors.New("hub connection rejected")

// EventsPath is the path an edge dials: /<projectID>/<nodeName>/events.
func EventsPath(projectID, node string) string {
	return "/" + url.PathEscape(projectID) + "/" + url.PathEscape(node) + "/events"
}

// ParseEventsPath splits /<projectID>/<nodeName>/events, checking the node name is a valid
// Kubernetes node name.
func ParseEventsPath(path string) (projectID, node string, err error) {
	parts := strings.Split(path, "/")
	if len(parts) != 4 || parts[0] != "" || parts[1] == "" || parts[3] != "events" {
		return "", "", fmt.Errorf("path %q is not /<projectID>/<nodeName>/events", path)
	}
	if err := checkNodeName(parts[2]); err != nil {
		return "", "", fmt.Errorf("path %q: %w", path, err)
	}
	return parts[1], parts[2], nil
}

// checkNodeName accepts a DNS-1123 subdomain, what Kubernetes requires of a node name.
func checkNodeName(name string) error {
	if name == "" || len(name) > 253 {
		return fmt.Errorf("node name %q must be 1 to 253 characters", name)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' || len(label) > 63 {
			return fmt.Errorf("node name %q is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')", name)
		}
		for _, r := range label {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
				return fmt.Errorf("node name %q is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')", name)
			}
		}
	}
	return nil
}

// NodeFromCert returns the node a client certificate was issued to: its CN must be
// system:node:<name> with a valid node name and its O must include system:nodes, as in the
// certificates KubeEdge's (and Kedge's) cloudcore signs for edge nodes.
func NodeFromCert(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", errors.New("no client certificate")
	}
	cn := cert.Subject.CommonName
	name, ok := strings.CutPrefix(cn, nodeCNPrefix)
	if !ok {
		return "", fmt.Errorf("certificate CN %q does not start with %q: not a node certificate", cn, nodeCNPrefix)
	}
	if err := checkNodeName(name); err != nil {
		return "", fmt.Errorf("certificate CN %q: %w", cn, err)
	}
	if !slices.Contains(cert.Subject.Organization, nodesGroup) {
		return "", fmt.Errorf("certificate for %q has O %q, want %q among them", cn, cert.Subject.Organization, nodesGroup)
	}
	return name, nil
}

// DialOptions say where and as whom an edge connects.
type DialOptions struct {
	// URL is wss://<cloud>:10000/<projectID>/<nodeName>/events; if its path is empty or "/", the
	// events path is built from ProjectID and NodeID.
	URL string
	// TLS carries the node's certificate and the cloud's CA (RootCAs).
	TLS *tls.Config
	// NodeID and ProjectID go in the node_id and project_id headers and must match the URL's path.
	// ProjectID defaults to DefaultProjectID.
	NodeID, ProjectID string
	// Header holds extra handshake headers.
	Header http.Header
	// HandshakeTimeout bounds the TCP, TLS and websocket handshakes; default 30s (ctx may end it sooner).
	HandshakeTimeout time.Duration
	// KubeEdgeLane dials as KubeEdge's edgecore does: without offering Subprotocol, so the cloud
	// (Kedge's too) speaks KubeEdge's JSON lane. Otherwise the lane is LaneKedge if the cloud selects
	// Subprotocol and LaneKubeEdge if it does not (KubeEdge's cloudcore).
	KubeEdgeLane bool
	Options
}

// Dial connects an edge to a hub (Kedge's cloudhub or KubeEdge's): the websocket handshake carries
// node_id, project_id and ConnectionUse: msg, as KubeEdge's edgehub sends them.
func Dial(ctx context.Context, o DialOptions) (*Conn, error) {
	if o.ProjectID == "" {
		o.ProjectID = DefaultProjectID
	}
	if err := checkNodeName(o.NodeID); err != nil {
		return nil, fmt.Errorf("dial hub: NodeID: %w", err)
	}
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("dial hub: URL %q: %w", o.URL, err)
	}
	if u.Scheme != "wss" {
		return nil, fmt.Errorf("dial hub: URL %q: scheme must be wss (the hub is TLS only)", o.URL)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = EventsPath(o.ProjectID, o.NodeID)
	}
	project, node, err := ParseEventsPath(u.Path)
	if err != nil {
		return nil, fmt.Errorf("dial hub: URL %q: %w", o.URL, err)
	}
	if node != o.NodeID || project != o.ProjectID {
		return nil, fmt.Errorf("dial hub: URL %q names project %q node %q, but ProjectID is %q and NodeID %q",
			o.URL, project, node, o.ProjectID, o.NodeID)
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 30 * time.Second
	}
	hdr := o.Header.Clone()
	if hdr == nil {
		hdr = http.Header{}
	}
	hdr.Set(HeaderNodeID, o.NodeID)
	hdr.Set(HeaderProjectID, o.ProjectID)
	hdr.Set(HeaderConnectionUse, connectionUseMsg)
	var out *coalescingConn
	d := websocket.Dialer{
		Subprotocols: []string{Subprotocol},
		// The TLS handshake is done here rather than by gorilla so that a coalescingConn can sit
		// between the websocket and TLS layers.
		NetDialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			raw, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			cfg := o.TLS.Clone()
			if cfg == nil {
				cfg = &tls.Config{}
			}
			if cfg.ServerName == "" {
				cfg.ServerName, _, _ = net.SplitHostPort(addr)
			}
			tc := tls.Client(raw, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				_ = raw.Close()
				return nil, err
			}
			out = &coalescingConn{Conn: tc}
			return out, nil
		},
		HandshakeTimeout: o.HandshakeTimeout,
		ReadBufferSize:   readBufferSize,
		WriteBufferSize:  writeBufferSize,
		WriteBufferPool:  writeBufferPool,
	}
	if o.KubeEdgeLane {
		d.Subprotocols = nil
	}
	ws, resp, err := d.DialContext(ctx, u.String(), hdr)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			_ = resp.Body.Close()
			return nil, fmt.Errorf("dial hub %s: %w (HTTP %s: %s)", u.Redacted(), err, resp.Status, strings.TrimSpace(string(body)))
		}
		return nil, fmt.Errorf("dial hub %s: %w", u.Redacted(), err)
	}
	certs := out.Conn.(*tls.Conn).ConnectionState().PeerCertificates
	lane := LaneKubeEdge
	if ws.Subprotocol() == Subprotocol {
		lane = LaneKedge
	}
	return newConn(ws, out, lane, false, o.NodeID, o.ProjectID, certs, o.Options), nil
}

// AcceptOptions tune Accept.
type AcceptOptions struct {
	// HandshakeTimeout bounds the websocket upgrade; default 30s.
	HandshakeTimeout time.Duration
	Options
}

// Accept upgrades an edge's request to a hub connection. It requires the path
// /<projectID>/<nodeName>/events and a client certificate verified by the server's TLS config
// (ClientAuth: tls.RequireAndVerifyClientCert with the node CA in ClientCAs), and takes the node's
// identity from that certificate (NodeFromCert): the path's node name and a node_id header, if sent,
// must agree with it. On refusal it answers with an HTTP error and returns an error wrapping
// ErrRejected that says why; the caller should log it.
func Accept(w http.ResponseWriter, r *http.Request, o AcceptOptions) (*Conn, error) {
	m := o.Metrics
	refuse := func(status, reason int, format string, args ...any) (*Conn, error) {
		m.reject(reason)
		msg := fmt.Sprintf(format, args...)
		http.Error(w, msg, status)
		return nil, fmt.Errorf("accept hub connection from %s: %w: %s", r.RemoteAddr, ErrRejected, msg)
	}
	project, pathNode, err := ParseEventsPath(r.URL.Path)
	if err != nil {
		return refuse(http.StatusNotFound, rejectPath, "%v", err)
	}
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return refuse(http.StatusUnauthorized, rejectNoCert,
			"a client certificate signed by the hub's CA is required (server: set tls.Config.ClientAuth to RequireAndVerifyClientCert)")
	}
	node, err := NodeFromCert(r.TLS.VerifiedChains[0][0])
	if err != nil {
		return refuse(http.StatusForbidden, rejectCert, "%v", err)
	}
	if pathNode != node {
		return refuse(http.StatusForbidden, rejectIdentity, "certificate is for node %q but the path names node %q", node, pathNode)
	}
	if id := r.Header.Get(HeaderNodeID); id != "" && id != node {
		return refuse(http.StatusForbidden, rejectIdentity, "certificate is for node %q but the node_id header says %q", node, id)
	}
	if p := r.Header.Get(HeaderProjectID); p != "" && p != project {
		return refuse(http.StatusBadRequest, rejectHeader, "project_id header %q differs from the path's project %q", p, project)
	}
	if use := r.Header.Get(HeaderConnectionUse); use != "" && use != connectionUseMsg {
		return refuse(http.StatusBadRequest, rejectHeader, "ConnectionUse %q is not served here, only %q", use, connectionUseMsg)
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 30 * time.Second
	}
	up := websocket.Upgrader{
		HandshakeTimeout: o.HandshakeTimeout,
		ReadBufferSize:   readBufferSize,
		WriteBufferSize:  writeBufferSize,
		WriteBufferPool:  writeBufferPool,
		// Edges are not browsers and are authenticated by their certificate, so Origin means nothing.
		CheckOrigin: func(*http.Request) bool { return true },
		// Selected only when the client offers it: a Kedge edge. KubeEdge's edgecore offers none.
		Subprotocols: []string{Subprotocol},
	}
	hj := &hijacker{ResponseWriter: w}
	ws, err := up.Upgrade(hj, r, nil) // on failure Upgrade has already answered with an HTTP error
	if err != nil {
		m.reject(rejectUpgrade)
		return nil, fmt.Errorf("accept hub connection from %s (node %s): %w: %w", r.RemoteAddr, node, ErrRejected, err)
	}
	lane := LaneKubeEdge
	if ws.Subprotocol() == Subprotocol {
		lane = LaneKedge
	}
	return newConn(ws, hj.conn, lane, true, node, project, r.TLS.PeerCertificates, o.Options), nil
}
