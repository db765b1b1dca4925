package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func render(t *testing.T, v any, minimal bool) string {
	t.Helper()
	n, err := Node(v, minimal)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Render(n)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRenderedDefaultsDecodeBackToTheSameValues(t *testing.T) {
	tricky := defaults()
	tricky.Node.Name = "true" // must stay a string, so must be quoted
	tricky.Node.Address = "a: b # not a comment"
	tricky.Node.Labels = map[string]string{"node-role.kubernetes.io/edge": "", "n": "10"}
	tricky.Tags = []string{"multi\nline", "- dash", "null"}
	tricky.TLS = &tlsConfig{Cert: "/etc/kedge/cert.pem"}
	tricky.Timeout = 90*time.Second + time.Millisecond
	tricky.Limits.F32 = 0.1 // not exact in binary: must survive as float32
	tricky.Modules = map[string]any{"eventbus": map[string]any{"qos": 1, "list": []any{"a", 2.5, true}}}

	for name, want := range map[string]testConfig{"defaults": defaults(), "tricky values": tricky} {
		t.Run(name, func(t *testing.T) {
			out := render(t, &want, false)
			path := filepath.Join(t.TempDir(), "edgecore.yaml")
			if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
				t.Fatal(err)
			}
			tree, err := LoadFile(path)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			var got testConfig
			if err := Decode(path, tree, "", nil, &got); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v\nfrom:\n%s", got, want, out)
			}
		})
	}
}

type documented struct {
	Short string `yaml:"short" doc:"A short doc."`
	Long  string `yaml:"long" doc:"This documentation is long enough that it has to be wrapped onto more than one comment line to stay readable in an editor."`
	Paras int    `yaml:"paras" doc:"First paragraph.\n\nSecond paragraph."`
	Inner struct {
		Deep time.Duration `yaml:"deep" doc:"Nested docs are indented with their key."`
	} `yaml:"inner" doc:"A section."`
	List  []endpoint `yaml:"list" doc:"Elements do not repeat their field docs."`
	Plain bool       `yaml:"plain"`
}

func TestRenderWritesDocTagsAsWrappedComments(t *testing.T) {
	var v documented
	v.Inner.Deep = 2 * time.Minute
	v.List = []endpoint{{Name: "a"}}
	want := `# A short doc.
short: ""
# This documentation is long enough that it has to be wrapped onto more than one comment line to
# stay readable in an editor.
long: ""
# First paragraph.
#
# Second paragraph.
paras: 0
# A section.
inner:
  # Nested docs are indented with their key.
  deep: 2m0s
# Elements do not repeat their field docs.
list:
  - name: a
    port: 0
plain: false
`
	if got := render(t, v, false); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	for _, line := range strings.Split(want, "\n") {
		if len(line) > 100 {
			t.Errorf("line longer than 100 columns: %q", line)
		}
	}
}

type minimalOnly struct {
	Node   nodeConfig `yaml:"node"`          // kept: holds a cfg:"min" field
	Log    logConfig  `yaml:"log"`           // dropped: nothing in it is minimal
	TLS    tlsConfig  `yaml:"tls" cfg:"min"` // kept whole: tagged itself
	Tags   []string   `yaml:"tags"`
	Absent *tlsConfig `yaml:"absent"`
}

func TestRenderMinimalKeepsOnlyMinFieldsAndTheirParents(t *testing.T) {
	v := minimalOnly{Node: nodeConfig{Name: "edge0", Address: "x"}, TLS: tlsConfig{Cert: "c"}, Tags: []string{"a"}}
	want := `node:
  # Name of the node, unique in the fleet.
  name: edge0
tls:
  cert: c
  key: ""
`
	if got := render(t, &v, true); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	// The full rendering has everything, including the nil pointer as null.
	full := render(t, &v, false)
	for _, s := range []string{"address: x", "log:", "level: debug", "tags:\n  - a", "absent: null"} {
		if !strings.Contains(full, s) {
			t.Errorf("full rendering lacks %q:\n%s", s, full)
		}
	}
}

func TestRenderComposesModuleSections(t *testing.T) {
	// What the module manager does for the modules: section.
	module := MappingNode()
	enable, err := ValueNode(true)
	if err != nil {
		t.Fatal(err)
	}
	AddKey(module, "enable", "Run this module.", enable)
	settings, err := Node(eventbusConfig{QoS: 1, MQTTMode: "internal"}, false)
	if err != nil {
		t.Fatal(err)
	}
	AppendKeys(module, settings)
	modules := MappingNode()
	AddKey(modules, "eventbus", "", module)
	root, err := Node(struct {
		Region  string         `yaml:"region"`
		Modules map[string]any `yaml:"modules"`
	}{Region: "eu", Modules: map[string]any{"x": modules}}, false)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Render(root)
	if err != nil {
		t.Fatal(err)
	}
	want := `region: eu
modules:
  x:
    eventbus:
      # Run this module.
      enable: true
      qos: 1
      mqttMode: internal
`
	if string(got) != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestRenderEmptyCollectionsAsFlow(t *testing.T) {
	var v struct {
		List []string         `yaml:"list"`
		Map  map[string]int   `yaml:"map"`
		Raw  map[string]any   `yaml:"raw"`
		Sub  struct{}         `yaml:"sub"`
		Any  any              `yaml:"any"`
		Ptr  *map[string]bool `yaml:"ptr"`
	}
	want := "list: []\nmap: {}\nraw: {}\nsub: {}\nany: null\nptr: null\n"
	if got := render(t, v, false); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

type ptrMarshaler struct{ v string }

func (p *ptrMarshaler) MarshalText() ([]byte, error) { return []byte("<" + p.v + ">"), nil }

func TestRenderUsesTextMarshalerEvenWithPointerReceiver(t *testing.T) {
	v := struct {
		Level level                   `yaml:"level"`
		P     ptrMarshaler            `yaml:"p"`
		M     map[string]ptrMarshaler `yaml:"m"`
	}{Level: 3, P: ptrMarshaler{"x"}, M: map[string]ptrMarshaler{"k": {"y"}}}
	want := "level: error\np: <x>\nm:\n  k: <y>\n"
	if got := render(t, v, false); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestNodeRejectsNonStruct(t *testing.T) {
	var nilPtr *testConfig
	for _, v := range []any{42, "x", nilPtr, nil, []testConfig{}} {
		if _, err := Node(v, false); err == nil {
			t.Errorf("Node(%T) succeeded", v)
		}
	}
}
