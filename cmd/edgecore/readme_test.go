package main

import (
	"flag"
	"slices"
	"testing"

	"github.com/kedge-io/kedge/host/daemon"
	"github.com/kedge-io/kedge/sdk"
)

var updateREADMEs = flag.Bool("update", false, "rewrite the modules' README config blocks")

// notGeneratedYet are modules whose README config block is still written by hand, to convert with
// -update: opcua's folder was being changed by other work when the blocks became generated.
var notGeneratedYet = []string{"opcua"}

// mapperFolders: a mapper module is an sdk/mapper value, so its folder is not its type's package.
var mapperFolders = map[string]string{"modbus": "plugins/mappers/modbus", "virtual": "plugins/mappers/virtual",
	"thermo-codec": "plugins/mappers/codecs/thermo", "opcua": "plugins/mappers/opcua"}

// TestModuleREADMEConfigBlocksAreWhatDefaultconfigPrints proves every edge module's README shows its
// config block exactly as `edgecore --defaultconfig` renders it, so a README cannot drift from the
// code (a new setting, a changed default or doc).
func TestModuleREADMEConfigBlocksAreWhatDefaultconfigPrints(t *testing.T) {
	infos := slices.DeleteFunc(sdk.Registered(), func(i sdk.Info) bool { return slices.Contains(notGeneratedYet, i.Name) })
	stale, err := daemon.ModuleREADMEs("../..", infos, mapperFolders, *updateREADMEs)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stale {
		t.Error(s)
	}
}
