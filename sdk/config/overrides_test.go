package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func mustSet(t *testing.T, values ...string) Overrides {
	t.Helper()
	o, err := ParseSet(values)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func unusedMessages(o Overrides) []string {
	var out []string
	for _, e := range o.Unused() {
		out = append(out, e.Error())
	}
	return out
}

func TestOverridesLayerDefaultsFileEnvSet(t *testing.T) {
	tree := parse(t, "node: {name: from-file, address: file-addr}\nregion: file-region\n")
	env := EnvOverrides("KEDGE_", []string{
		"KEDGE_NODE__NAME=from-env",
		"KEDGE_NODE__ADDRESS=env-addr",
		"PATH=/bin",
		"OTHER_NODE__NAME=ignored",
	})
	set := mustSet(t, "node.name=from-set")
	ov := env.Merge(set)
	cfg := defaults()
	if err := Decode("edgecore.yaml", tree, "", &ov, &cfg); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ got, want string }{
		{cfg.Node.Name, "from-set"},    // --set beats env beats file
		{cfg.Node.Address, "env-addr"}, // env beats file
		{cfg.Region, "file-region"},    // file beats defaults
		{cfg.Node.Labels["zone"], "a"}, // defaults survive
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	if u := ov.Unused(); len(u) != 0 {
		t.Errorf("unused: %v", u)
	}
}

func TestOverridesParseTextIntoEveryKind(t *testing.T) {
	ov := mustSet(t,
		"REGION=ap", // inline field, any case
		"log.verbose=true",
		"log.level=error", // TextUnmarshaler
		"limits.int8=-5",
		"limits.port=0x50",
		"limits.uint64=18446744073709551615",
		"limits.f32=1.5",
		"timeout=10s",
		"tags=a, b,c",  // comma-separated list
		"ports=[1, 2]", // YAML flow list
		"endpoints=[{name: x, port: 9}]",
		"peers.north.port=7",           // creates a struct map entry
		"peers.east.port=8",            // updates one field of an existing entry
		"node.labels.rack=r1",          // creates a string map entry
		"tls.cert=c.pem",               // allocates a nil pointer
		"modules={eventbus: {qos: 2}}", // a raw section as a whole
	)
	cfg := defaults()
	if err := Decode("edgecore.yaml", nil, "", &ov, &cfg); err != nil {
		t.Fatal(err)
	}
	want := defaults()
	want.Region = "ap"
	want.Log = logConfig{Level: 3, Verbose: true}
	want.Limits.Int8, want.Limits.Port, want.Limits.Uint64, want.Limits.F32 = -5, 80, 1<<64-1, 1.5
	want.Timeout = 10 * time.Second
	want.Tags = []string{"a", "b", "c"}
	want.Ports = []int{1, 2}
	want.Endpoints = []endpoint{{Name: "x", Port: 9}}
	want.Peers = map[string]endpoint{"east": {Name: "e", Port: 8}, "north": {Port: 7}}
	want.Node.Labels = map[string]string{"zone": "a", "rack": "r1"}
	want.TLS = &tlsConfig{Cert: "c.pem"}
	want.Modules = map[string]any{"eventbus": map[string]any{"qos": 2}}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}
	if u := unusedMessages(ov); len(u) != 0 {
		t.Errorf("unused: %v", u)
	}
}

func TestOverridesMatchKeysCaseInsensitively(t *testing.T) {
	ov := EnvOverrides("KEDGE", []string{ // prefix without "_" gets one
		"KEDGE_MODULES__EVENTBUS__MQTTMODE=external",
		"KEDGE_MODULES__EVENTBUS__QOS=2",
		"KEDGE_NODE__LABELS__ZONE=b", // replaces "zone", does not add "ZONE"
	})
	cfg := defaults()
	if err := Decode("edgecore.yaml", nil, "", &ov, &cfg); err != nil {
		t.Fatal(err)
	}
	eb := eventbusConfig{}
	if err := Decode("edgecore.yaml", nil, "modules.eventbus", &ov, &eb); err != nil {
		t.Fatal(err)
	}
	if eb != (eventbusConfig{QoS: 2, MQTTMode: "external"}) {
		t.Errorf("eventbus = %+v", eb)
	}
	if !reflect.DeepEqual(cfg.Node.Labels, map[string]string{"zone": "b"}) {
		t.Errorf("labels = %v", cfg.Node.Labels)
	}
	if u := unusedMessages(ov); len(u) != 0 {
		t.Errorf("unused: %v", u)
	}
}

