package plugin

import (
	"strings"
	"testing"

	"github.com/kedge-io/kedge/sdk"
)

type mod struct{ sdk.Module }

func TestCheckInfoRefusesWhatServeCannotRun(t *testing.T) {
	for _, tc := range []struct {
		name string
		info sdk.Info
		want string
	}{
		{"no name", sdk.Info{New: func() sdk.Module { return &mod{} }}, "no Name"},
		{"no New", sdk.Info{Name: "x"}, `module "x" has no New function`},
		{"not a pointer", sdk.Info{Name: "x", New: func() sdk.Module { return mod{} }}, "must return a pointer to a struct"},
		{"fine", sdk.Info{Name: "x", New: func() sdk.Module { return &mod{} }}, ""},
	} {
		err := checkInfo(tc.info)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestUsageTellsHowToConfigureThePlugin(t *testing.T) {
	var b strings.Builder
	usage(&b, sdk.Info{Name: "modbus", Group: "devices", Doc: "Reads Modbus registers."})
	out := b.String()
	for _, want := range []string{"modbus: a Kedge module", "Reads Modbus registers.", "runtime: process", "path: /", "sha256: "} {
		if !strings.Contains(out, want) {
			t.Errorf("usage lacks %q:\n%s", want, out)
		}
	}
}
