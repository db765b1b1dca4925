package slow

import (
	"strings"
	"testing"
)

func TestParseAcceptsFactorsFromOneAndNamesTheVariableOnBadInput(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		err  bool
	}{
		{"", 1, false}, {"1", 1, false}, {"3", 3, false}, {"2.5", 2.5, false},
		{"0.5", 0, true}, {"0", 0, true}, {"-2", 0, true}, {"three", 0, true}, {"1e9", 0, true},
	} {
		got, err := parse(tc.in)
		if tc.err {
			if err == nil || !strings.Contains(err.Error(), Env) {
				t.Errorf("parse(%q) = %v, %v; want an error naming %s", tc.in, got, err, Env)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parse(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}
