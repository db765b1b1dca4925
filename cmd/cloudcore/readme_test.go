package main

import (
	"flag"
	"testing"

	"github.com/kedge-io/kedge/host/daemon"
	"github.com/kedge-io/kedge/sdk"
)

var updateREADMEs = flag.Bool("update", false, "rewrite the modules' README config blocks")

// TestModuleREADMEConfigBlocksAreWhatDefaultconfigPrints proves every cloud module's README shows its
// config block exactly as `cloudcore --defaultconfig` renders it, so a README cannot drift from the
// code (a new setting, a changed default or doc).
func TestModuleREADMEConfigBlocksAreWhatDefaultconfigPrints(t *testing.T) {
	stale, err := daemon.ModuleREADMEs("../..", sdk.Registered(), nil, *updateREADMEs)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stale {
		t.Error(s)
	}
}
