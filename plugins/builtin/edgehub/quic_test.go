package edgehub

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kedge-io/kedge/host/modules"
	"github.com/kedge-io/kedge/host/router"
	"github.com/kedge-io/kedge/host/store"
	"github.com/kedge-io/kedge/sdk"
)

// An edgecore built without the quic feature (tag kedge_noquic: the minimal and gateway classes)
// links no quic-go; a config that turns QUIC on must fail at start naming the setting and the build,
// not fall back to the websocket or fail at the first dial.
func TestQUICEnabledInABuildWithoutQUICFailsAtStartNamingTheSetting(t *testing.T) {
	saved := quicDial
	quicDial = nil // what quic_lane.go leaves under kedge_noquic
	t.Cleanup(func() { quicDial = saved })
	db, err := store.Open(filepath.Join(t.TempDir(), "edge.db"), store.Options{Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	mod := New()
	mod.QUIC = QUIC{Enable: true, Server: "127.0.0.1:10001"}
	info, _ := sdk.Lookup(Name)
	info.Requires = nil
	mgr := modules.NewManager(modules.Deps{NodeName: "edge-1", Router: router.New(nil), Store: db})
	err = mgr.Start(context.Background(), []modules.Planned{{Info: info, Settings: modules.Settings{Runtime: modules.Builtin}, Module: mod}})
	if err == nil {
		_ = mgr.Stop(context.Background())
		t.Fatal("edgehub started with quic.enable in a build without QUIC")
	}
	for _, want := range []string{"quic.enable", "kedge_noquic", "modules.edgehub.quic.enable=false"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("start error %q does not name %q", err, want)
		}
	}
}
