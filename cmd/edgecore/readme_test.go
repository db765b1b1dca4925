package main

import (
	"flag"
	"testing"

	"github.com/kedge-io/kedge/host/daemon"
	"github.com/kedge-io/kedge/sdk"
)

var updateREADMEs = flag.Bool("update", false, "rewrite the modules' README config blocks")

// mapperFolders: a mapper module is an sdk/mapper value, so its folder is not its type's package.
var mapperFolders = map[string]string{"modbus": "plugins/mappers/modbus", "virtual": "plugins/mappers/virtual",
	"thermo-codec": "plugins/mappers/codecs/thermo", "opcua": "plugins/mappers/opcua"}

// TestModuleREADMEConfigBlocksAreWhatDefaultconfigPrints proves every edge module's README shows its
// config block exactly as `edgecore --defaultconfig` renders it, so a README cannot drift from the
// code (a new setting, a changed default or doc).
func TestModuleREADMEConfigBlocksAreWhatDefaultconfigPrints(t *testing.T) {
	stale, err := daemon.ModuleREADMEs("../..", sdk.Registered(), mapperFolders, *updateREADMEs)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stale {
		t.Error(s)
	}
}
