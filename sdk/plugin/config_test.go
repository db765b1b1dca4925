package plugin

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kedge-io/kedge/sdk"
	"github.com/kedge-io/kedge/sdk/config"
)

type settings struct {
	Name   string            `yaml:"name"`
	Count  int               `yaml:"count"`
	Big    uint64            `yaml:"big"`
	Ratio  float64           `yaml:"ratio"`
	Every  time.Duration     `yaml:"every"`
	On     bool              `yaml:"on"`
	Tags   []string          `yaml:"tags"`
	Labels map[string]string `yaml:"labels"`
	Nested struct {
		Port int `yaml:"port"`
	} `yaml:"nested"`
}

func TestDecodeConfigReadsSettingsLikeTheHost(t *testing.T) {
	var s settings
	s.Name, s.Count = "default", 3
	raw := `{"count": 7, "big": 18446744073709551615, "ratio": 2, "every": "1m30s", "on": true,
		"tags": ["a", "b"], "labels": {"zone": "x"}, "nested": {"port": 8080}}`
	if err := decodeConfig("demo", []byte(raw), &s); err != nil {
		t.Fatal(err)
	}
	want := settings{Name: "default", Count: 7, Big: 1<<64 - 1, Ratio: 2, Every: 90 * time.Second, On: true,
		Tags: []string{"a", "b"}, Labels: map[string]string{"zone": "x"}}
	want.Nested.Port = 8080
	if s.Name != want.Name || s.Count != want.Count || s.Big != want.Big || s.Ratio != want.Ratio || s.Every != want.Every ||
		!s.On || strings.Join(s.Tags, ",") != "a,b" || s.Labels["zone"] != "x" || s.Nested.Port != 8080 {
		t.Errorf("decoded %+v\nwant    %+v", s, want)
	}
}

func TestDecodeConfigErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{`{"count": "many"}`, `config: modules.demo.count: expected an integer, got string "many"`},
		{`{"count": 1.5}`, `config: modules.demo.count: expected an integer, got number 1.5`},
		{`{"count": 99999999999999999999}`, `config: modules.demo.count: expected an integer`},
		{`{"nmae": "x"}`, `config: modules.demo.nmae: unknown key`},
		{`{"nested": {"prot": 1}}`, `config: modules.demo.nested.prot: unknown key`},
		{`{"every": 10}`, `config: modules.demo.every: expected a duration like "10s", got integer 10`},
		{`[1, 2]`, `config: modules.demo: expected a mapping of settings, got JSON []interface {}`},
		{`{"count": 1} {}`, `config: modules.demo: settings are not one JSON object: trailing data`},
		{`{"count":`, `config: modules.demo: settings are not valid JSON`},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			var s settings
			err := decodeConfig("demo", []byte(tc.raw), &s)
			var ce *config.Error
			if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("got %v (%T)\nwant a *config.Error starting %q", err, err, tc.want)
			}
		})
	}
}

func TestDecodeConfigKeepsDefaultsWithoutSettings(t *testing.T) {
	for _, raw := range []string{"", "null", "{}", "  "} {
		s := settings{Name: "default", Count: 3}
		if err := decodeConfig("demo", []byte(raw), &s); err != nil || s.Name != "default" || s.Count != 3 {
			t.Errorf("%q: %+v, %v", raw, s, err)
		}
	}
}

func FuzzDecodeConfig(f *testing.F) {
	f.Add([]byte(`{"count": 7, "tags": ["a"], "nested": {"port": 1}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var s settings
		if err := decodeConfig("demo", raw, &s); err != nil {
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is %T, want *config.Error", err, err)
			}
		}
	})
}

type checked struct {
	Workers int `yaml:"workers"`
}

func (c *checked) Validate() error {
	if c.Workers <= 0 {
		return errors.Join(sdk.BadSetting("workers", "must be positive, got %d", c.Workers), errors.New("the block is odd"))
	}
	return nil
}

// TestPluginChecksItsSettingsWithItsValidatorBeforeStart proves a process plugin runs the module's
// sdk.Validator on the settings the host sent, reporting each problem with its key as the host does.
func TestPluginChecksItsSettingsWithItsValidatorBeforeStart(t *testing.T) {
	c := &checked{Workers: 1}
	if err := decodeConfig("demo", []byte(`{"workers": 0}`), c); err == nil ||
		err.Error() != "config: modules.demo.workers: must be positive, got 0\nconfig: modules.demo: the block is odd" {
		t.Fatalf("got %v", err)
	}
	if err := decodeConfig("demo", []byte(`{"workers": 2}`), c); err != nil {
		t.Fatalf("valid settings refused: %v", err)
	}
}

// TestSettingProblemsKeyEachProblemInsideTheModulesBlock proves what the Validate RPC answers: each
// problem of the strict decode or of the module's Validator with its key inside the module's block
// (the host prefixes its file and "modules.<name>."), a problem with the block as a whole with none.
func TestSettingProblemsKeyEachProblemInsideTheModulesBlock(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		want      []string // key=problem
	}{
		{"valid", `{"workers": 2}`, nil},
		{"validator, two problems", `{"workers": 0}`, []string{"workers=must be positive, got 0", "=the block is odd"}},
		{"unknown key", `{"wokers": 2}`, []string{"wokers=unknown key (known keys: workers)"}},
		{"wrong type", `{"workers": "many"}`, []string{`workers=expected an integer, got string "many"`}},
		{"not JSON", `{`, []string{"=settings are not valid JSON: unexpected EOF"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, p := range settingProblems("demo", decodeConfig("demo", []byte(tc.raw), &checked{Workers: 1})) {
				got = append(got, p.GetKey()+"="+p.GetProblem())
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}
