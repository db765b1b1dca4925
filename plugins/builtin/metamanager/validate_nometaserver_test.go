//go:build kedge_nometaserver

package metamanager_test

import (
	"testing"

	"github.com/kedge-io/kedge/host/sdktest"
	"github.com/kedge-io/kedge/plugins/builtin/metamanager"
)

// TestMetaServerInABuildWithoutItFailsValidation proves a build without the MetaServer (tag
// kedge_nometaserver, the minimal class) refuses metaServer.enable before anything starts, by key.
func TestMetaServerInABuildWithoutItFailsValidation(t *testing.T) {
	sdktest.ValidateSettings(t, metamanager.Name, []sdktest.SettingCase{
		sdktest.Case("metaServer in a build without it", map[string]any{"metaServer": map[string]any{"enable": true}},
			"metaServer.enable", "is true, but this build has no MetaServer"),
	})
}