func TestOverridesInsideRawSectionWaitForTheSubtreeDecode(t *testing.T) {
	tree := parse(t, "modules: {eventbus: {qos: 1}}")
	ov := mustSet(t, "modules.eventbus.qos=2", "modules.eventbus.nope=1")
	cfg := defaults()
	if err := Decode("edgecore.yaml", tree, "", &ov, &cfg); err != nil {
		t.Fatal(err)
	}
	// The parent neither applied them to the raw copy nor claimed them.
	if q := cfg.Modules["eventbus"].(map[string]any)["qos"]; q != 1 {
		t.Errorf("raw qos = %v, want 1 (untouched)", q)
	}
	if u := unusedMessages(ov); len(u) != 2 {
		t.Errorf("after parent decode, unused = %v, want both", u)
	}
	eb := eventbusConfig{}
	if err := Decode("edgecore.yaml", tree, "modules.eventbus", &ov, &eb); err != nil {
		t.Fatal(err)
	}
	if eb.QoS != 2 {
		t.Errorf("qos = %d, want 2 from --set", eb.QoS)
	}
	want := []string{"flag --set modules.eventbus.nope=1: unknown key modules.eventbus.nope (known keys under modules.eventbus: qos, mqttMode)"}
	if u := unusedMessages(ov); !reflect.DeepEqual(u, want) {
		t.Errorf("unused = %q, want %q", u, want)
	}
}

func TestUnusedReportsUnknownOverrideKeys(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ov      Overrides
		want    string
		changed bool
	}{
		{"env typo under a struct", EnvOverrides("KEDGE_", []string{"KEDGE_NODE__NAMEX=e"}),
			"environment KEDGE_NODE__NAMEX: unknown key node.namex (known keys under node: name, labels, address)", false},
		{"env single underscore", EnvOverrides("KEDGE_", []string{"KEDGE_NODE_NAME=e"}),
			"environment KEDGE_NODE_NAME: unknown key node_name (known keys: region, node, log, limits, timeout, tags, ports, endpoints, peers, tls, modules; separate levels with a double underscore, e.g. KEDGE_NODE__NAME)", false},
		{"set under a scalar", mustSet(t, "node.name.first=e"),
			"flag --set node.name.first=e: unknown key node.name.first (node.name is a single value, not a mapping)", false},
		{"set inside a list", mustSet(t, "tags.0=e"),
			"flag --set tags.0=e: unknown key tags.0 (tags is a list: set it whole, e.g. tags=[a, b])", false},
		{"typo below a nil pointer does not allocate it", mustSet(t, "tls.crt=x"),
			"flag --set tls.crt=x: unknown key tls.crt (known keys under tls: cert, key)", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := defaults()
			if err := Decode("edgecore.yaml", nil, "", &tc.ov, &cfg); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg, defaults()) {
				t.Errorf("config changed: %+v", cfg)
			}
			if u := unusedMessages(tc.ov); !reflect.DeepEqual(u, []string{tc.want}) {
				t.Errorf("got  %q\nwant %q", u, tc.want)
			}
		})
	}
}

func TestEnvVariablesOfOtherProgramsSharingThePrefixAreLeftAlone(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want []string
	}{
		{"test harness variables", []string{"KEDGE_TEST_TIMEOUT_SCALE=3", "KEDGE_KUBEEDGE_DIR=/opt/ke"}, nil},
		{"a first word that is a top-level key is still a typo",
			[]string{"KEDGE_TEST_TIMEOUT_SCALE=3", "KEDGE_LOG_LEVEL=debug"},
			[]string{"environment KEDGE_LOG_LEVEL: unknown key log_level (known keys: region, node, log, limits, timeout, tags, ports, endpoints, peers, tls, modules; separate levels with a double underscore, e.g. KEDGE_NODE__NAME)"}},
		{"two levels are always a setting", []string{"KEDGE_TEST__SCALE=3"},
			[]string{"environment KEDGE_TEST__SCALE: unknown key test.scale (known keys: region, node, log, limits, timeout, tags, ports, endpoints, peers, tls, modules)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ov := EnvOverrides("KEDGE_", tc.env)
			cfg := defaults()
			if err := Decode("edgecore.yaml", nil, "", &ov, &cfg); err != nil {
				t.Fatal(err)
			}
			if u := unusedMessages(ov); !reflect.DeepEqual(u, tc.want) {
				t.Errorf("got  %q\nwant %q", u, tc.want)
			}
		})
	}
}

