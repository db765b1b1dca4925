// Command echo is the plugin the process runtime's tests drive: what it does is chosen by each
// message's operation, and its failure modes by its settings.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/plugin"
)

// Module's settings.
type Module struct {
	Greeting     string `yaml:"greeting"`
	ForwardTo    string `yaml:"forwardTo"`    // op "forward" sends the message on to this module
	AskTo        string `yaml:"askTo"`        // op "ask" makes a sync request to this module
	CrashAt      int    `yaml:"crashAt"`      // op "forward" with content N == CrashAt exits the process...
	CrashMarker  string `yaml:"crashMarker"`  // ...once: only while this file does not exist
	PanicOnStart bool   `yaml:"panicOnStart"` // Start panics
	Unhealthy    string `yaml:"unhealthy"`    // Healthy returns this error

	host    sdk.Host
	handled prometheus.Counter
}

var info = sdk.Info{
	Name:  "echo",
	Group: "test",
	Doc:   "Test plugin: answers, stores, forwards, crashes on request.",
	New:   func() sdk.Module { return &Module{Greeting: "hello"} },
}

// version is stamped by tests that check the release the host shows (-ldflags "-X main.version=1.2.3").
var version string

func main() { plugin.Serve(info, plugin.WithVersion(version)) }

func (m *Module) Start(ctx context.Context, h sdk.Host) error {
	if m.PanicOnStart {
		panic("told to panic in Start")
	}
	m.host = h
	m.handled = prometheus.NewCounter(prometheus.CounterOpts{Name: "echo_handled_total", Help: "Messages handled."})
	if err := h.Metrics().Register(m.handled); err != nil {
		return err
	}
	h.Logger().Info("echo started", "greeting", m.Greeting, "node", h.NodeName())
	return nil
}

func (m *Module) Stop(context.Context) error {
	m.host.Logger().Info("echo stopping")
	return nil
}

func (m *Module) Healthy(context.Context) error {
	if m.Unhealthy != "" {
		return errors.New(m.Unhealthy)
	}
	return nil
}

func (m *Module) Handle(ctx context.Context, msg sdk.Message) error {
	m.handled.Inc()
	switch msg.Route.Operation {
	case "echo":
		return m.reply(ctx, msg, msg.Content)
	case "ack":
		return m.reply(ctx, msg, len(msg.Content))
	case "greet":
		return m.reply(ctx, msg, m.Greeting)
	case "env":
		var name string
		if err := msg.DecodeContent(&name); err != nil {
			return err
		}
		return m.reply(ctx, msg, os.Getenv(name))
	case "pid":
		return m.reply(ctx, msg, os.Getpid())
	case "log":
		m.host.Logger().Info("hello from the plugin", "n", 42, "took", 1500*time.Millisecond,
			"err", errors.New("just a test"), "nested", map[string]int{"a": 1})
		m.host.Logger().WithGroup("req").Warn("grouped", "id", msg.Header.ID)
		m.host.Logger().Debug("debug record")
		return m.reply(ctx, msg, "logged")
	case "put":
		var obj struct{ Name, Value string }
		if err := msg.DecodeContent(&obj); err != nil {
			return err
		}
		res, err := m.host.Store().Put(ctx, sdk.Object{Key: sdk.Key{Type: "thing", Name: obj.Name}, Value: []byte(strconv.Quote(obj.Value))})
		if err != nil {
			return err
		}
		return m.reply(ctx, msg, res)
	case "get":
		var name string
		if err := msg.DecodeContent(&name); err != nil {
			return err
		}
		obj, err := m.host.Store().Get(ctx, sdk.Key{Type: "thing", Name: name})
		if errors.Is(err, sdk.ErrNotFound) {
			return m.reply(ctx, msg, map[string]bool{"notFound": true})
		}
		if err != nil {
			return err
		}
		return m.reply(ctx, msg, json.RawMessage(obj.Value))
	case "forward":
		var n int
		if err := msg.DecodeContent(&n); err != nil {
			return err
		}
		if n == m.CrashAt && m.CrashMarker != "" {
			if _, err := os.Stat(m.CrashMarker); errors.Is(err, os.ErrNotExist) {
				_ = os.WriteFile(m.CrashMarker, nil, 0o600)
				os.Exit(3)
			}
		}
		fwd, err := sdk.Message{Header: msg.Header, Route: msg.Route}.WithContent(n)
		if err != nil {
			return err
		}
		fwd.Header.Type = strconv.Itoa(os.Getpid()) // which process handled it
		return m.host.Send(ctx, m.ForwardTo, fwd)
	case "ask":
		// A send before the sync request: the receiver must see it first.
		if err := m.host.Send(ctx, m.ForwardTo, message.New(m.host.Name(), "test", "before-ask", "x")); err != nil {
			return err
		}
		answer, err := m.host.SendSync(ctx, m.AskTo, message.New(m.host.Name(), "test", "greet", "x"), 5*time.Second)
		if err != nil {
			return err
		}
		return m.reply(ctx, msg, answer.Content)
	case "send-unknown":
		// Direct (not batched: a context not derived from Handle's) so the error comes back.
		err := m.host.Send(context.Background(), "no-such-module", message.New(m.host.Name(), "test", "x", "x"))
		return m.reply(ctx, msg, map[string]bool{"unknown": errors.Is(err, sdk.ErrUnknownModule)})
	case "fail":
		return errors.New("told to fail")
	case "panic":
		panic("told to panic on a message")
	case "stdout":
		fmt.Println("a line on stdout after the handshake")
		fmt.Fprintln(os.Stderr, "a line on stderr")
		return m.reply(ctx, msg, "printed")
	}
	return fmt.Errorf("unknown operation %q", msg.Route.Operation)
}

func (m *Module) reply(ctx context.Context, req sdk.Message, v any) error {
	r, err := req.Reply(m.host.Name(), v)
	if err != nil {
		return err
	}
	return m.host.Reply(ctx, r)
}
