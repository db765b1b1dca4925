// Package wire is the small protocol between cloudstream (cloud) and edgestream (edge).
//
// The edge keeps one control websocket open to the cloud (GET /tunnel, mTLS with its node
// certificate). For every kubelet API request the cloud must carry to the node, it sends a control
// message {"session": "<id>"}; the edge answers by dialling a new connection for that session
// (GET /session/<id>, HTTP/1.1 Upgrade: kedge-stream, same mTLS identity), so every session has a
// TCP connection of its own: a stalled session cannot block another, and closing either end of it
// ends it. On that connection the cloud writes one JSON line (Request); the edge answers with one
// JSON line (Status) and, when it is 200, the raw bytes of the session follow in both directions
// (log text for logs; for exec, the runtime's own HTTP upgrade response and stream protocol).
package wire

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Paths on the tunnel listener.
const (
	TunnelPath     = "/tunnel"
	SessionPrefix  = "/session/"
	UpgradeProto   = "kedge-stream"
	MaxHeaderBytes = 64 << 10
)

// Kinds of session.
const (
	KindLogs = "logs"
	KindExec = "exec"
	// KindAttach attaches to a running container's stdio (CRI Attach); relayed exactly like exec.
	KindAttach = "attach"
	// KindPortForward forwards to ports of a pod's sandbox (CRI PortForward); Container is empty and
	// the ports travel inside the stream protocol; relayed exactly like exec.
	KindPortForward = "portforward"
	// KindStats asks for the node's resource metrics in the kubelet's /metrics/resource text format
	// (no namespace, pod or container; the edge answers 200 and the text, then closes).
	KindStats = "stats"
)

// Control is what the cloud sends over the control websocket.
type Control struct {
	Session string `json:"session"`
}

// Request is the first line the cloud writes on a session connection.
type Request struct {
	Kind      string      `json:"kind"`
	Namespace string      `json:"namespace"`
	Pod       string      `json:"pod"`
	Container string      `json:"container"`
	Query     string      `json:"query,omitempty"`  // the apiserver's raw query (command=..., follow=...)
	Header    http.Header `json:"header,omitempty"` // the upgrade headers of an exec, attach or port-forward request
}

// Status is the edge's answer line: 200 and the stream follows, or an HTTP status and a message.
type Status struct {
	Code  int    `json:"code"`
	Error string `json:"error,omitempty"`
}

// WriteLine writes v as one JSON line.
func WriteLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// ReadLine reads one JSON line of at most MaxHeaderBytes into v.
func ReadLine(r *bufio.Reader, v any) error {
	var line []byte
	for {
		part, isPrefix, err := r.ReadLine()
		if err != nil {
			return err
		}
		line = append(line, part...)
		if len(line) > MaxHeaderBytes {
			return errors.New("stream header line longer than 64KiB")
		}
		if !isPrefix {
			break
		}
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("stream header line: %w", err)
	}
	return nil
}
