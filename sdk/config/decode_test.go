package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// parse loads YAML text the way the binaries do: through a file and LoadFile.
func parse(t *testing.T, src string) map[string]any {
	t.Helper()
	path := filepath.Join(t.TempDir(), "edgecore.yaml")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	tree, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func TestDecodeSetsEveryKind(t *testing.T) {
	tree := parse(t, `
region: us
node:
  name: edge1
  labels: {zone: b, "node-role.kubernetes.io/edge": ""}
  address: 10.0.0.2
log: {level: warn, verbose: true}
limits:
  int8: -128
  int: 42
  int64: -9223372036854775808
  uint8: 255
  port: 65535
  uint64: 18446744073709551615
  f32: 1.25
  f64: 3      # an integer is a valid number
timeout: 1m30s
tags: [a, b]
ports: [1, 0x10, 3.0]
endpoints: [{name: n1, port: 10}, {name: n2}]
peers:
  west: {name: w, port: 3}
  east: {port: 4}
tls: {cert: c.pem}
modules:
  eventbus: {qos: 2, nested: {deep: [1, two]}}
`)
	got := defaults()
	if err := Decode("edgecore.yaml", tree, "", nil, &got); err != nil {
		t.Fatal(err)
	}
	want := testConfig{
		Common: Common{Region: "us"},
		Node: nodeConfig{Name: "edge1", Address: "10.0.0.2",
			Labels: map[string]string{"zone": "b", "node-role.kubernetes.io/edge": ""}},
		Log: logConfig{Level: 2, Verbose: true},
		Limits: limits{Int8: -128, Int: 42, Int64: -1 << 63, Uint8: 255, Port: 65535,
			Uint64: 1<<64 - 1, F32: 1.25, F64: 3},
		Timeout:   90 * time.Second,
		Tags:      []string{"a", "b"},
		Ports:     []int{1, 16, 3},
		Endpoints: []endpoint{{Name: "n1", Port: 10}, {Name: "n2"}},
		// Map entries start from the default entry, so east keeps its name.
		Peers: map[string]endpoint{"west": {Name: "w", Port: 3}, "east": {Name: "e", Port: 4}},
		TLS:   &tlsConfig{Cert: "c.pem"},
		Modules: map[string]any{"eventbus": map[string]any{"qos": 2,
			"nested": map[string]any{"deep": []any{1, "two"}}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestDecodeKeepsDefaultsForAbsentKeysAndNulls(t *testing.T) {
	for name, src := range map[string]string{
		"empty file":      "",
		"empty sections":  "node: {}\nlog: {}\nlimits: {}\n",
		"explicit nulls":  "node: {name: null, labels: ~}\nlog:\ntimeout: null\ntags: ~\ntls: null\nmodules: ~\n",
		"null in raw map": "modules: {eventbus: null}\n",
	} {
		t.Run(name, func(t *testing.T) {
			got := defaults()
			if err := Decode("edgecore.yaml", parse(t, src), "", nil, &got); err != nil {
				t.Fatal(err)
			}
			if want := defaults(); !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestDecodeDoesNotMutateSharedDefaultMaps(t *testing.T) {
	shared := map[string]string{"zone": "a"}
	cfg := testConfig{Node: nodeConfig{Labels: shared}}
	if err := Decode("edgecore.yaml", parse(t, "node: {labels: {zone: b, rack: r1}}"), "", nil, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(shared) != 1 || shared["zone"] != "a" {
		t.Errorf("default map was modified: %v", shared)
	}
	if cfg.Node.Labels["zone"] != "b" || cfg.Node.Labels["rack"] != "r1" {
		t.Errorf("labels = %v", cfg.Node.Labels)
	}
}

func TestDecodeReportsMistakesAsOneLineErrors(t *testing.T) {
	long := strings.Repeat("x", 100)
	for _, tc := range []struct{ name, src, want string }{
		{"unknown key lists known keys", "node: {nmae: x}",
			`edgecore.yaml: node.nmae: unknown key (known keys: name, labels, address)`},
		{"unknown top-level key includes inlined keys", "nodes: {}",
			`edgecore.yaml: nodes: unknown key (known keys: region, node, log, limits, timeout, tags, ports, endpoints, peers, tls, modules)`},
		{"untagged and dash fields are not keys", "ignored: x",
			`edgecore.yaml: ignored: unknown key (known keys: region, node, log, limits, timeout, tags, ports, endpoints, peers, tls, modules)`},
		{"wrong case suggests the key", "node: {Name: x}",
			`edgecore.yaml: node.Name: unknown key, did you mean "name"? (keys are case-sensitive)`},
		{"string got integer", "node: {name: 5}",
			`edgecore.yaml: node.name: expected a string, got integer 5 (quote it to make it a string)`},
		{"string got timestamp", "node: {name: 2024-01-02}",
			`edgecore.yaml: node.name: expected a string, got timestamp 2024-01-02T00:00:00Z (quote it to make it a string)`},
		{"string got mapping", "node: {name: {a: b}}",
			`edgecore.yaml: node.name: expected a string, got a mapping`},
		{"bool got string", "log: {verbose: yes}",
			`edgecore.yaml: log.verbose: expected a boolean (true or false), got string "yes"`},
		{"int got string", "limits: {int: abc}",
			`edgecore.yaml: limits.int: expected an integer, got string "abc"`},
		{"int got fraction", "limits: {int: 1.5}",
			`edgecore.yaml: limits.int: expected an integer, got number 1.5`},
		{"int got infinity", "limits: {int: .inf}",
			`edgecore.yaml: limits.int: expected an integer, got number +Inf`},
		{"int8 too large", "limits: {int8: 300}",
			`edgecore.yaml: limits.int8: expected an integer between -128 and 127, got integer 300`},
		{"uint16 port too large", "limits: {port: 70000}",
			`edgecore.yaml: limits.port: expected an integer between 0 and 65535, got integer 70000`},
		{"uint8 negative", "limits: {uint8: -1}",
			`edgecore.yaml: limits.uint8: expected an integer between 0 and 255, got integer -1`},
		{"uint64 negative", "limits: {uint64: -1}",
			`edgecore.yaml: limits.uint64: expected an integer between 0 and 18446744073709551615, got integer -1`},
		{"int64 beyond range", "limits: {int64: 99999999999999999999}",
			`edgecore.yaml: limits.int64: expected an integer between -9223372036854775808 and 9223372036854775807, got number 1e+20`},
		{"float got string", "limits: {f64: fast}",
			`edgecore.yaml: limits.f64: expected a number, got string "fast"`},
		{"float32 overflow", "limits: {f32: 1e40}",
			`edgecore.yaml: limits.f32: expected a number that fits in float32, got number 1e+40`},
		{"duration as bare integer", "timeout: 10",
			`edgecore.yaml: timeout: expected a duration like "10s", got integer 10`},
		{"duration unparsable", "timeout: 10 parsecs",
			`edgecore.yaml: timeout: expected a duration like "10s", got string "10 parsecs"`},
		{"text unmarshaler rejects value", "log: {level: loud}",
			`edgecore.yaml: log.level: invalid value "loud": unknown level "loud" (want debug, info, warn or error)`},
		{"text unmarshaler got list", "log: {level: [a]}",
			`edgecore.yaml: log.level: expected a string, got a list`},
		{"list got scalar", "tags: a",
			`edgecore.yaml: tags: expected a list, got string "a"`},
		{"list element wrong type", "tags: [a, 2]",
			`edgecore.yaml: tags[1]: expected a string, got integer 2 (quote it to make it a string)`},
		{"int list element wrong type", "ports: [1, 2, x]",
			`edgecore.yaml: ports[2]: expected an integer, got string "x"`},
		{"struct list element unknown key", "endpoints: [{name: a}, {nmae: b}]",
			`edgecore.yaml: endpoints[1].nmae: unknown key (known keys: name, port)`},
		{"struct list element field", "endpoints: [{}, {}, {name: [x]}]",
			`edgecore.yaml: endpoints[2].name: expected a string, got a list`},
		{"string map got list", "node: {labels: [a]}",
			`edgecore.yaml: node.labels: expected a mapping, got a list`},
		{"string map entry", "node: {labels: {zone: 1}}",
			`edgecore.yaml: node.labels.zone: expected a string, got integer 1 (quote it to make it a string)`},
		{"string map entry with dotted key", `node: {labels: {"a.b/c": [x]}}`,
			`edgecore.yaml: node.labels["a.b/c"]: expected a string, got a list`},
		{"struct map entry", "peers: {west: {port: x}}",
			`edgecore.yaml: peers.west.port: expected an integer, got string "x"`},
		{"pointer struct field", "tls: {cert: [a]}",
			`edgecore.yaml: tls.cert: expected a string, got a list`},
		{"struct got scalar", "node: x",
			`edgecore.yaml: node: expected a mapping, got string "x"`},
		{"raw section got list", "modules: [a]",
			`edgecore.yaml: modules: expected a mapping, got a list`},
		{"long values are truncated", "node: {name: [" + long + "]}",
			`edgecore.yaml: node.name: expected a string, got a list`},
		{"long strings are truncated", "limits: {int: " + long + "}",
			`edgecore.yaml: limits.int: expected an integer, got string "` + strings.Repeat("x", 37) + `"...`},
		{"newlines are escaped", "limits: {int: \"a\\nb\"}",
			`edgecore.yaml: limits.int: expected an integer, got string "a\nb"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := defaults()
			err := Decode("edgecore.yaml", parse(t, tc.src), "", nil, &cfg)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("got %v (%T), want *Error", err, err)
			}
			if err.Error() != tc.want {
				t.Errorf("got  %s\nwant %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("message spans lines: %q", err)
			}
		})
	}
}

func TestErrorOmitsEmptyKey(t *testing.T) {
	for _, tc := range []struct {
		err  Error
		want string
	}{
		{Error{"a.yaml", "node.name", "bad"}, "a.yaml: node.name: bad"},
		{Error{"environment KEDGE_X", "", "unknown key x"}, "environment KEDGE_X: unknown key x"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

func TestDecodeRejectsNonPointerAsProgrammingError(t *testing.T) {
	var cfg testConfig
	var nilPtr *testConfig
	for _, dst := range []any{cfg, nilPtr, nil} {
		err := Decode("x.yaml", nil, "", nil, dst)
		var ce *Error
		if err == nil || errors.As(err, &ce) {
			t.Errorf("Decode(%T) = %v, want a plain (non-*Error) error", dst, err)
		}
	}
}

func TestDecodeReportsUnsupportedFieldTypeAsProgrammingError(t *testing.T) {
	var cfg struct {
		C chan int `yaml:"c"`
	}
	err := Decode("x.yaml", map[string]any{"c": 1}, "", nil, &cfg)
	var ce *Error
	if err == nil || errors.As(err, &ce) {
		t.Errorf("got %v, want a plain error", err)
	}
}

func TestDecodeAtSubtreeUsesFullKeyPathsAndRawSectionStaysForLater(t *testing.T) {
	tree := parse(t, "node: {name: e}\nmodules:\n  eventbus: {qos: abc}\n  other: {x: 1}\n")
	cfg := defaults()
	// The host decodes its sections; modules stays raw even though qos is wrong for eventbus.
	if err := Decode("edgecore.yaml", tree, "", nil, &cfg); err != nil {
		t.Fatalf("root decode: %v", err)
	}
	want := map[string]any{"eventbus": map[string]any{"qos": "abc"}, "other": map[string]any{"x": 1}}
	if !reflect.DeepEqual(cfg.Modules, want) {
		t.Errorf("raw modules = %#v", cfg.Modules)
	}
	eb := eventbusConfig{QoS: 1}
	err := Decode("edgecore.yaml", tree, "modules.eventbus", nil, &eb)
	if err == nil || err.Error() != `edgecore.yaml: modules.eventbus.qos: expected an integer, got string "abc"` {
		t.Errorf("subtree decode: %v", err)
	}
	// The raw copy is not aliased to the tree: changing it leaves the next Decode unaffected.
	cfg.Modules["eventbus"].(map[string]any)["qos"] = 7
	if err := Decode("edgecore.yaml", parse(t, "modules: {eventbus: {qos: 2}}"), "modules.eventbus", nil, &eb); err != nil || eb.QoS != 2 {
		t.Errorf("second decode: qos=%d err=%v", eb.QoS, err)
	}
}

func TestDecodeAtSubtree(t *testing.T) {
	for _, tc := range []struct {
		name, src, at string
		want          eventbusConfig
		err           string
	}{
		{"absent subtree keeps defaults", "node: {}", "modules.eventbus", eventbusConfig{QoS: 1}, ""},
		{"absent parent keeps defaults", "", "modules.eventbus", eventbusConfig{QoS: 1}, ""},
		{"present subtree decodes", "modules: {eventbus: {mqttMode: external}}", "modules.eventbus",
			eventbusConfig{QoS: 1, MQTTMode: "external"}, ""},
		{"a lower-cased key (as an environment override gives a plugin's settings) finds its field", "modules: {eventbus: {mqttmode: external}}", "modules.eventbus",
			eventbusConfig{QoS: 1, MQTTMode: "external"}, ""},
		{"a key in another wrong case is still refused", "modules: {eventbus: {MqttMode: external}}", "modules.eventbus",
			eventbusConfig{}, `edgecore.yaml: modules.eventbus.MqttMode: unknown key, did you mean "mqttMode"? (keys are case-sensitive)`},
		{"unknown key in subtree names full path", "modules: {eventbus: {qoss: 1}}", "modules.eventbus",
			eventbusConfig{}, `edgecore.yaml: modules.eventbus.qoss: unknown key (known keys: qos, mqttMode)`},
		{"parent not a mapping", "modules: 5", "modules.eventbus",
			eventbusConfig{}, `edgecore.yaml: modules: expected a mapping, got integer 5`},
		{"subtree not a mapping", "modules: {eventbus: on}", "modules.eventbus",
			eventbusConfig{}, `edgecore.yaml: modules.eventbus: expected a mapping, got string "on"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := eventbusConfig{QoS: 1}
			err := Decode("edgecore.yaml", parse(t, tc.src), tc.at, nil, &got)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("got %v, want %s", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestDecodeAcceptsTreesWithNonStringKeys(t *testing.T) {
	// yaml.v3 yields map[any]any for mappings with non-string keys; callers may pass such trees.
	tree := map[string]any{
		"node":    map[any]any{"name": "n", "labels": map[any]any{1: "one"}},
		"modules": map[any]any{2: map[any]any{true: "x"}},
	}
	cfg := defaults()
	if err := Decode("x.yaml", tree, "", nil, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Node.Name != "n" || cfg.Node.Labels["1"] != "one" {
		t.Errorf("node = %+v", cfg.Node)
	}
	if !reflect.DeepEqual(cfg.Modules["2"], map[string]any{"true": "x"}) {
		t.Errorf("modules = %#v (want mappings normalised to map[string]any)", cfg.Modules)
	}
}

type base struct {
	ID   string `yaml:"id"`
	Name string `yaml:"name"` // hidden by outer.Name
}

type Extra struct {
	Zone string `yaml:"zone"`
}

type settings struct {
	Level int `yaml:"level"`
}

type outer struct {
	base     `yaml:",inline"`
	*Extra   `yaml:",inline"`
	Name     string `yaml:"name"`
	Settings any    `yaml:",inline"`
}

func TestDecodeFlattensInlineFields(t *testing.T) {
	s := &settings{Level: 1}
	got := outer{Settings: s}
	tree := map[string]any{"id": "i", "name": "outer", "zone": "z", "level": 3}
	if err := Decode("x.yaml", tree, "", nil, &got); err != nil {
		t.Fatal(err)
	}
	if got.ID != "i" || got.Name != "outer" || got.base.Name != "" || got.Extra == nil || got.Zone != "z" || s.Level != 3 {
		t.Errorf("got %+v extra=%+v settings=%+v", got, got.Extra, s)
	}
	err := Decode("x.yaml", map[string]any{"nope": 1}, "", nil, &outer{Settings: s})
	if want := "x.yaml: nope: unknown key (known keys: id, zone, name, level)"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

func TestDecodeRawSectionMergesIntoDefaultsAndKeepsNullEntries(t *testing.T) {
	cfg := testConfig{Modules: map[string]any{
		"eventbus": map[string]any{"qos": 1, "mqttMode": "internal"},
		"edged":    map[string]any{"enable": true},
	}}
	tree := parse(t, "modules: {eventbus: {qos: 2}, metamanager: null}")
	if err := Decode("edgecore.yaml", tree, "", nil, &cfg); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"eventbus":    map[string]any{"qos": 2, "mqttMode": "internal"}, // merged key by key
		"edged":       map[string]any{"enable": true},                   // default kept
		"metamanager": nil,                                              // listed, nothing set
	}
	if !reflect.DeepEqual(cfg.Modules, want) {
		t.Errorf("got %#v", cfg.Modules)
	}
}
