package sdk_test

import (
	"context"
	"fmt"
	"time"

	"github.com/kedge-io/kedge/sdk"
)

// Greeter is a module: its exported, yaml-tagged fields are its settings.
type Greeter struct {
	Greeting string        `yaml:"greeting" doc:"What to answer."`
	Every    time.Duration `yaml:"every" doc:"How often to greet unasked; at least 1s."`
	host     sdk.Host
}

func (g *Greeter) Start(_ context.Context, h sdk.Host) error { g.host = h; return nil }
func (g *Greeter) Stop(context.Context) error                { return nil }

// Handle answers every message with the greeting.
func (g *Greeter) Handle(ctx context.Context, m sdk.Message) error {
	reply, err := m.Reply(g.host.Name(), g.Greeting)
	if err != nil {
		return err
	}
	return g.host.Reply(ctx, reply)
}

// Validate checks the settings before any module starts; each problem names its key.
func (g *Greeter) Validate() error {
	var c sdk.SettingChecks
	c.Check(g.Greeting != "", "greeting", "must not be empty")
	c.Check(g.Every >= time.Second, "every", "must be at least 1s, got %s", g.Every)
	return c.Err()
}

// A builtin module registers itself from an init function; the host decodes its block under
// `modules:` into the value New returns (its defaults), calls Validate, then Start.
func ExampleRegister() {
	register := func() { // in a module: func init() { sdk.Register(...) }
		sdk.Register(sdk.Info{
			Name:     "greeter",
			Group:    "demo",
			Doc:      "Says hello back.",
			Requires: []string{sdk.DefaultMetaManager},
			New:      func() sdk.Module { return &Greeter{Greeting: "hello", Every: time.Minute} },
		})
	}
	if _, done := sdk.Lookup("greeter"); !done { // a second registration panics (go test -count=2)
		register()
	}
	info, _ := sdk.Lookup("greeter")
	g := info.New().(*Greeter)
	fmt.Println(info.Name, info.Group, g.Greeting, g.Validate())
	g.Every = 10 * time.Millisecond
	fmt.Println(g.Validate())
	// Output:
	// greeter demo hello <nil>
	// every: must be at least 1s, got 10ms
}
