package daemon

import (
	"context"
	"net/http"
	"time"

	"github.com/kedge-io/kedge/sdk/control"
)

// ControlClient talks to a running daemon over its control socket (admin.socket); it is
// sdk/control's client, which modules (pluginmanager) use without importing the host.
type ControlClient = control.Client

// NewControlClient returns a client of the control socket at path (see control.NewClient).
func NewControlClient(path string, timeout time.Duration) *ControlClient {
	return control.NewClient(path, timeout)
}

// swapRequest is the body of POST /v1/modules/{name}/swap.
type swapRequest = control.SwapRequest

// call does one JSON request on the control socket; a non-2xx answer's error text becomes the error.
func call(ctx context.Context, c *http.Client, method, path string, body, out any) error {
	return control.Call(ctx, c, method, path, body, out)
}
