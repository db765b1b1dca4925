package inventory

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestCutKeepsShortTextAndCutsLongTextOnARuneBoundary(t *testing.T) {
	for _, tt := range []struct {
		name, in string
	}{
		{"short", "ok"},
		{"ascii", strings.Repeat("x", 1000)},
		{"multibyte", strings.Repeat("ü", 500)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := Cut(tt.in)
			if len(got) > MaxText || !utf8.ValidString(got) || (len(tt.in) <= MaxText && got != tt.in) {
				t.Fatalf("Cut = %d bytes, valid %v", len(got), utf8.ValidString(got))
			}
		})
	}
}

func TestCleanMakesAnyReleaseAValidVersion(t *testing.T) {
	for _, in := range []string{"v1.2.3", "1.0 (beta)", "evil\"<script>", strings.Repeat("9", 300), "ü"} {
		r := Report{V: V, Node: "n", At: nowForTest, Modules: []Module{{Name: "m", Runtime: "builtin", Release: Clean(in)}}}
		if err := r.Check(); err != nil {
			t.Errorf("Clean(%q) = %q: %v", in, Clean(in), err)
		}
	}
}

var nowForTest = func() (t0 time.Time) { return time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC) }()
