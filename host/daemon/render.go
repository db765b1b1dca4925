package daemon

import (
	"fmt"

	"go.yaml.in/yaml/v3"

	"github.com/kedge-io/kedge/host/config"
	"github.com/kedge-io/kedge/sdk"
)

// renderConfig prints cfg with every module's block: enable, runtime and the module's own settings
// (or only enable, when minimal), each documented.
func renderConfig(cfg Config, infos []sdk.Info, minimal bool) ([]byte, error) {
	root, err := config.Node(cfg, minimal)
	if err != nil {
		return nil, err
	}
	mods := config.MappingNode()
	for _, info := range infos {
		block := config.MappingNode()
		enable, err := config.ValueNode(info.Enabled)
		if err != nil {
			return nil, err
		}
		config.AddKey(block, "enable", "", enable)
		if !minimal {
			rt, err := config.ValueNode("builtin")
			if err != nil {
				return nil, err
			}
			config.AddKey(block, "runtime", "builtin, process (with path and sha256) or wasm (with path and sha256).", rt)
			own, err := config.Node(info.New(), false)
			if err != nil {
				return nil, fmt.Errorf("render module %s: %w", info.Name, err)
			}
			config.AppendKeys(block, own)
		}
		config.AddKey(mods, info.Name, info.Doc, block)
	}
	setKey(root, "modules", mods)
	return config.Render(root)
}

// setKey replaces the value of key in mapping m (keeping its comment), or appends it.
func setKey(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	config.AddKey(m, key, "", v)
}
