package cloudstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// Messages for a node this replica holds, forwarded by another replica's cloudhub (a sync request —
// a cloudbus call — made on a replica that does not hold the node; see cloudhub's forward.go). The
// forward server already checked the caller is a replica. The message goes to the hub module, which
// queues it for the node (or, if the node left meanwhile, answers node_offline: it never forwards a
// message from this module again), and the edge's answer is written back as one JSON message.

// hubForwardPath is cloudhub.HubForwardPath (cloudstream does not import cloudhub).
const hubForwardPath = "/hub/messages"

// forwardTimeoutHeader is cloudhub.ForwardTimeoutHeader.
const forwardTimeoutHeader = "X-Kedge-Forward-Timeout-Ms"

const maxHubForwardWait = 10 * time.Minute

func (f *forwarder) serveHub(w http.ResponseWriter, r *http.Request, peer string) {
	invalid := func(code int, format string, args ...any) {
		f.relayed.WithLabelValues("invalid").Inc()
		msg := fmt.Sprintf(format, args...)
		f.m.host.Logger().Warn("forwarded hub message refused", "replica", peer, "err", msg)
		http.Error(w, "forward: "+msg, code)
	}
	if r.Method != http.MethodPost {
		invalid(http.StatusMethodNotAllowed, "%s %s: only POST", r.Method, hubForwardPath)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, message.MaxSize+1))
	if err != nil {
		invalid(http.StatusBadRequest, "reading the message: %v", err)
		return
	}
	msg, err := message.Decode(body)
	if err != nil {
		invalid(http.StatusBadRequest, "%v", err)
		return
	}
	if _, _, err := message.ToEdge(msg.Route.Resource); err != nil {
		invalid(http.StatusBadRequest, "message %s is not for a node: %v", msg.Header.ID, err)
		return
	}
	if !msg.Header.Sync || msg.IsReply() {
		invalid(http.StatusBadRequest, "message %s is not a sync request (only those are forwarded)", msg.Header.ID)
		return
	}
	wait := time.Minute
	if v := r.Header.Get(forwardTimeoutHeader); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms <= 0 {
			invalid(http.StatusBadRequest, "%s %q is not a positive number of milliseconds", forwardTimeoutHeader, v)
			return
		}
		wait = min(time.Duration(ms)*time.Millisecond, maxHubForwardWait)
	}
	reply, err := f.m.host.SendSync(r.Context(), f.cfg.HubModule, msg, wait)
	if err != nil {
		f.relayed.WithLabelValues("error").Inc()
		code := http.StatusBadGateway
		if errors.Is(err, sdk.ErrUnknownModule) {
			code = http.StatusServiceUnavailable
		} else if errors.Is(err, context.DeadlineExceeded) {
			code = http.StatusGatewayTimeout
		}
		http.Error(w, fmt.Sprintf("forward: node message %s: %v", msg.Header.ID, err), code)
		return
	}
	out, err := message.Encode(reply)
	if err != nil {
		f.relayed.WithLabelValues("error").Inc()
		http.Error(w, fmt.Sprintf("forward: the answer to %s does not encode: %v", msg.Header.ID, err), http.StatusBadGateway)
		return
	}
	f.relayed.WithLabelValues("ok").Inc()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}
