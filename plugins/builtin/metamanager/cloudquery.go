package metamanager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/message"
)

// askCloud answers a query for one object this node does not hold with the cloud's answer. Handle does
// not wait for it: edgehub may itself be waiting on metamanager, so the question goes out from a
// goroutine bound to the module's lifetime, and the requester's answer (which keeps the request's ID as
// its parent) is sent from there. Offline, edgehub refuses the question at once, so a miss is a quick
// not-found.
func (m *Module) askCloud(msg sdk.Message, res message.Resource) error {
	select {
	case m.asking <- struct{}{}:
	default:
		m.metrics.cloudQueries.WithLabelValues("busy").Inc()
		return fmt.Errorf("query %s: not found on this node, and %d queries already wait for the cloud", msg.Route.Resource, maxCloudQueries)
	}
	m.wg.Go(func() {
		defer func() { <-m.asking }()
		reply := m.fromCloud(m.ctx, msg, res)
		err := m.host.Reply(m.ctx, reply)
		if err != nil && !errors.Is(err, sdk.ErrNoWaiter) && !errors.Is(err, sdk.ErrUnknownModule) {
			m.host.Logger().Warn("answer to a query not delivered", "msg", msg.String(), "err", err)
		}
	})
	return nil
}

// fromCloud asks the cloud for the object, stores what it answers (with its resourceVersion) and
// returns the reply for the requester: the object, or an error naming why there is none.
func (m *Module) fromCloud(ctx context.Context, msg sdk.Message, res message.Resource) sdk.Message {
	fail := func(result string, err error) sdk.Message {
		m.metrics.cloudQueries.WithLabelValues(result).Inc()
		return msg.ErrorReply(Name, fmt.Errorf("query %s: not found on this node; %w", msg.Route.Resource, err))
	}
	q := message.New(Name, "resource", message.OpQuery, res.Edge())
	q.Header.Sync = true
	resp, err := m.host.SendSync(ctx, m.CloudSource, q, m.QueryTimeout)
	switch {
	case errors.Is(err, sdk.ErrUnknownModule):
		return fail("unanswered", fmt.Errorf("no cloud link (%s is not running)", m.CloudSource))
	case err != nil:
		return fail("unanswered", fmt.Errorf("the cloud did not answer within %s: %w", m.QueryTimeout, err))
	case resp.Route.Operation == message.OpError:
		var body struct{ Error string }
		reason := string(resp.Content)
		if json.Unmarshal(resp.Content, &body) == nil && body.Error != "" {
			reason = body.Error
		}
		return fail("error", fmt.Errorf("asked the cloud: %s", reason))
	}
	rv, err := answerVersion(resp)
	if err != nil {
		return fail("error", fmt.Errorf("the cloud's answer: %w", err))
	}
	applied, err := m.store(ctx, sdk.Object{Key: key(res), ResourceVersion: rv, Value: resp.Content})
	if err != nil {
		return fail("error", fmt.Errorf("store the cloud's answer: %w", err))
	}
	content := json.RawMessage(resp.Content)
	if !applied { // a newer version arrived meanwhile: answer with what is stored
		if obj, err := m.host.Store().Get(ctx, key(res)); err == nil {
			content = obj.Value
		}
	}
	m.metrics.cloudQueries.WithLabelValues("found").Inc()
	reply, err := msg.Reply(Name, content)
	if err != nil {
		return fail("error", err)
	}
	return reply
}

// answerVersion is the answer's resourceVersion: its header's, else the object's metadata's.
func answerVersion(resp sdk.Message) (uint64, error) {
	var obj struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(resp.Content, &obj); err != nil {
		return 0, fmt.Errorf("content is not a JSON object: %w", err)
	}
	rv := resp.Header.ResourceVersion
	if rv == "" {
		rv = obj.Metadata.ResourceVersion
	}
	if rv == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(rv, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("resourceVersion %q is not a number", rv)
	}
	return n, nil
}
