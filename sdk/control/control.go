// Package control is the client side of a host's control socket (admin.socket): the requests
// `edgecore module ls` and `module swap` send, for programs and modules on the same machine
// (pluginmanager swaps modules to the plugin versions it installed). The socket's API — these types
// as JSON — is public and versioned with the module contract, so it lives in sdk/ and a module that
// uses it imports nothing from host/; the host's daemon serves it and re-exports these types.
package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Runtime says how a module is loaded.
type Runtime string

const (
	Builtin Runtime = "builtin" // compiled into the host binary
	Process Runtime = "process" // a plugin executable speaking gRPC
	WASM    Runtime = "wasm"    // a sandboxed WebAssembly module
)

// DefaultPrepareTimeout is how long a module's Prepare may take by default (plugins.prepareTimeout): a
// cold compile of a Go WASM guest takes about half a second on a fast machine, tens of seconds on a
// busy 2-core box or a small ARM board, and minutes under emulation. A swap request waits that long
// plus the new instance's start and health check.
const DefaultPrepareTimeout = 10 * time.Minute

// Status describes a running module for `module ls` and /readyz.
type Status struct {
	Name    string  `json:"name"`
	Group   string  `json:"group"`
	Runtime Runtime `json:"runtime"`
	Path    string  `json:"path,omitempty"`
	// Release is what `module ls` shows as VERSION: the host binary's version for builtin, the
	// plugin's own release for process (plugin.WithVersion) and wasm (its manifest), "-" if it has none.
	Release string `json:"release"`
	// SHA256 is "sha256:<first 12 hex digits>" of a pinned plugin file; empty for builtin.
	SHA256 string `json:"sha256,omitempty"`
	// Digest is the whole hex sha256 the plugin file is pinned to; empty for builtin.
	Digest string `json:"digest,omitempty"`
	// Version combines both for older readers: the binary's version for builtin; for plugins
	// "<release> (sha256:<prefix>)", or "sha256:<prefix>" when the plugin reports no release.
	Version string `json:"version"`
	Health  string `json:"health"` // empty when healthy, else why not
	// Link is set for a module holding a link to a remote peer (sdk.LinkChecker): "up", or "down: why".
	// A link that is down does not make the module unhealthy.
	Link    string  `json:"link,omitempty"`
	Handled float64 `json:"handled"`
	Failed  float64 `json:"failed"`
	Queued  int     `json:"queued"`
	Swaps   float64 `json:"swaps"`
	// SwapGaps are the last measured gaps after swaps: how long a ready message waited for an instance.
	SwapGaps []time.Duration `json:"swapGaps,omitempty"`
	Requires []string        `json:"requires,omitempty"`
}

// SwapReport says what a swap did.
type SwapReport struct {
	Module string        `json:"module"`
	From   Runtime       `json:"from"`
	To     Runtime       `json:"to"`
	Paused time.Duration `json:"paused"` // how long delivery was held while instances were switched
	Queued int           `json:"queued"` // messages waiting in the mailbox at the switch, handed to the new instance in order
	// Prepared and Started are how long the new instance's Prepare (a WASM module's compile; 0 for a
	// module without) and Start took, while the old instance kept serving.
	Prepared time.Duration `json:"prepared"`
	Started  time.Duration `json:"started"`
}

// SwapRequest is the body of POST /v1/modules/{name}/swap.
type SwapRequest struct {
	Runtime Runtime `json:"runtime"`
	Path    string  `json:"path,omitempty"`
	SHA256  string  `json:"sha256,omitempty"`
	// HealthTimeout, a Go duration ("30s"), bounds how long this swap waits for the new instance to
	// become healthy; empty: admin.swapHealthTimeout.
	HealthTimeout string `json:"healthTimeout,omitempty"`
}

// Client talks to a running host over its control socket.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client of the control socket at path. Each call is bounded by its context and
// by timeout (0: two minutes, enough for a swap whose new instance starts slowly).
func NewClient(path string, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	return &Client{socket: path, hc: &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "unix", path)
			if err != nil {
				return nil, fmt.Errorf("control socket %s: %w", path, err)
			}
			return conn, nil
		}}}}
}

// HTTPClient is the client's HTTP client (its transport dials the socket).
func (c *Client) HTTPClient() *http.Client { return c.hc }

// Modules lists the running modules (GET /v1/modules).
func (c *Client) Modules(ctx context.Context) ([]Status, error) {
	var st []Status
	if err := Call(ctx, c.hc, http.MethodGet, "/v1/modules", nil, &st); err != nil {
		return nil, err
	}
	return st, nil
}

// Swap hot-swaps module name to runtime (with path and sha256 for process and wasm). An error means
// the old instance keeps running; its text is the host's reason.
func (c *Client) Swap(ctx context.Context, name string, runtime Runtime, path, sha256 string) (SwapReport, error) {
	var rep SwapReport
	err := Call(ctx, c.hc, http.MethodPost, "/v1/modules/"+name+"/swap", SwapRequest{Runtime: runtime, Path: path, SHA256: sha256}, &rep)
	return rep, err
}

// Call does one JSON request on the control socket through c; a non-2xx answer's error text
// becomes the error.
func Call(ctx context.Context, c *http.Client, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://control"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s", e.Error)
		}
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(data)))
	}
	return json.Unmarshal(data, out)
}