func TestUnusedHintsDoubleUnderscoreWhenNoDecodeLookedAtTheKey(t *testing.T) {
	ov := EnvOverrides("KEDGE_", []string{"KEDGE_NODE_NAME=e"})
	want := "environment KEDGE_NODE_NAME: unknown key node_name (separate levels with a double underscore, e.g. KEDGE_NODE__NAME)"
	if u := unusedMessages(ov); !reflect.DeepEqual(u, []string{want}) {
		t.Errorf("got %q", u)
	}
}

func TestOverrideValueErrorsNameTheirSource(t *testing.T) {
	for _, tc := range []struct {
		name string
		ov   Overrides
		want string
	}{
		{"env port out of range", EnvOverrides("KEDGE_", []string{"KEDGE_LIMITS__PORT=70000"}),
			`environment KEDGE_LIMITS__PORT: limits.port: expected an integer between 0 and 65535, got "70000"`},
		{"set bool", mustSet(t, "log.verbose=maybe"),
			`flag --set log.verbose=maybe: log.verbose: expected a boolean (true or false), got "maybe"`},
		{"set duration without unit", mustSet(t, "timeout=10"),
			`flag --set timeout=10: timeout: expected a duration like "10s", got "10"`},
		{"set float", mustSet(t, "limits.f64=x"),
			`flag --set limits.f64=x: limits.f64: expected a number, got "x"`},
		{"set int list element", mustSet(t, "ports=1,x"),
			`flag --set ports=1,x: ports[1]: expected an integer, got "x"`},
		{"set bad flow YAML", mustSet(t, "endpoints=[{name: x"),
			`flag --set endpoints=[{name: x: endpoints: expected YAML such as [a, b] or {key: value}, got "[{name: x" (line 1: did not find expected ',' or '}')`},
		{"set unknown key inside YAML value", mustSet(t, "endpoints=[{nam: x}]"),
			`flag --set endpoints=[{nam: x}]: endpoints[0].nam: unknown key (known keys: name, port)`},
		{"set text unmarshaler", mustSet(t, "log.level=loud"),
			`flag --set log.level=loud: log.level: invalid value "loud": unknown level "loud" (want debug, info, warn or error)`},
		{"set map entry canonical path", mustSet(t, "PEERS.East.PORT=-1"),
			`flag --set PEERS.East.PORT=-1: peers.east.port: expected an integer between 0 and 65535, got "-1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := defaults()
			err := Decode("edgecore.yaml", nil, "", &tc.ov, &cfg)
			var ce *Error
			if !errors.As(err, &ce) || err.Error() != tc.want {
				t.Errorf("got  %v\nwant %s", err, tc.want)
			}
		})
	}
}

func TestParseSetRejectsMalformedValues(t *testing.T) {
	for _, raw := range []string{"novalue", "=x", "a..b=1", ".a=1", "a b=1"} {
		_, err := ParseSet([]string{"ok=1", raw})
		want := "flag --set " + raw + ": expected key=value with a dotted key, e.g. --set node.name=edge1"
		if err == nil || err.Error() != want {
			t.Errorf("ParseSet(%q) = %v, want %s", raw, err, want)
		}
	}
}

func TestParseSetKeepsEverythingAfterTheFirstEquals(t *testing.T) {
	ov := mustSet(t, "node.labels.selector=a=b")
	cfg := defaults()
	if err := Decode("x.yaml", nil, "", &ov, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Node.Labels["selector"] != "a=b" {
		t.Errorf("labels = %v", cfg.Node.Labels)
	}
}

func TestMergedOverridesShareUsedMarks(t *testing.T) {
	env := EnvOverrides("KEDGE_", []string{"KEDGE_NODE__NAME=a"})
	set := mustSet(t, "bogus=1")
	all := env.Merge(set)
	cfg := defaults()
	if err := Decode("x.yaml", nil, "", &all, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(env.Unused()) != 0 || len(set.Unused()) != 1 || len(all.Unused()) != 1 {
		t.Errorf("env=%v set=%v all=%v", env.Unused(), set.Unused(), all.Unused())
	}
}

func TestApplyRawWritesOverridesIntoARawSectionTyped(t *testing.T) {
	ov := EnvOverrides("KEDGE_", []string{"KEDGE_MODULES__ECHO__PORT=502", "KEDGE_MODULES__ECHO__DEBUG=true", "KEDGE_MODULES__OTHER__X=1"})
	set, err := ParseSet([]string{"modules.echo.Greeting=hi", "modules.echo.limits.timeout=10s"})
	if err != nil {
		t.Fatal(err)
	}
	ov = ov.Merge(set)
	tree := map[string]any{"greeting": "hello", "port": 1}
	ov.ApplyRaw("modules.echo", tree)
	want := map[string]any{"greeting": "hi", "port": 502, "debug": true, "limits": map[string]any{"timeout": "10s"}}
	if !reflect.DeepEqual(tree, want) {
		t.Fatalf("tree = %#v\nwant %#v", tree, want)
	}
	if u := ov.Unused(); len(u) != 1 || !strings.Contains(u[0].Error(), "modules.other.x") {
		t.Fatalf("Unused = %v, want only the override for another module", u)
	}
}

func TestAttributeNamesTheOverrideThatGaveAKeyItsValue(t *testing.T) {
	ov := EnvOverrides("KEDGE_", []string{"KEDGE_LIMITS__PORT=80"}).Merge(mustSet(t, "timeout=3s"))
	cfg := defaults()
	if err := Decode("edgecore.yaml", nil, "", &ov, &cfg); err != nil {
		t.Fatal(err)
	}
	fromEnv := &Error{Source: "edgecore.yaml", Key: "limits.port", Problem: "must be above 1024"}
	fromSet := &Error{Source: "edgecore.yaml", Key: "timeout", Problem: "must be at least 5s"}
	fromFile := &Error{Source: "edgecore.yaml", Key: "log.level", Problem: "not here"}
	ov.Attribute(errors.Join(fromEnv, fmt.Errorf("wrapped: %w", fromSet), fromFile))
	for _, tc := range []struct {
		err  *Error
		want string
	}{
		{fromEnv, "environment KEDGE_LIMITS__PORT: limits.port: must be above 1024"},
		{fromSet, "flag --set timeout=3s: timeout: must be at least 5s"},
		{fromFile, "edgecore.yaml: log.level: not here"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("got  %s\nwant %s", got, tc.want)
		}
	}
}

func TestWithoutDropsOnlyTheNamedKeysWhateverTheirCase(t *testing.T) {
	type mod struct {
		Runtime  string `yaml:"runtime"`
		Interval string `yaml:"interval"`
	}
	tests := []struct {
		name    string
		without []string
		want    mod
	}{
		{"nothing dropped", nil, mod{Runtime: "process", Interval: "1s"}},
		{"runtime dropped, interval kept", []string{"modules.ns.runtime"}, mod{Runtime: "builtin", Interval: "1s"}},
		{"keys compared without case", []string{"MODULES.NS.RUNTIME", "modules.ns.INTERVAL"}, mod{Runtime: "builtin", Interval: "10s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := EnvOverrides("KEDGE_", []string{"KEDGE_MODULES__NS__RUNTIME=process", "KEDGE_MODULES__NS__INTERVAL=1s"})
			ov := env.Without(tt.without...)
			got := mod{Runtime: "builtin", Interval: "10s"}
			if err := Decode("test", map[string]any{}, "modules.ns", &ov, &got); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("decoded %+v, want %+v", got, tt.want)
			}
		})
	}
}
