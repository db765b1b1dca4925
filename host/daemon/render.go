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
	mods := &yaml.Node{Kind: yaml.MappingNode}
	for _, info := range infos {
		block := &yaml.Node{Kind: yaml.MappingNode}
		addKey(block, "enable", "", scalar("!!bool", fmt.Sprint(info.Enabled)))
		if !minimal {
			addKey(block, "runtime", "builtin, process or wasm.", scalar("!!str", "builtin"))
			own, err := config.Node(info.New(), false)
			if err != nil {
				return nil, fmt.Errorf("render module %s: %w", info.Name, err)
			}
			block.Content = append(block.Content, own.Content...)
		}
		addKey(mods, info.Name, info.Doc, block)
	}
	setKey(root, "modules", mods)
	return config.Render(root)
}

func scalar(tag, v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: v} }

func addKey(m *yaml.Node, key, doc string, v *yaml.Node) {
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key, HeadComment: doc}, v)
}

// setKey replaces the value of key in mapping m (keeping its comment), or appends it.
func setKey(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	addKey(m, key, "", v)
}
