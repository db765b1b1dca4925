package main

import (
	"strings"
	"testing"

	"github.com/kedge-io/kedge/sdk"
)

func TestPickServesTheModuleTheBuildNames(t *testing.T) {
	a, b := sdk.Info{Name: "alpha"}, sdk.Info{Name: "beta"}
	for _, tc := range []struct {
		name       string
		registered []sdk.Info
		want       string // the module picked, or a fragment of the error
	}{
		{"beta", []sdk.Info{a, b}, "beta"},
		{"", []sdk.Info{a}, "alpha"},
		{"", []sdk.Info{a, b}, "built with modules alpha, beta: set one"},
		{"gamma", []sdk.Info{a, b}, `module "gamma" is not in this build (it has: alpha, beta): build with -tags "kedge_custom kedge_gamma"`},
	} {
		info, err := pick(tc.name, tc.registered)
		got := info.Name
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, tc.want) {
			t.Errorf("pick(%q): %q, want %q", tc.name, got, tc.want)
		}
	}
}
