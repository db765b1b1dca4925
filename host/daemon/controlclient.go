package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/kedge-io/kedge/host/modules"
)

// ControlClient talks to a running daemon over its control socket (admin.socket): the same requests
// `module ls` and `module swap` send, for programs and modules on the same machine (pluginmanager).
type ControlClient struct {
	socket string
	hc     *http.Client
}

// NewControlClient returns a client of the control socket at path. Each call is bounded by its
// context and by timeout (0: two minutes, enough for a swap whose new instance starts slowly).
func NewControlClient(path string, timeout time.Duration) *ControlClient {
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	return &ControlClient{socket: path, hc: &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "unix", path)
			if err != nil {
				return nil, fmt.Errorf("control socket %s: %w", path, err)
			}
			return conn, nil
		}}}}
}

// Modules lists the running modules (GET /v1/modules).
func (c *ControlClient) Modules(ctx context.Context) ([]modules.Status, error) {
	var st []modules.Status
	if err := call(ctx, c.hc, http.MethodGet, "/v1/modules", nil, &st); err != nil {
		return nil, err
	}
	return st, nil
}

// Swap hot-swaps module name to runtime (with path and sha256 for process and wasm). An error means
// the old instance keeps running; its text is the daemon's reason.
func (c *ControlClient) Swap(ctx context.Context, name string, runtime modules.Runtime, path, sha256 string) (modules.SwapReport, error) {
	var rep modules.SwapReport
	err := call(ctx, c.hc, http.MethodPost, "/v1/modules/"+name+"/swap", swapRequest{Runtime: runtime, Path: path, SHA256: sha256}, &rep)
	return rep, err
}
