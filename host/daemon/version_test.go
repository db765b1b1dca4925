package daemon

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

// --version and -v print the version command's first line (packaging checks run --version) without
// cobra's version template, which would link text/template's reflective method calls.
func TestVersionFlagPrintsTheVersionCommandsFirstLine(t *testing.T) {
	spec := Spec{Binary: "edgecore", NewConfig: func() Config { return &inlineConfig{} }}
	run := func(args ...string) string {
		t.Helper()
		cmd := Command(spec)
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(args)
		if err := cmd.Execute(); err != nil {
			t.Fatalf("edgecore %s: %v", strings.Join(args, " "), err)
		}
		return out.String()
	}
	want := "edgecore " + Version + " (" + runtime.Version() + ", " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
	first, _, _ := strings.Cut(run("version"), "\n")
	if first+"\n" != want {
		t.Fatalf("edgecore version's first line = %q, want %q", first, want)
	}
	for _, args := range [][]string{{"--version"}, {"-v"}} {
		if got := run(args...); got != want {
			t.Errorf("edgecore %s printed %q, want %q", args[0], got, want)
		}
	}
}
