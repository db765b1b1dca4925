package pluginmanager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kedge-io/kedge/plugin-registry/index"
	"github.com/kedge-io/kedge/sdk"
)

// Installed is a plugin version installed for a module: what a swap needs and what it came from.
type Installed struct {
	Module     string    `json:"module"`
	Plugin     string    `json:"plugin"`
	Version    string    `json:"version"`
	Runtime    string    `json:"runtime"`
	Path       string    `json:"path"`
	SHA256     string    `json:"sha256"`
	Rollout    string    `json:"rollout"`
	Generation int64     `json:"generation"`
	RecordedAt time.Time `json:"recordedAt"`
}

// Result is what a rollout generation came to on this node.
type Result struct {
	Generation int64  `json:"generation"`
	Version    string `json:"version"`
	State      string `json:"state"`
	Message    string `json:"message,omitempty"`
}

// Store object types in the module's namespace.
const (
	typeLastGood = "lastgood" // name: the module
	typeResult   = "result"   // namespace/name: the rollout's
)

// lastGoodDir holds one <module>.json per module in pluginsDir.
const lastGoodDir = "lastgood"

// putJSON writes v under k, one resourceVersion past what is stored.
func putJSON(ctx context.Context, st sdk.Store, k sdk.Key, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var rv uint64 = 1
	if cur, err := st.Get(ctx, k); err == nil {
		rv = cur.ResourceVersion + 1
	} else if !errors.Is(err, sdk.ErrNotFound) {
		return err
	}
	_, err = st.Put(ctx, sdk.Object{Key: k, ResourceVersion: rv, Value: data})
	return err
}

func getJSON(ctx context.Context, st sdk.Store, k sdk.Key, v any) (bool, error) {
	obj, err := st.Get(ctx, k)
	if errors.Is(err, sdk.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(obj.Value, v); err != nil {
		return false, fmt.Errorf("stored %s: %w", k, err)
	}
	return true, nil
}

// saveLastGood records inst as its module's last good version: a file in pluginsDir (read at start
// even if the store is lost) and the store.
func (m *Module) saveLastGood(ctx context.Context, inst Installed) error {
	data, err := json.MarshalIndent(inst, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Join(m.PluginsDir, lastGoodDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := index.WriteFileAtomic(filepath.Join(dir, inst.Module+".json"), append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("record last good version of %s: %w", inst.Module, err)
	}
	if err := putJSON(ctx, m.host.Store(), sdk.Key{Type: typeLastGood, Name: inst.Module}, inst); err != nil {
		return fmt.Errorf("record last good version of %s in the store: %w", inst.Module, err)
	}
	return nil
}

// lastGood returns module's last good version: the newer of the file's and the store's record.
func (m *Module) lastGood(ctx context.Context, module string) (Installed, bool, error) {
	var fromFile, fromStore Installed
	okFile := false
	data, err := os.ReadFile(filepath.Join(m.PluginsDir, lastGoodDir, module+".json"))
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &fromFile); err != nil {
			m.host.Logger().Warn("last good record unreadable; using the store's", "module", module, "err", err)
		} else {
			okFile = true
		}
	case !errors.Is(err, os.ErrNotExist):
		return Installed{}, false, err
	}
	okStore, err := getJSON(ctx, m.host.Store(), sdk.Key{Type: typeLastGood, Name: module}, &fromStore)
	if err != nil {
		return Installed{}, false, err
	}
	switch {
	case okFile && okStore && fromStore.RecordedAt.After(fromFile.RecordedAt):
		return fromStore, true, nil
	case okFile:
		return fromFile, true, nil
	case okStore:
		return fromStore, true, nil
	}
	return Installed{}, false, nil
}

// lastGoodModules lists the modules with a last good record (file or store).
func (m *Module) lastGoodModules(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	add := func(name string) {
		if name != "" && !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	entries, err := os.ReadDir(filepath.Join(m.PluginsDir, lastGoodDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range entries {
		if n := e.Name(); filepath.Ext(n) == ".json" && !e.IsDir() {
			add(n[:len(n)-len(".json")])
		}
	}
	objs, err := m.host.Store().List(ctx, sdk.Query{Type: typeLastGood})
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		add(o.Name)
	}
	return out, nil
}
