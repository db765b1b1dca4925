// Package config re-exports sdk/config, the strict settings decoder and --defaultconfig renderer:
// plugin processes decode module settings with it too, and the module contract (sdk/) depends on
// nothing in host/. Host code may keep importing this package.
package config

import (
	"go.yaml.in/yaml/v3"

	"github.com/kedge-io/kedge/sdk/config"
)

type (
	Error     = config.Error
	Overrides = config.Overrides
)

func AddKey(m *yaml.Node, key, doc string, value *yaml.Node) { config.AddKey(m, key, doc, value) }
func AppendKeys(dst, src *yaml.Node)                         { config.AppendKeys(dst, src) }
func Decode(source string, tree map[string]any, at string, ov *Overrides, dst any) error {
	return config.Decode(source, tree, at, ov, dst)
}
func LoadFile(path string) (map[string]any, error) { return config.LoadFile(path) }
func MappingNode() *yaml.Node                      { return config.MappingNode() }
func Node(v any, minimal bool) (*yaml.Node, error) { return config.Node(v, minimal) }
func Render(n *yaml.Node) ([]byte, error)          { return config.Render(n) }
func ValueNode(v any) (*yaml.Node, error)          { return config.ValueNode(v) }
func EnvOverrides(prefix string, environ []string) Overrides {
	return config.EnvOverrides(prefix, environ)
}
func ParseSet(values []string) (Overrides, error) { return config.ParseSet(values) }
